"""Under systemd: READY=1 after the start-up scan, WATCHDOG=1 pings, STOPPING=1 on the way out."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import RunningService, jpeg_bytes, make_settings, wait_for
from xtalwatch import service as service_module
from xtalwatch.stages.watch import FolderWatcher


def test_service_notifies_systemd(tmp_path: Path) -> None:
    watch, state = tmp_path / "imager", tmp_path / "state"
    watch.mkdir()
    for i in range(3):
        path = watch / f"p_0{i + 1}A_1.jpg"
        path.write_bytes(jpeg_bytes(seed=i))
        os.utime(path, (time.time() - 60, time.time() - 60))  # written a minute ago: complete
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    log = open(tmp_path / "service.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "xtalwatch", "run", "--watch", str(watch), "--state", str(state),
                             "--metrics-port", "0"], env=env, stderr=log)
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert any("READY=1" in m for m in messages), messages
        # The three files found by the start-up scan are catalogued before READY.
        out = subprocess.run([sys.executable, "-m", "xtalwatch", "status", "--json", "--state", str(state)],
                             capture_output=True, text=True)
        assert '"images_total": 3' in out.stdout
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in messages) < 2:
            messages.append(sock.recv(4096).decode())
        assert sum("WATCHDOG=1" in m for m in messages) >= 2
        proc.send_signal(signal.SIGTERM)
        while time.monotonic() < deadline and not any("STOPPING=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert any("STOPPING=1" in m for m in messages)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        log.close()


def test_watchdog_pings_stop_while_the_main_loop_is_stuck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          start_service: Callable[..., RunningService]) -> None:
    """Only the loop pings: a hung loop goes silent (systemd restarts it) and /healthz names it."""
    watch = tmp_path / "imager"
    watch.mkdir()
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(service_module, "LOOP_STUCK_SECONDS", 1.0)
    stuck, release, hung = threading.Event(), threading.Event(), threading.Event()
    original = FolderWatcher.supervise

    def hang_once_armed(self: FolderWatcher) -> bool:
        if stuck.is_set():
            hung.set()
            release.wait(60)
        return original(self)

    monkeypatch.setattr(FolderWatcher, "supervise", hang_once_armed)
    try:
        running = start_service(make_settings(watch, tmp_path / "state"))
        sock.settimeout(30)
        assert "WATCHDOG=1" in sock.recv(4096).decode()
        stuck.set()
        assert hung.wait(30)
        sock.setblocking(False)
        while True:  # what was sent before the loop hung
            try:
                sock.recv(4096)
            except BlockingIOError:
                break
        # Wait until /healthz says the loop is stuck: more than 1 s, ten ping periods.
        assert running.service.web is not None
        url = f"{running.service.web.url}/healthz"
        wait_for(lambda: httpx.get(url, timeout=10).status_code == 503, timeout=30)
        assert any(r.startswith("loop:") for r in httpx.get(url, timeout=10).json()["reasons"])
        with pytest.raises(BlockingIOError):
            sock.recv(4096)  # not one ping while the loop was stuck
        release.set()
        sock.settimeout(30)
        assert "WATCHDOG=1" in sock.recv(4096).decode()  # the loop ticks again, and pings again
    finally:
        stuck.clear()
        release.set()
        sock.close()
