"""Online backups of the catalogue, their schedule in the running service, and restoring one.

A backup is made with SQLite's backup API from a read-only connection of its own, so the service
keeps writing while it runs (WAL: a reader never blocks the writer) and the copy is one consistent
moment. Each is written to a temporary name, integrity-checked, fsynced and only then renamed into
place, so ``<state>/backups/`` only ever holds whole, checked copies.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

from xtalwatch.config import CatalogueConfig
from xtalwatch.files import atomic_path, fsync_dir
from xtalwatch.store.catalogue import CATALOGUE_FILE, catalogue_problems
from xtalwatch.store.errors import BackupUnsound
from xtalwatch.store.lock import hold_state_lock

__all__ = ["BACKUP_DIR", "BackupUnsound", "BackupSchedule", "backup_catalogue", "backup_path", "list_backups", "restore_catalogue"]

log = logging.getLogger(__name__)

BACKUP_DIR = "backups"
_PREFIX, _SUFFIX = "catalogue-", ".sqlite3"


def _stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def backup_path(state_dir: Path, now: float) -> Path:
    """Where the backup made at ``now`` (Unix time) goes: ``<state>/backups/catalogue-<UTC time>.sqlite3``."""
    return state_dir / BACKUP_DIR / f"{_PREFIX}{_stamp(now)}{_SUFFIX}"


def backup_catalogue(state_dir: Path, out: Path) -> Path:
    """Copy the catalogue of ``state_dir`` to ``out`` while it may be in use; returns ``out``.

    Raises ``FileNotFoundError`` without a catalogue, ``CatalogueDamaged`` when the source is not sound,
    and ``BackupUnsound`` when the copy fails its integrity check (``out`` is then left as it was).
    """
    from xtalwatch.store.catalogue import Catalogue

    source = Catalogue.open_readonly(state_dir)
    try:
        with atomic_path(out, durable=True) as tmp:
            copy = sqlite3.connect(tmp, isolation_level=None)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            finally:
                copy.close()
            problems = catalogue_problems(tmp)
            if problems:
                raise BackupUnsound(f"backup of {state_dir / CATALOGUE_FILE} failed its check: {problems[0]}")
    finally:
        source.close()
    return out


def list_backups(state_dir: Path) -> list[Path]:
    """The scheduled backups in ``<state>/backups/``, oldest first."""
    folder = state_dir / BACKUP_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(_PREFIX) and p.name.endswith(_SUFFIX))


class BackupSchedule:
    """Every ``cfg.backup_interval_hours``, a backup into ``<state>/backups/``, keeping the last ``cfg.backup_keep``.

    At start the last backup is the newest one's mtime, so a restart neither backs up at once again
    nor forgets; a clock set back counts as due (once). Call :meth:`maybe_run` from the service's
    periodic checks; it never raises.
    """

    def __init__(self, state_dir: Path, cfg: CatalogueConfig):
        self.state_dir, self.cfg = state_dir, cfg
        backups = list_backups(state_dir)
        self.last: float | None = backups[-1].stat().st_mtime if backups else None

    def due(self, now: float) -> bool:
        """True when a backup should be made at ``now`` (Unix time)."""
        if self.cfg.backup_interval_hours <= 0:
            return False
        return self.last is None or not 0 <= now - self.last < self.cfg.backup_interval_hours * 3600

    def run(self, now: float) -> Path:
        """Make one backup now and drop the oldest beyond ``backup_keep``; returns the new file."""
        out = backup_catalogue(self.state_dir, backup_path(self.state_dir, now))
        self.last = now
        for old in list_backups(self.state_dir)[:-self.cfg.backup_keep]:
            old.unlink(missing_ok=True)
        log.info("catalogue backup: %s", out)
        return out

    def maybe_run(self, now: float | None = None) -> Path | None:
        """Back up when due; a failure is logged on one line and retried at the next check."""
        now = time.time() if now is None else now
        try:
            return self.run(now) if self.due(now) else None
        except (OSError, sqlite3.Error, ValueError) as exc:
            log.error("catalogue backup failed: %s", exc)
            return None


def restore_catalogue(state_dir: Path, backup: Path) -> Path | None:
    """Put ``backup`` in place of the catalogue of ``state_dir``; returns where the old one was kept (None: none was).

    Refuses (``StateBusy``) while a service holds the state folder, and (``BackupUnsound``) a backup that
    is not a sound catalogue. The old catalogue and its WAL are renamed ``…damaged-<time>``, never deleted.
    """
    problems = catalogue_problems(backup)
    if problems:
        raise BackupUnsound(f"{backup} is not a sound backup: {problems[0].removeprefix(f'{backup}: ')}")
    lock = hold_state_lock(state_dir, "xtalwatch catalogue restore")
    try:
        target = state_dir / CATALOGUE_FILE
        aside = target.with_name(f"{CATALOGUE_FILE}.damaged-{_stamp(time.time())}")
        with atomic_path(target, durable=True) as tmp:
            shutil.copyfile(backup, tmp)
            # The old WAL must go first: left beside the restored file, SQLite would replay it there.
            for suffix in ("-wal", "-shm"):
                sibling = target.with_name(target.name + suffix)
                if sibling.exists():
                    os.replace(sibling, aside.with_name(aside.name + suffix))
            if target.exists():
                os.link(target, aside)
        fsync_dir(state_dir)
        return aside if aside.exists() else None
    finally:
        lock.release()
