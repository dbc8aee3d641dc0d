"""A second SIGTERM forces the exit as uvicorn does: the stops still run and the catalogue is closed whole.

The shutdown is held open by an alert sink stuck in a POST (a webhook that does not answer), the
way a dead alert endpoint would hold it on a bad day; the first SIGTERM starts the shutdown, the
second must end it without ``os._exit``: exit status 1, the last stops logged, an intact catalogue.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from alert_helpers import webhook_server
from chaos_helpers import ServiceProcess, wait_until
from conftest import jpeg_bytes, make_settings
from xtalwatch.service import Service


def test_second_sigterm_forces_a_clean_exit(tmp_path: Path) -> None:
    watch, state = tmp_path / "imager", tmp_path / "state"
    watch.mkdir()
    for i in range(3):
        path = watch / f"p_0{i + 1}A_1.jpg"
        path.write_bytes(jpeg_bytes(seed=i))
        os.utime(path, (time.time() - 60, time.time() - 60))
    with webhook_server(hold=True) as hook:
        config = tmp_path / "xtalwatch.yaml"
        config.write_text(f"alerts:\n  sinks:\n    - type: webhook\n      url: {hook.url}\n"
                          "      timeout_seconds: 60\n  disk_low_fraction: 1.0\n"  # always 'low': one alert at once
                          "service:\n  shutdown_timeout_seconds: 60\n")
        service = ServiceProcess(watch, state, tmp_path / "service.log")
        try:
            service.start("--config", str(config))
            service.wait_ready()
            assert hook.arrived.wait(60), "the disk_low alert never reached the webhook"
            assert service.proc is not None
            service.proc.send_signal(signal.SIGTERM)
            # The shutdown now waits on the webhook that never answers (up to 10 s of alert drain).
            wait_until(lambda: "stopping (send again to force)" in service.output(), 30, "the first SIGTERM")
            service.proc.send_signal(signal.SIGTERM)
            status = service.proc.wait(60)
            out = service.output()
            assert status == 1, out[-3000:]
            assert "forcing the exit" in out
            assert "stopped" in out.splitlines()[-1], out[-3000:]  # every stop ran, the catalogue was closed
            service.assert_healthy_end(3)
        finally:
            service.cleanup()


def test_signal_handlers_are_restored_when_the_loop_ends(tmp_path: Path) -> None:
    """As uvicorn: the service's handlers live as long as its loop, then the caller's come back."""
    watch = tmp_path / "imager"
    watch.mkdir()
    service = Service(make_settings(watch, tmp_path / "state"))
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    seen: list[object] = []

    def stop_when_ready() -> None:
        if service.ready.wait(60):
            seen.append(signal.getsignal(signal.SIGTERM))
        service.request_stop()

    stopper = threading.Thread(target=stop_when_ready)
    stopper.start()
    assert service.run() == 0  # on the main thread, as `xtalwatch run` calls it
    stopper.join(10)
    assert seen and seen[0] != before[0]  # the service's own handler while it ran
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
