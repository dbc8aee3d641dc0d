"""Shared fixtures: real folders, real SQLite, a real service on a thread, real JPEG bytes."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from xtalwatch.config import Settings, load_settings
from xtalwatch.observe.metrics import Metrics
from xtalwatch.service import Service


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A real JPEG of random content: different seeds give different bytes."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def require_tool(name: str) -> str:
    """The tool's path; skip when missing on a developer machine, fail in CI where it must exist."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} not found in CI: .ci/install-system-deps.sh installs it")
        pytest.skip(f"{name} not installed (Debian package; run .ci/install-system-deps.sh)")
    return path


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy; fail the test with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s: {predicate}")


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    watch, state = tmp_path / "imager", tmp_path / "state"
    watch.mkdir()
    return watch, state


def make_settings(watch: Path, state: Path, **overrides: Any) -> Settings:
    base = {"watch.dir": watch, "state.dir": state, "watch.settle_seconds": 0.4, "metrics.port": 0,
            "watch.poll_interval_seconds": 0.2, "logging.level": "DEBUG"}
    base.update(overrides)
    return load_settings(None, base)


class RunningService:
    """A real Service running its loop on a thread, as `xtalwatch run` would."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.service = Service(settings, self.metrics)
        self.thread = threading.Thread(target=self.service.run, name="service-under-test", daemon=True)

    def __enter__(self) -> RunningService:
        self.thread.start()
        wait_for(self.service.ready.is_set, timeout=30)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self.service.request_stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "service did not stop"

    def count(self, table: str, where: str = "1") -> int:
        assert self.service.catalogue is not None
        return self.service.catalogue.query(f"SELECT COUNT(*) FROM {table} WHERE {where}")[0][0]

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


@pytest.fixture
def start_service() -> Iterator[Callable[..., RunningService]]:
    started: list[RunningService] = []

    def start(settings: Settings) -> RunningService:
        running = RunningService(settings).__enter__()
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under root with size, mtime and content: proof the imager folder was left alone."""
    snap = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            snap[str(path)] = (0, 0, b"")
            continue
        try:
            st = path.stat()
            snap[str(path)] = (st.st_size, st.st_mtime_ns, path.read_bytes())
        except PermissionError:
            snap[str(path)] = (st.st_size, st.st_mtime_ns, b"<unreadable>")
    return snap


@pytest.fixture
def real_images() -> Path:
    """The shared real photographs, from XTALWATCH_REAL_IMAGES; skip with the reason when unset."""
    import os

    value = os.environ.get("XTALWATCH_REAL_IMAGES")
    if not value:
        pytest.skip("XTALWATCH_REAL_IMAGES is not set: no real imager photographs to test against")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"XTALWATCH_REAL_IMAGES={value} is not a folder (no ../shared/real-images on this machine)")
    return path


# -- PostgreSQL: one throwaway server per session, a fresh database per test ----------------------
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server (tests/postgres_server.py); skips without one, fails if CI requires it."""
    from postgres_server import missing_reason, start_server

    reason = missing_reason()
    if reason is not None:
        if os.environ.get("XTALWATCH_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"XTALWATCH_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any) -> Iterator[str]:
    """``postgresql://xtalwatch@127.0.0.1:<port>/<db>`` of a fresh empty database, dropped afterwards."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
