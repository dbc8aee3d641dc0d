"""Ingest one complete file: read it once, hash it, probe it, name it, catalogue it.

Every outcome is data: a bad file becomes a ``rejected`` row with a reason and is retried only
when it changes; a file that vanished before it could be read is simply forgotten. Nothing
here writes to the imager's folder: files are opened read-only and never moved or deleted.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xtalwatch.config import Settings
from xtalwatch.observe.metrics import Metrics
from xtalwatch.preprocess.probe import Rejection, probe_bytes
from xtalwatch.stages.adapters import AdapterChain, relative_path
from xtalwatch.store.catalogue import Catalogue

__all__ = ["Ingestor", "IngestResult", "changed_ns", "read_candidate", "stat_candidate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    """``outcome``: new, version, duplicate, unchanged, rejected or vanished."""

    path: str
    outcome: str
    image_id: int | None = None
    reason: str | None = None
    detail: str | None = None


def changed_ns(st: os.stat_result) -> int:
    """When the file last changed in content or metadata: a chmod that makes it readable counts too."""
    return max(st.st_mtime_ns, st.st_ctime_ns)


def stat_candidate(path: Path, max_bytes: int) -> os.stat_result:
    """stat a file, turning OS errors into Rejections with reasons a person understands."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Rejection("symlink_loop", "the path is a symbolic link that loops back on itself") from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise Rejection("broken_symlink", f"the symbolic link points to {os.readlink(path)!r}, which does not exist") from None
        raise
    if not stat.S_ISREG(st.st_mode):
        raise Rejection("not_a_file", "not a regular file")
    if st.st_size > max_bytes:
        raise Rejection("too_large", f"{st.st_size:,} bytes, over the limit of {max_bytes:,} (ingest.max_file_bytes)")
    return st


def read_candidate(path: Path, st: os.stat_result) -> bytes:
    """Read a whole file, read-only; a permission error becomes a Rejection that says whose file it is."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except PermissionError:
        raise Rejection("unreadable", f"no permission to read it (mode {stat.filemode(st.st_mode)}, "
                                      f"owner uid {st.st_uid}); the service runs as uid {os.getuid()}") from None


class Ingestor:
    """Catalogues complete files; safe to call from several threads (the catalogue serialises writes)."""

    def __init__(self, settings: Settings, catalogue: Catalogue, chain: AdapterChain, metrics: Metrics,
                 root: Path | None = None):
        self.settings = settings
        self.catalogue = catalogue
        self.chain = chain
        self.metrics = metrics
        self.root = root if root is not None else settings.watch.dir
        self.on_new_image: list[Callable[[int, str, str, float | None], None]] = []

    def _reject(self, path: str, exc: Rejection, st: os.stat_result | None) -> IngestResult:
        size = st.st_size if st is not None else None
        mtime = changed_ns(st) if st is not None else None
        if self.catalogue.record_rejection(path, exc.reason, exc.detail, size, mtime):
            self.metrics.images_rejected.labels(reason=exc.reason).inc()
            log.warning("rejected %s: %s: %s", path, exc.reason, exc.detail)
        return IngestResult(path, "rejected", reason=exc.reason, detail=exc.detail)

    def ingest(self, path: Path, completed_at: float | None = None) -> IngestResult:
        """Catalogue one file that is complete; never raises for a bad file."""
        key = os.path.abspath(path)
        extension = path.suffix.lower().lstrip(".")
        st: os.stat_result | None = None
        try:
            st = stat_candidate(path, self.settings.ingest.max_file_bytes)
            if self.catalogue.is_settled(key, st.st_size, changed_ns(st)):
                return IngestResult(key, "unchanged")
            if extension not in self.settings.watch.extensions:
                raise Rejection("unsupported_extension",
                                f"extension {path.suffix or '(none)'!r} is not one of watch.extensions "
                                f"({', '.join(self.settings.watch.extensions)})")
            data = read_candidate(path, st)
            sha256 = hashlib.sha256(data).hexdigest()
            probe = probe_bytes(data, extension, self.settings.ingest.max_pixels)
        except Rejection as exc:
            return self._reject(key, exc, st)
        except FileNotFoundError:
            log.debug("vanished before it could be read: %s", key)
            return IngestResult(key, "vanished")
        except OSError as exc:
            return self._reject(key, Rejection("unreadable", f"{exc.strerror or exc} (errno {exc.errno})"), st)

        self.metrics.images_seen.inc()
        identity = self.chain.identify(relative_path(Path(key), self.root.resolve() if self.root else None))
        stored = self.catalogue.record_image(key, st.st_size, changed_ns(st), sha256, probe, identity, completed_at)
        if stored.outcome in ("new", "version"):
            self.metrics.images_ingested.inc()
            self.metrics.last_image_timestamp.set(time.time())
            log.info("catalogued %s as image %d (%s, plate %s well %s drop %s inspection %s)", key, stored.image_id,
                     stored.outcome, identity.plate, identity.well, identity.drop, identity.inspection)
            for callback in self.on_new_image:
                callback(stored.image_id, key, sha256, completed_at)
        elif stored.outcome == "duplicate":
            self.metrics.images_duplicate.inc()
            log.info("%s has the same content as image %d; recorded as another path of it", key, stored.image_id)
        return IngestResult(key, stored.outcome, image_id=stored.image_id)
