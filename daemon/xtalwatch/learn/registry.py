"""The model registry: every trained model as a versioned folder, and which one serves.

Layout under ``<state.dir>/models/``::

    20261128-020000-ab12cd/     one model: the bundle's files (encoder.pt, head.pt, bundle.json)
        meta.json               version, created_at, data fingerprint, config, metrics, status, reason
    current -> 20261128-020000-ab12cd    the serving model (a relative symlink)
    history.json                promotions in order, newest last: what ``rollback`` walks back through

A model folder appears whole or not at all (written under ``.incoming-<version>`` and renamed),
and ``current`` is switched atomically (a new symlink made under a temporary name, then
``os.replace``d over the old one), so a reader never sees half a model or no ``current`` while
switching. Mutations take an ``flock`` on ``models/.lock``, so the service's training child and
a person running ``xtalwatch models promote`` cannot interleave. Each change is mirrored into
the catalogue's ``models`` table when a catalogue is given.

Status: ``candidate`` (just trained), ``promoted`` (serving now), ``rejected`` (failed the gate,
kept with its reason), ``retired`` (served once, replaced or rolled back).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from xtalwatch.files import fsync_dir, write_json_atomic
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.models import ModelRow, forget_model_path, upsert_models

__all__ = ["ModelRegistry", "ModelRecord", "RegistryError", "Saveable", "Status", "MODELS_DIR", "current_path", "new_version", "serving_key",
           "link_shared_registry"]

MODELS_DIR = "models"
CURRENT = "current"
META = "meta.json"
HISTORY = "history.json"
Status = Literal["candidate", "promoted", "rejected", "retired"]
STATUSES: tuple[str, ...] = ("candidate", "promoted", "rejected", "retired")


def link_shared_registry(state_dir: Path, models_dir: Path) -> None:
    """On a site: make ``<state_dir>/models`` a symlink to the shared registry ``models_dir``.

    Every host then reads ``current`` from the same folder, so a model one host promotes is
    hot-swapped by all. Raises ``RegistryError`` when this host already has a registry of its own
    with models in it: moving them is a person's decision.
    """
    link, target = Path(state_dir) / MODELS_DIR, Path(models_dir)
    target.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        if os.path.realpath(link) == os.path.realpath(target):
            return
        link.unlink()
    elif link.is_dir():
        if any(p.name != ".lock" for p in link.iterdir()):
            raise RegistryError(f"{link} holds this host's own models, but site.models_dir is {target}: move them "
                                f"there (or unset site.models_dir) and start again")
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve(), target_is_directory=True)


def current_path(state_dir: Path) -> Path:
    """The serving model's folder (a symlink to its version), whether or not one exists yet."""
    return Path(state_dir) / MODELS_DIR / CURRENT


def serving_key(state_dir: Path) -> tuple[str, float] | None:
    """What identifies the serving model's files: its folder and when its ``bundle.json`` was written.

    Readers that keep a loaded model (the classify stage, the review queue) reload it when this
    changes. Not the folder's own mtime: the registry rewrites ``meta.json`` in it (status, metrics),
    which is no reason to load the same model again. None before the first model.
    """
    try:
        target = os.path.realpath(current_path(state_dir))
        return (target, os.stat(os.path.join(target, "bundle.json")).st_mtime)
    except OSError:
        return None


class RegistryError(ValueError):
    """A registry request that cannot be done (unknown version, nothing to roll back to), worded for a person."""


class Saveable(Protocol):
    """What the registry stores: a model bundle that writes its files into a folder."""

    def save(self, folder: Path) -> None: ...


def new_version(now: float | None = None) -> str:
    """A sortable, unique version name: local time of creation plus 6 random hex digits."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass
class ModelRecord:
    """One model's ``meta.json``, plus where its folder is."""

    version: str
    created_at: float  # Unix time
    status: str
    path: Path
    reason: str = ""
    data_fingerprint: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    promoted_at: float | None = None

    def to_meta(self) -> dict[str, Any]:
        return {"version": self.version, "created_at": self.created_at, "status": self.status, "reason": self.reason,
                "data_fingerprint": self.data_fingerprint, "config": self.config, "metrics": self.metrics,
                "promoted_at": self.promoted_at}

    @classmethod
    def from_meta(cls, folder: Path, meta: dict[str, Any]) -> ModelRecord:
        return cls(version=meta["version"], created_at=float(meta["created_at"]), status=meta["status"], path=folder,
                   reason=meta.get("reason", ""), data_fingerprint=meta.get("data_fingerprint", ""),
                   config=meta.get("config", {}), metrics=meta.get("metrics", {}), promoted_at=meta.get("promoted_at"))


class ModelRegistry:
    """The ``models/`` folder of a state directory."""

    def __init__(self, state_dir: Path, catalogue: Catalogue | None = None):
        self.root = Path(state_dir) / MODELS_DIR
        self.root.mkdir(parents=True, exist_ok=True)
        self.catalogue = catalogue

    # -- reading --------------------------------------------------------------------------
    def get(self, version: str) -> ModelRecord:
        folder = self.root / version
        if version in (CURRENT, "") or "/" in version or version.startswith(".") or not (folder / META).is_file():
            known = ", ".join(r.version for r in self.list()[-5:]) or "none"
            raise RegistryError(f"no model {version!r} in {self.root} (newest: {known})")
        return ModelRecord.from_meta(folder, json.loads((folder / META).read_text(encoding="utf-8")))

    def list(self) -> list[ModelRecord]:
        """Every model in the registry, oldest first."""
        records = []
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or folder.name == CURRENT or not (folder / META).is_file():
                continue
            try:
                records.append(ModelRecord.from_meta(folder, json.loads((folder / META).read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError):
                continue  # a damaged meta.json hides that model, it does not break the listing
        return sorted(records, key=lambda r: (r.created_at, r.version))

    def current_version(self) -> str | None:
        try:
            return os.readlink(self.root / CURRENT)
        except OSError:
            return None

    def current(self) -> ModelRecord | None:
        """The serving model, or None before the first promotion."""
        version = self.current_version()
        return self.get(version) if version is not None else None

    def history(self) -> list[str]:
        """Versions in the order they were promoted, newest last."""
        path = self.root / HISTORY
        return list(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else []

    # -- writing --------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, bundle: Saveable, *, version: str, created_at: float | None = None, data_fingerprint: str = "",
            config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
            status: Status = "candidate", reason: str = "") -> ModelRecord:
        """Store a new model folder (whole or not at all) with status ``candidate`` (or ``rejected``)."""
        if status not in ("candidate", "rejected"):
            raise ValueError(f"a new model is a candidate or rejected, not {status!r}; promote it afterwards")
        final = self.root / version
        if final.exists():
            raise RegistryError(f"model {version} already exists in {self.root}")
        record = ModelRecord(version, time.time() if created_at is None else created_at, status, final, reason,
                             data_fingerprint, config or {}, metrics or {})
        staging = self.root / f".incoming-{version}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            bundle.save(staging)
            write_json_atomic(staging / META, record.to_meta(), durable=True)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self.root)
        self._mirror(record)
        return record

    def _update(self, record: ModelRecord) -> None:
        write_json_atomic(record.path / META, record.to_meta(), durable=True)
        self._mirror(record)

    def set_status(self, version: str, status: Status, reason: str) -> ModelRecord:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        with self._locked():
            record = self.get(version)
            record.status, record.reason = status, reason
            self._update(record)
            return record

    def update_metrics(self, version: str, metrics: dict[str, Any]) -> ModelRecord:
        """Merge ``metrics`` into a model's recorded metrics (figures known only after it was stored)."""
        with self._locked():
            record = self.get(version)
            record.metrics = {**record.metrics, **metrics}
            self._update(record)
            return record

    def reject(self, version: str, reason: str) -> ModelRecord:
        """Keep the model, marked rejected with the reason."""
        return self.set_status(version, "rejected", reason)

    def _switch(self, version: str) -> None:
        tmp = self.root / f".{CURRENT}.{os.getpid()}.{secrets.token_hex(3)}"
        os.symlink(version, tmp)  # relative: the state folder can move
        os.replace(tmp, self.root / CURRENT)
        fsync_dir(self.root)

    def promote(self, version: str, reason: str = "promoted") -> ModelRecord:
        """Make ``version`` the serving model: switch ``current`` atomically and retire the old one."""
        with self._locked():
            record = self.get(version)
            old = self.current_version()
            now = time.time()
            self._switch(version)
            history = [v for v in self.history() if v != version] + [version]
            write_json_atomic(self.root / HISTORY, history, durable=True)
            record.status, record.reason, record.promoted_at = "promoted", reason, now
            self._update(record)
            if old is not None and old != version and (self.root / old / META).is_file():
                previous = self.get(old)
                previous.status, previous.reason = "retired", f"replaced by {version}"
                self._update(previous)
            return record

    def rollback(self) -> ModelRecord:
        """Serve the previously promoted model again; the current one is retired. Repeats walk further back."""
        with self._locked():
            current = self.current_version()
            if current is None:
                raise RegistryError("no model is serving, so there is nothing to roll back from")
            history = [v for v in self.history() if v != current]
            while history and not (self.root / history[-1] / META).is_file():
                history.pop()  # pruned long ago
            if not history:
                raise RegistryError(f"{current} is the only model ever promoted; nothing to roll back to")
            target = self.get(history[-1])
            self._switch(target.version)
            write_json_atomic(self.root / HISTORY, history, durable=True)
            target.status, target.reason, target.promoted_at = "promoted", f"rolled back from {current}", time.time()
            self._update(target)
            if (self.root / current / META).is_file():
                old = self.get(current)
                old.status, old.reason = "retired", f"rolled back to {target.version}"
                self._update(old)
            return target

    def prune(self, keep: int) -> list[str]:
        """Delete the oldest model folders beyond ``keep``, never the serving one or the one a rollback would pick."""
        with self._locked():
            records = self.list()
            protected = {self.current_version()}
            history = [v for v in self.history() if v != self.current_version()]
            if history:
                protected.add(history[-1])
            removable = [r for r in records if r.version not in protected]
            excess = len(records) - keep
            deleted = []
            for record in removable[:max(0, excess)]:
                shutil.rmtree(record.path, ignore_errors=True)
                deleted.append(record.version)
                if self.catalogue is not None:
                    forget_model_path(self.catalogue, record.version)
            return deleted

    # -- the catalogue mirror ---------------------------------------------------------------
    def _mirror(self, record: ModelRecord) -> None:
        if self.catalogue is not None:
            _mirror_rows(self.catalogue, [record])

    def sync_catalogue(self, catalogue: Catalogue | None = None) -> int:
        """Write every model's row into the catalogue's ``models`` table (idempotent); returns the count."""
        target = catalogue or self.catalogue
        if target is None:
            raise ValueError("no catalogue to mirror into")
        records = self.list()
        _mirror_rows(target, records)
        return len(records)


def _mirror_rows(catalogue: Catalogue, records: list[ModelRecord]) -> None:
    upsert_models(catalogue, [ModelRow(r.version, r.created_at, r.status, {**r.metrics, "reason": r.reason,
                                                                         "data_fingerprint": r.data_fingerprint},
                                       str(r.path)) for r in records])
