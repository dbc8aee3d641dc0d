"""Watch the imager's folder and hand over each file once it is complete.

Three things feed the settle tracker: the observer's events (inotify natively, or a polling
observer for network shares where inotify sees nothing), a full scan at start-up, and a
periodic reconciliation scan that catches whatever an inotify overflow or downtime lost.
A file is complete when the platform reports close-after-write and nothing changed for a
short quiet time, or else when its size and mtime stayed the same for ``settle_seconds``.

The folder is only ever read: no marker files, no moves, no deletes.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from xtalwatch.config import WatchConfig
from xtalwatch.store.paths import shown

__all__ = ["SettleTracker", "FolderWatcher", "scan_folder", "is_ignored", "inside"]

log = logging.getLogger(__name__)

# watchdog 7's inotify thread warns, with a page-long repr, whenever a burst of new folders is
# re-registered; it is harmless and would flood the journal.
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)

# After close-after-write, wait this long for further writes before taking the file: some
# instruments close and reopen a file while writing it.
CLOSE_QUIET_SECONDS = 0.25


def is_ignored(name: str, globs: list[str]) -> bool:
    """True for temporary and hidden names (matched on the name, not the path)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in globs)


def inside(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or under it (both already resolved by ``os.path.realpath``)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan_folder(root: Path, globs: list[str]) -> Iterator[Path]:
    """Every non-ignored file under ``root``; folder symlinks are never followed (no loops, nothing
    outside): one that resolves inside is skipped (its files are scanned where they are), one that
    resolves outside is yielded itself, so that ingest records it as ``outside_watch_dir``."""
    real_root = os.path.realpath(root)
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            log.warning("cannot list %s: %s", shown(str(folder)), exc.strerror or exc)
            continue
        for entry in entries:
            if is_ignored(entry.name, globs):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                if entry.is_symlink() and entry.is_dir() and inside(os.path.realpath(entry.path), real_root):
                    continue
            except OSError:
                pass
            yield Path(entry.path)


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    stable_since: float
    closed_at: float | None = None


class SettleTracker:
    """Files seen but not yet complete; ``due()`` returns those that just became complete."""

    def __init__(self, settle_seconds: float, clock: Callable[[], float] = time.time):
        self.settle_seconds = settle_seconds
        self.clock = clock
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def note(self, path: str, closed: bool = False) -> None:
        """Something happened to ``path``: (re)start its settle clock."""
        now = self.clock()
        with self._lock:
            item = self._pending.get(path)
            if item is None:
                item = self._pending[path] = _Pending(-1, -1, now)
            # A write after a close means the file is being written again: wait for the next close.
            item.closed_at = now if closed else None

    def due(self) -> list[str]:
        """Paths whose size and mtime are stable (or that were closed after writing and then left alone)."""
        now = self.clock()
        ready: list[str] = []
        with self._lock:
            items = list(self._pending.items())
        for path, item in items:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if not os.path.islink(path):  # gone: nothing to take; a dangling link is for ingest to report
                    with self._lock:
                        self._pending.pop(path, None)
                    continue
                st = None
            except OSError:  # a symlink loop, say: ingest records why
                st = None
            if st is None:
                ready.append(path)
                continue
            if (st.st_size, st.st_mtime_ns) != (item.size, item.mtime_ns):
                first_look = item.mtime_ns == -1
                item.size, item.mtime_ns = st.st_size, st.st_mtime_ns
                # A file found by a scan and last modified long ago needs no further wait.
                old_enough = first_look and now - st.st_mtime >= self.settle_seconds
                item.stable_since = now - self.settle_seconds if old_enough else now
                if not old_enough:
                    continue
            quiet = now - item.stable_since
            closed_quietly = item.closed_at is not None and now - item.closed_at >= CLOSE_QUIET_SECONDS
            if quiet >= self.settle_seconds or (closed_quietly and quiet >= CLOSE_QUIET_SECONDS):
                ready.append(path)
        with self._lock:
            for path in ready:
                self._pending.pop(path, None)
        return ready


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, tracker: SettleTracker, globs: list[str], on_dir_moved: Callable[[str], None]):
        self.root = str(root)
        self.tracker = tracker
        self.globs = globs
        self.on_dir_moved = on_dir_moved

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileClosedNoWriteEvent | FileOpenedEvent) or event.event_type == "deleted":
            return
        if isinstance(event, DirMovedEvent):
            self.on_dir_moved(os.fsdecode(event.dest_path))
            return
        if event.is_directory:
            return
        path = os.fsdecode(event.dest_path if isinstance(event, FileSystemMovedEvent) else event.src_path)
        # Hidden or temporary folders are ignored with everything in them, as in a scan.
        parts = Path(os.path.relpath(path, self.root)).parts
        if any(is_ignored(part, self.globs) for part in parts):
            return
        self.tracker.note(path, closed=isinstance(event, FileClosedEvent))


def make_observer(mode: str, poll_interval: float) -> BaseObserver:
    """watchdog's native observer, or a polling one for network shares where inotify sees nothing."""
    if mode == "poll":
        return PollingObserver(timeout=poll_interval)
    return Observer()


class FolderWatcher:
    """Owns the observer: starts it, notices when it dies or the folder is remounted, restarts it."""

    def __init__(self, config: WatchConfig, tracker: SettleTracker, on_restart: Callable[[str], None]):
        if config.dir is None:
            raise ValueError("watch.dir is not set")
        self.config = config
        self.root = config.dir
        self.tracker = tracker
        self.on_restart = on_restart
        self._observer: BaseObserver | None = None
        self._identity: tuple[int, int] | None = None
        self._next_try = 0.0
        self._outage: str | None = None  # why the observer is down, from the first failed look until it is back

    def _folder_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.root)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _rescan_dir(self, folder: str) -> None:
        for path in scan_folder(Path(folder), self.config.ignore_globs):
            self.tracker.note(str(path))

    def start(self) -> None:
        observer = make_observer(self.config.mode, self.config.poll_interval_seconds)
        observer.schedule(_Handler(self.root, self.tracker, self.config.ignore_globs, self._rescan_dir), str(self.root),
                          recursive=True)
        observer.start()
        self._observer = observer
        self._identity = self._folder_identity()
        log.info("watching %s (%s observer)", self.root, self.config.mode)

    def healthy(self) -> bool:
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        if any(not emitter.is_alive() for emitter in list(observer.emitters)):
            return False
        if not list(observer.emitters):
            return False
        return self._folder_identity() == self._identity

    def supervise(self) -> bool:
        """Restart a dead observer; returns True when it did (the caller should rescan).

        One outage is one restart: it is logged once when it begins and once when the observer is
        back, and ``on_restart`` is called once, for the restart that worked, however many retries
        (every ``observer_restart_seconds``) it took."""
        if self.healthy():
            return False
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + self.config.observer_restart_seconds
        if self._outage is None:
            self._outage = "the observer stopped" if self._identity == self._folder_identity() else (
                "the folder disappeared" if self._folder_identity() is None else "the folder was replaced or remounted")
            log.error("cannot watch %s: %s; retrying every %.0f s", shown(str(self.root)), self._outage,
                      self.config.observer_restart_seconds)
        self.stop()
        if self._folder_identity() is None:
            return False
        try:
            self.start()
        except OSError as exc:
            log.debug("observer on %s not restarted yet: %s", shown(str(self.root)), exc)
            self.stop()
            return False
        reason, self._outage = self._outage, None
        log.warning("observer on %s restarted after: %s", shown(str(self.root)), reason)
        self.on_restart(reason)
        return True

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            try:
                observer.stop()
                observer.join(timeout=5)
            except Exception as exc:  # an observer on a vanished share can fail to stop cleanly
                log.debug("observer stop: %s", exc)
