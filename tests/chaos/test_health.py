"""/healthz means something: 200 only while the pipeline works, else 503 with the reasons.

A real service on a thread, a real folder and real HTTP; each fault is one a bad day brings (a
main loop that hangs, the watched folder taken away), and each must show in /healthz, then clear.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos_helpers import wait_until
from conftest import RunningService, make_settings
from xtalwatch import service as service_module
from xtalwatch.stages.watch import FolderWatcher


def healthz(running: RunningService) -> tuple[int, dict[str, Any]]:
    assert running.service.web is not None
    response = httpx.get(f"{running.service.web.url}/healthz", timeout=10)
    return response.status_code, response.json()


def reason_starting(running: RunningService, prefix: str) -> Callable[[], bool]:
    def check() -> bool:
        status, body = healthz(running)
        return status == 503 and any(r.startswith(prefix) for r in body["reasons"])
    return check


def test_a_stuck_main_loop_turns_healthz_503_and_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      start_service: Callable[..., RunningService]) -> None:
    watch = tmp_path / "imager"
    watch.mkdir()
    monkeypatch.setattr(service_module, "LOOP_STUCK_SECONDS", 1.0)
    release, stuck = threading.Event(), threading.Event()
    original = FolderWatcher.supervise

    def hang_once_armed(self: FolderWatcher) -> bool:  # the loop calls this every tick
        if stuck.is_set():
            release.wait(60)
        return original(self)

    monkeypatch.setattr(FolderWatcher, "supervise", hang_once_armed)
    running = start_service(make_settings(watch, tmp_path / "state"))
    try:
        wait_until(lambda: healthz(running) == (200, {"ok": True}), 30, "healthy at first")
        stuck.set()
        body = wait_until(lambda: reason_starting(running, "loop:")() and healthz(running)[1], 30,
                          "a 503 naming the stuck loop")
        assert all(not r.startswith("disk:") for r in body["reasons"])
    finally:
        stuck.clear()
        release.set()
    wait_until(lambda: healthz(running)[0] == 200, 30, "healthy again once the loop ticks")


def test_the_watched_folder_taken_away_turns_healthz_503_and_back(
        tmp_path: Path, start_service: Callable[..., RunningService]) -> None:
    watch = tmp_path / "imager"
    watch.mkdir()
    running = start_service(make_settings(watch, tmp_path / "state", **{"watch.observer_restart_seconds": 0.5}))
    wait_until(lambda: healthz(running)[0] == 200, 30, "healthy at first")
    shutil.rmtree(watch)
    wait_until(reason_starting(running, "observer:"), 30, "a 503 naming the observer")
    watch.mkdir()
    wait_until(lambda: healthz(running)[0] == 200, 60, "healthy again once the observer watches the new folder")


def test_health_problems_before_ready(tmp_path: Path) -> None:
    watch = tmp_path / "imager"
    watch.mkdir()
    service = service_module.Service(make_settings(watch, tmp_path / "state"))
    assert service.health_problems() == ["starting: the start-up scan is not finished"]
