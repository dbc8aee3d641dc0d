"""Ingest one complete file: read it once, hash it, probe it, name it, catalogue it.

Every outcome is data: a bad file becomes a ``rejected`` row with a reason and is retried only
when it changes; a file that vanished before it could be read is simply forgotten. Nothing
here writes to the imager's folder: files are opened read-only and never moved or deleted.

:class:`Ingestor` takes one file; :class:`IngestQueue` holds the completed files waiting for it
and the worker threads that take them, and a new image goes straight on to the next stage
(anything with ``submit(image_id, path, sha256, completed_at)``: the preprocess pool).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from xtalwatch.config import Settings
from xtalwatch.observe.metrics import Metrics
from xtalwatch.preprocess.probe import Rejection, probe_bytes
from xtalwatch.stages.adapters import AdapterChain, relative_path
from xtalwatch.stages.watch import inside
from xtalwatch.store.catalogue import Catalogue, last_catalogued_at
from xtalwatch.store.maintenance import is_disk_full
from xtalwatch.store.paths import shown

__all__ = ["Ingestor", "IngestQueue", "IngestResult", "NewImages", "changed_ns", "read_candidate", "stat_candidate"]

log = logging.getLogger(__name__)

# Ingest is I/O and hashing (hashlib and file reads release the GIL): a few threads keep a burst
# moving without competing with the preprocessing processes for the cores.
MAX_INGEST_THREADS = 4


class NewImages(Protocol):
    """The stage after ingest: takes each newly catalogued image (the preprocess pool)."""

    def submit(self, image_id: int, path: str, sha256: str, completed_at: float | None = None) -> None: ...


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
            raise Rejection("broken_symlink", f"the symbolic link points to {shown(os.readlink(path))}, which does not exist") from None
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
                 root: Path | None = None, downstream: NewImages | None = None):
        """``root``: the folder adapters see paths relative to (default ``watch.dir``); ``downstream``
        takes every new image (None: catalogue only)."""
        self.settings = settings
        self.catalogue = catalogue
        self.chain = chain
        self.metrics = metrics
        self.root = root if root is not None else settings.watch.dir
        self.downstream = downstream

    def restore_gauges(self) -> None:
        """Start the last-image gauge from the catalogue, so a restart does not read as 'never' to the alerts."""
        last = last_catalogued_at(self.catalogue)
        if last is not None:
            self.metrics.last_image_timestamp.set(last)

    def _reject(self, path: str, exc: Rejection, st: os.stat_result | None) -> IngestResult:
        size = st.st_size if st is not None else None
        mtime = changed_ns(st) if st is not None else None
        if self.catalogue.record_rejection(path, exc.reason, exc.detail, size, mtime):
            self.metrics.images_rejected.labels(reason=exc.reason).inc()
            log.warning("rejected %s: %s: %s", shown(path), exc.reason, shown(exc.detail))
        return IngestResult(path, "rejected", reason=exc.reason, detail=exc.detail)

    def _outside(self, key: str) -> Rejection | None:
        """A rejection when ``key`` resolves (through any link, of the file or of a folder above it)
        outside the watched tree: such a file is never opened, whatever it is."""
        if self.root is None:
            return None
        root, target = os.path.realpath(self.root), os.path.realpath(key)
        if inside(target, root):
            return None
        return Rejection("outside_watch_dir", f"a symbolic link that resolves to {shown(target)}, outside the watched "
                                              f"folder {shown(root)}; it is not read")

    def ingest(self, path: Path, completed_at: float | None = None) -> IngestResult:
        """Catalogue one file that is complete; never raises for a bad file."""
        key = os.path.abspath(path)
        extension = path.suffix.lower().lstrip(".")
        st: os.stat_result | None = None
        outside = self._outside(key)
        if outside is not None:
            try:  # its metadata only, so that the rejection settles like any other
                st = os.stat(key)
            except OSError:
                st = None
            if st is not None and self.catalogue.is_settled(key, st.st_size, changed_ns(st)):
                return IngestResult(key, "unchanged")
            return self._reject(key, outside, st)
        try:
            st = stat_candidate(path, self.settings.ingest.max_file_bytes)
            if self.catalogue.is_settled(key, st.st_size, changed_ns(st)):
                return IngestResult(key, "unchanged")
            if extension not in self.settings.watch.extensions:
                raise Rejection("unsupported_extension",
                                f"extension '{shown(path.suffix) or '(none)'}' is not one of watch.extensions "
                                f"({', '.join(self.settings.watch.extensions)})")
            data = read_candidate(path, st)
            sha256 = hashlib.sha256(data).hexdigest()
            probe = probe_bytes(data, extension, self.settings.ingest.max_pixels)
        except Rejection as exc:
            return self._reject(key, exc, st)
        except FileNotFoundError:
            log.debug("vanished before it could be read: %s", shown(key))
            return IngestResult(key, "vanished")
        except OSError as exc:
            return self._reject(key, Rejection("unreadable", f"{exc.strerror or exc} (errno {exc.errno})"), st)

        self.metrics.images_seen.inc()
        identity = self.chain.identify(relative_path(Path(key), self.root.resolve() if self.root else None))
        stored = self.catalogue.record_image(key, st.st_size, changed_ns(st), sha256, probe, identity, completed_at)
        if stored.outcome in ("new", "version"):
            self.metrics.images_ingested.inc()
            self.metrics.last_image_timestamp.set(time.time())
            log.info("catalogued %s as image %d (%s, plate %s well %s drop %s inspection %s)", shown(key),
                     stored.image_id, stored.outcome, identity.plate, identity.well, identity.drop,
                     identity.inspection)
            if self.downstream is not None:
                self.downstream.submit(stored.image_id, key, sha256, completed_at)
        elif stored.outcome == "duplicate":
            self.metrics.images_duplicate.inc()
            log.info("%s has the same content as image %d; recorded as another path of it", shown(key),
                     stored.image_id)
        return IngestResult(key, stored.outcome, image_id=stored.image_id)


_STOP = object()


class IngestQueue:
    """Completed files waiting for ingest, and the worker threads that take them.

    A path already waiting or being ingested is not queued again (the observer and a rescan may
    both hand it over). ``submit`` blocks while ``ingest.queue_size`` files wait: back-pressure
    on the service loop, never a dropped file.

    A full state disk (``SQLITE_FULL`` or ``ENOSPC``) pauses the queue and calls ``on_disk_full``
    once: while paused, files handed over are let go untouched (they stay in the imager's folder,
    uncatalogued, and the rescan after ``resume()`` takes them), so nothing is lost or taken twice.
    """

    def __init__(self, ingestor: Ingestor, size: int, metrics: Metrics, workers: int | None = None,
                 on_disk_full: Callable[[str, BaseException], None] | None = None):
        """``size``: files that may wait (``ingest.queue_size``); ``workers``: threads (default: cores, at most 4);
        ``on_disk_full(path, error)``: called (on a worker thread) when the queue pauses for a full disk."""
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.ingestor = ingestor
        self.metrics = metrics
        self.workers = workers or max(1, min(MAX_INGEST_THREADS, os.cpu_count() or 1))
        self.on_disk_full = on_disk_full
        self._queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._paused = threading.Event()

    def __len__(self) -> int:
        """Files waiting (not counting those being ingested)."""
        return self._queue.qsize()

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"ingest-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, path: str) -> None:
        """Queue a complete file; the time now is when it was complete (for the result latency)."""
        if self._paused.is_set():
            return  # left in the folder: the rescan after resume() takes it
        with self._lock:
            if path in self._in_flight:
                return
            self._in_flight.add(path)
        self._queue.put((path, time.time()))
        self.metrics.queue_depth.labels(stage="ingest").set(len(self))

    def idle(self) -> bool:
        """True when no file is waiting or being ingested."""
        with self._lock:
            return not self._in_flight

    @property
    def paused(self) -> bool:
        """True while a full disk holds ingest back."""
        return self._paused.is_set()

    def pause(self) -> None:
        """Let files go untouched until ``resume()`` (the state disk is full)."""
        self._paused.set()

    def resume(self) -> None:
        """Take files again; the caller rescans the folder for those let go while paused."""
        self._paused.clear()

    def alive(self) -> tuple[int, int]:
        """(worker threads alive, worker threads started)."""
        return sum(1 for t in self._threads if t.is_alive()), len(self._threads)

    def stop(self, deadline: float, abandon: threading.Event | None = None) -> int:
        """Let the workers finish what is queued until ``deadline`` (``time.monotonic()``), or until
        ``abandon`` is set (a second signal); returns how many are still busy then. Files left
        behind are not lost: the next start-up scan takes them."""
        stopping = list(self._threads)

        def left() -> float:
            return 0.0 if abandon is not None and abandon.is_set() else max(0.0, deadline - time.monotonic())

        def put_stop() -> bool:
            while True:
                try:
                    self._queue.put(_STOP, timeout=min(left(), 0.1))
                    return True
                except queue.Full:
                    if not left():
                        return False

        for _ in stopping:
            if not put_stop():
                break
        for thread in stopping:
            while thread.is_alive() and left():
                thread.join(timeout=min(left(), 0.1))
        busy = sum(1 for t in stopping if t.is_alive())
        if busy:
            log.warning("shutdown timeout: %d ingest workers still busy; their files are taken at the next start", busy)
        self._threads = [t for t in stopping if t.is_alive()]
        return busy

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            path, completed_at = item  # type: ignore[misc]
            self.metrics.queue_depth.labels(stage="ingest").set(len(self))
            try:
                if not self._paused.is_set():
                    self.ingestor.ingest(Path(path), completed_at=completed_at)
            except Exception as exc:
                if is_disk_full(exc) and self.on_disk_full is not None:
                    first = not self._paused.is_set()
                    self._paused.set()  # its transaction rolled back: the file is uncatalogued, taken after resume
                    if first:
                        self.on_disk_full(path, exc)
                else:  # a programming error: log it loudly, keep the service up
                    log.exception("ingest of %s failed unexpectedly", shown(path))
            finally:
                with self._lock:
                    self._in_flight.discard(path)
