"""Under systemd: READY=1 after the start-up scan, WATCHDOG=1 pings, STOPPING=1 on the way out."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import jpeg_bytes


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
