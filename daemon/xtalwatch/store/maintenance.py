"""Keeping the catalogue's disk healthy: recognising a full disk, and checkpointing the WAL.

A full state disk shows up in two shapes: SQLite's ``SQLITE_FULL`` ("database or disk is full")
and the operating system's ``ENOSPC`` (or ``EDQUOT``, a quota) from a file write. Both mean the
same to the service: pause, alert, and resume when space returns. ``wal_checkpoint(TRUNCATE)``
copies the write-ahead log into the database and cuts the log file back to zero bytes, so a
small state disk gets its log's space back (https://www.sqlite.org/pragma.html#pragma_wal_checkpoint).
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from xtalwatch.store.catalogue import Db, dialect_of, fetch_rows

__all__ = ["ROOM_BYTES", "checkpoint", "has_room", "is_disk_full"]

ROOM_BYTES = 1 << 20  # free space under which the state disk counts as full: a few catalogue pages and a crop


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc``, or an exception it was raised from or during, says the disk is full.

    The chain matters: a failed ``ROLLBACK`` after ``SQLITE_FULL`` raises its own error, with the
    full disk as its context.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                                               or "database or disk is full" in str(exc)):
            return True
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def has_room(state_dir: Path, needed_bytes: int = ROOM_BYTES) -> bool:
    """True when the disk holding ``state_dir`` has at least ``needed_bytes`` free (False if unknowable)."""
    try:
        return shutil.disk_usage(state_dir).free >= needed_bytes
    except OSError:
        return False


def checkpoint(db: Db) -> tuple[int, int, int]:
    """``PRAGMA wal_checkpoint(TRUNCATE)``: (busy, log frames, frames checkpointed); busy=1 when a reader held it back.

    PostgreSQL manages its own log: nothing to do there, (0, 0, 0).
    """
    if dialect_of(db) != "sqlite":
        return 0, 0, 0
    row = fetch_rows(db, "PRAGMA wal_checkpoint(TRUNCATE)")[0]
    return int(row[0]), int(row[1]), int(row[2])
