"""The real `xtalwatch run` process under test, and the checks every chaos test ends with.

Each chaos test starts the service as a lab does (``python -m xtalwatch run``, its own process
group), does something a bad day would do to it, and then proves three things
(:meth:`ServiceProcess.assert_healthy_end`): every valid file is catalogued exactly once,
``PRAGMA integrity_check`` is ok, and no traceback was printed where a one-line error belongs.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``predicate`` until truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what or predicate}")


class ServiceProcess:
    """``xtalwatch run`` on a watch and a state folder, in its own process group."""

    def __init__(self, watch: Path, state: Path, log: Path, **env: str):
        self.watch, self.state, self.log = watch, state, log
        self.port = free_port()
        self.env = {**os.environ, "XTALWATCH_WATCH__SETTLE_SECONDS": "0.3",
                    "XTALWATCH_WATCH__POLL_INTERVAL_SECONDS": "0.2", "XTALWATCH_RETRAIN__ENABLED": "false",
                    "XTALWATCH_RETRAIN__AUTO_FIRST_TRAINING": "false", "XTALWATCH_LOGGING__LEVEL": "INFO",
                    "PYTHONUNBUFFERED": "1", **env}
        for name in ("NOTIFY_SOCKET", "XTALWATCH_CONFIG"):
            self.env.pop(name, None)
        self.proc: subprocess.Popen[bytes] | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, *extra: str) -> ServiceProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "xtalwatch", "run", "--watch", str(self.watch), "--state", str(self.state),
                 "--metrics-port", str(self.port), *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
                start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until(lambda: "ready: start-up scan done" in self.output() or not self.alive(), timeout,
                   "the service to say it is ready")
        assert self.alive(), f"the service exited at start:\n{self.output()[-3000:]}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """kill -9 of the main process only, as the OOM killer or a power cut would leave it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as systemd stops it; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def cleanup(self) -> None:
        """Whatever happened, leave no process of this group behind."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    # -- the catalogue, read-only --------------------------------------------------------------
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        db = self.state / "catalogue.sqlite3"
        if not db.exists():
            return []
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, tuple(params)).fetchall()
        finally:
            conn.close()

    def count(self, table: str, where: str = "1") -> int:
        rows = self.query(f"SELECT COUNT(*) FROM {table} WHERE {where}")
        return int(rows[0][0]) if rows else 0

    # -- the end of every chaos test ------------------------------------------------------------
    def assert_healthy_end(self, valid_files: int, *, allow_tracebacks: int = 0) -> None:
        """Exactly once, an intact catalogue, and one-line errors only."""
        shas = self.query("SELECT sha256, COUNT(*) FROM images GROUP BY sha256 HAVING COUNT(*) > 1")
        assert shas == [], f"images catalogued twice: {shas}"
        assert self.count("images") == valid_files, (self.count("images"), valid_files)
        assert self.query("PRAGMA integrity_check") == [("ok",)]
        tracebacks = self.output().count("Traceback (most recent call last)")
        assert tracebacks <= allow_tracebacks, f"{tracebacks} tracebacks in the log:\n{self.output()[-4000:]}"
