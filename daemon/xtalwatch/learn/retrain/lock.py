"""One run at a time, whoever starts it, and each run's log in its own folder.

``<state>/training/.lock`` is an ``flock``: the scheduler's child, ``xtalwatch train --now`` and
the systemd timer all take it, and a run that finds it held is skipped, not queued. On a site
(``catalogue.url`` is PostgreSQL) a run also holds the site's training advisory lock on its own
connection, so one host of the site trains at a time; PostgreSQL drops the lock when the run's
process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xtalwatch.store.work import site_training_lock

__all__ = ["TRAINING_DIR", "Busy", "training_lock", "log_to"]

TRAINING_DIR = "training"  # under state.dir: the lock, and one folder per run named after its version


class Busy(Exception):
    """Another run holds the training lock; the message says whose."""


@contextmanager
def training_lock(state_dir: Path, site_url: str | None = None) -> Iterator[None]:
    """Hold ``<state>/training/.lock`` (and, with ``site_url``, the site's training lock) for the body.

    Raises :class:`Busy` at once when either is held.
    """
    folder = state_dir / TRAINING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy("another training run is in progress (training/.lock is held)") from None
        try:
            if site_url is None:
                yield
                return
            with site_training_lock(site_url) as got:
                if not got:
                    raise Busy("another host of the site is training (the site's training lock is held)")
                yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Also write the ``xtalwatch`` loggers' records (INFO and up) to ``path`` for the body."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("xtalwatch")
    old_level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
