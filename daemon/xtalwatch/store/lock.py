"""The service's hold on its state folder: an flock on ``<state>/.service.lock``, held while it runs.

The kernel drops the lock when the process ends, however it ends (kill -9 included), so a stale
lock file never blocks a restart. ``xtalwatch catalogue restore`` takes the same lock, so it never
swaps the catalogue under a running service, and a service cannot start in the middle of a restore.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from xtalwatch.store.errors import StateBusy

__all__ = ["LOCK_FILE", "StateBusy", "StateLock", "hold_state_lock"]

LOCK_FILE = ".service.lock"


class StateLock:
    """An exclusive flock on a state folder's lock file; ``release()`` or process exit lets it go."""

    def __init__(self, state_dir: Path, what: str):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(self._fd)
            self._fd = None
            raise StateBusy(f"{state_dir} is in use by {holder}: stop it first") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{what} (pid {os.getpid()})\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def hold_state_lock(state_dir: Path, what: str = "a running xtalwatch service") -> StateLock:
    """Take the state folder for this process; ``StateBusy`` when a service or a restore has it."""
    return StateLock(state_dir, what)
