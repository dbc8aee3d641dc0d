"""The watcher: ignored names, reconciliation scans, observer restarts, and a real /metrics scrape."""

from __future__ import annotations

import logging
import os
import urllib.request
from pathlib import Path

import pytest
from conftest import jpeg_bytes, make_settings, wait_for
from xtalwatch.config import WatchConfig
from xtalwatch.stages.watch import FolderWatcher, SettleTracker, is_ignored


def test_ignore_globs() -> None:
    from xtalwatch.config import WatchConfig

    globs = WatchConfig().ignore_globs
    for name in [".hidden.jpg", "a.jpg~", "a.jpg.tmp", "a.jpg.part", "~$a.jpg", "Thumbs.db"]:
        assert is_ignored(name, globs), name
    assert not is_ignored("90j8_01A_1.jpg", globs)


def test_temporary_and_hidden_files_are_never_taken(folders: tuple[Path, Path], start_service) -> None:
    watch, state = folders
    running = start_service(make_settings(watch, state))
    (watch / ".incoming.jpg").write_bytes(jpeg_bytes(seed=1))
    (watch / "x_01A_1.jpg.part").write_bytes(jpeg_bytes(seed=2))
    (watch / ".cache").mkdir()
    (watch / ".cache" / "thumb_01A_1.jpg").write_bytes(jpeg_bytes(seed=3))
    (watch / "x_02A_1.jpg").write_bytes(jpeg_bytes(seed=4))
    wait_for(lambda: running.count("images") == 1)
    running.service.rescan()
    wait_for(lambda: len(running.service.tracker) == 0)
    assert running.count("images") == 1 and running.count("rejected") == 0


def test_reconciliation_scan_catches_what_the_observer_missed(folders: tuple[Path, Path], start_service) -> None:
    """A polling observer that effectively never polls stands in for a lost inotify event."""
    watch, state = folders
    running = start_service(make_settings(watch, state, **{
        "watch.mode": "poll", "watch.poll_interval_seconds": 3600, "watch.rescan_interval_seconds": 1}))
    (watch / "late_01A_1.jpg").write_bytes(jpeg_bytes(seed=5))
    wait_for(lambda: running.count("images") == 1, timeout=15)
    assert running.metric("xtalwatch_rescans_total") >= 2


def test_observer_restarts_when_the_folder_is_replaced(folders: tuple[Path, Path], start_service) -> None:
    """A share unmounted and remounted: the old watch is dead; a new observer takes over."""
    watch, state = folders
    running = start_service(make_settings(watch, state, **{"watch.observer_restart_seconds": 0.2}))
    (watch / "one_01A_1.jpg").write_bytes(jpeg_bytes(seed=6))
    wait_for(lambda: running.count("images") == 1)
    os.rename(watch, watch.with_name("imager-old"))
    wait_for(lambda: not running.service.watcher.healthy())
    watch.mkdir()
    (watch / "two_02A_1.jpg").write_bytes(jpeg_bytes(seed=7))
    wait_for(lambda: running.count("images") == 2, timeout=20)
    assert running.service.watcher.healthy()
    assert running.thread.is_alive()
    assert running.metric("xtalwatch_observer_restarts_total") == 1  # one outage, one restart


def test_one_outage_is_one_restart_and_two_log_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Retries while the folder is gone are neither counted nor logged; the restart that works is, once."""
    watch = tmp_path / "imager"
    watch.mkdir()
    restarts: list[str] = []
    watcher = FolderWatcher(WatchConfig(dir=watch, observer_restart_seconds=1e-6), SettleTracker(1.0), restarts.append)
    watcher.start()
    try:
        os.rename(watch, tmp_path / "imager-old")
        with caplog.at_level(logging.DEBUG, logger="xtalwatch.stages.watch"):
            retries = [watcher.supervise() for _ in range(9)]
            assert retries == [False] * 9 and restarts == []
            watch.mkdir()
            wait_for(watcher.supervise)
        assert restarts == ["the folder disappeared"] and watcher.healthy()
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(lines) == 2, lines
        assert "cannot watch" in lines[0] and "retrying" in lines[0] and "restarted" in lines[1]
    finally:
        watcher.stop()


def test_metrics_are_scraped_over_http(folders: tuple[Path, Path], start_service) -> None:
    watch, state = folders
    running = start_service(make_settings(watch, state))
    (watch / "m_01A_1.jpg").write_bytes(jpeg_bytes(seed=8))
    (watch / "m_bad.jpg").write_bytes(b"")
    wait_for(lambda: running.count("images") == 1 and running.count("rejected") == 1)
    port = running.service.web.port
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'xtalwatch_images_ingested_total{imager="imager"} 1.0' in body
    assert 'xtalwatch_images_rejected_total{imager="imager",reason="empty_file"} 1.0' in body
    assert "xtalwatch_state_disk_free_bytes" in body


def test_settle_tracker_waits_for_stability(tmp_path: Path) -> None:
    now = [1000.0]
    tracker = SettleTracker(2.0, clock=lambda: now[0])
    path = tmp_path / "f.jpg"
    path.write_bytes(b"abc")
    os.utime(path, (now[0], now[0]))
    tracker.note(str(path))
    assert tracker.due() == []
    now[0] += 1.0
    with open(path, "ab") as handle:
        handle.write(b"more")
    os.utime(path, (now[0], now[0]))
    assert tracker.due() == []  # changed: the clock restarts
    now[0] += 1.9
    assert tracker.due() == []
    now[0] += 0.2
    assert tracker.due() == [str(path)]
    assert len(tracker) == 0
