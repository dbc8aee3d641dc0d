"""A full state disk against the real `xtalwatch run`: pause with one warning, alert, 503, resume, nothing lost.

The state folder sits on its own small tmpfs, which the test fills to the last byte with a
filler file; where mounting is refused, every catalogue write fails with SQLITE_FULL instead
(injected into the real process), and the test prints which of the two it used.
Files that arrive then stay in the imager's folder; the disk_low alert still reaches the log
sink although the event cannot be stored; /healthz says 503 with a "disk" reason. Deleting the
filler brings the service back by itself: every file is catalogued exactly once, the catalogue
is intact, /healthz is 200 again, and the log holds one warning, not one per file, and no traceback.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chaos_helpers import ServiceProcess, wait_until
from conftest import jpeg_bytes

STATE_DISK = "24m"  # the catalogue, a few crops and the filler

# Where mounting is refused: every catalogue write raises SQLITE_FULL and the free-space probe
# says 0 bytes while FULL_MARKER exists, injected into the real service through sitecustomize.
_INJECT = """
import contextlib, os, sqlite3
from xtalwatch.store import catalogue, maintenance
from xtalwatch import service

_MARKER = {marker!r}
_transaction = catalogue.Catalogue.transaction

@contextlib.contextmanager
def transaction(self):
    if os.path.exists(_MARKER):
        raise sqlite3.OperationalError("database or disk is full")
    with _transaction(self) as conn:
        yield conn

def has_room(state_dir, needed_bytes=maintenance.ROOM_BYTES):
    return not os.path.exists(_MARKER) and _has_room(state_dir, needed_bytes)

_has_room = maintenance.has_room
catalogue.Catalogue.transaction = transaction
service.has_room = has_room
"""


class StateDisk:
    """The state folder on a disk the test can fill and free: a real tmpfs, or an injected ENOSPC."""

    def __init__(self, path: Path, kind: str, env: dict[str, str], marker: Path | None = None):
        self.path, self.kind, self.env, self._marker = path, kind, env, marker
        self._filler = path / "filler.bin"

    def fill(self) -> None:
        if self._marker is not None:
            self._marker.touch()
            return
        with open(self._filler, "wb", buffering=0) as out:  # write until the file system refuses a byte
            for chunk in (1 << 20, 1 << 12, 1):
                try:
                    while True:
                        out.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc

    def free(self) -> None:
        (self._marker or self._filler).unlink()


@pytest.fixture
def state_disk(tmp_path: Path) -> Iterator[StateDisk]:
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STATE_DISK}", "tmpfs", str(state)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        marker, inject = tmp_path / "disk-is-full", tmp_path / "inject"
        inject.mkdir()
        (inject / "sitecustomize.py").write_text(_INJECT.format(marker=str(marker)))
        pythonpath = os.pathsep.join(p for p in (str(inject), os.environ.get("PYTHONPATH", "")) if p)
        print(f"disk full: mounting a tmpfs was refused ({mounted.stderr.strip() or mounted.returncode}); "
              "using an injected SQLITE_FULL instead")
        yield StateDisk(state, "injected", {"PYTHONPATH": pythonpath}, marker)
        return
    print(f"disk full: using a real {STATE_DISK} tmpfs at {state}")
    try:
        yield StateDisk(state, "tmpfs", {})
    finally:
        subprocess.run(["umount", str(state)], check=False)
        if os.path.ismount(state):
            subprocess.run(["umount", "-l", str(state)], check=False)


def healthz(service: ServiceProcess) -> tuple[int, dict]:
    response = httpx.get(f"http://127.0.0.1:{service.port}/healthz", timeout=10)
    return response.status_code, response.json()


def feed(watch: Path, first: int, n: int) -> None:
    for i in range(first, first + n):
        tmp = watch / f".PL{i}_01A_1.jpg.tmp"  # written aside, then renamed into place as imagers do
        tmp.write_bytes(jpeg_bytes(seed=100 + i))
        os.rename(tmp, watch / f"PL{i}_01A_1.jpg")


def test_full_state_disk_pauses_alerts_and_resumes_with_nothing_lost(tmp_path: Path, state_disk: StateDisk) -> None:
    watch = tmp_path / "imager"
    watch.mkdir()
    feed(watch, 0, 2)
    service = ServiceProcess(watch, state_disk.path, tmp_path / "service.log", **state_disk.env,
                             XTALWATCH_ALERTS__DISK_LOW_BYTES="0", XTALWATCH_ALERTS__DISK_LOW_FRACTION="0")
    try:
        service.start()
        service.wait_ready()
        wait_until(lambda: healthz(service)[0] == 200, 30, "healthy before the disk fills")
        wait_until(lambda: service.count("images", "status = 'catalogued'") == 0, 60, "the first two preprocessed")
        state_disk.fill()  # now every new write must grow a file (the WAL appends)

        feed(watch, 2, 6)
        wait_until(lambda: "state disk full" in service.output(), 60, "the one warning")
        status, body = wait_until(lambda: (lambda h: h[0] == 503 and h)(healthz(service)), 30, "a 503")
        assert any(r.startswith("disk:") for r in body["reasons"]), body
        wait_until(lambda: "kind=disk_low" in service.output(), 30, "the disk_low alert at the log sink")
        feed(watch, 8, 4)  # more arrive while paused: they wait in the folder

        state_disk.free()
        wait_until(lambda: "ingest resumed" in service.output(), 60, "the service to resume by itself")
        wait_until(lambda: service.count("images") == 12, 60, "every file catalogued after the resume")
        wait_until(lambda: service.count("images", "status = 'catalogued'") == 0, 60, "every image preprocessed")
        wait_until(lambda: healthz(service) == (200, {"ok": True}), 30, "healthy again")
        assert service.count("events", "kind = 'disk_low'") == 1  # stored once there was room
        assert service.stop() == 0
        out = service.output()
        assert out.count("state disk full") == 1, out[-4000:]
        service.assert_healthy_end(12)
    finally:
        service.cleanup()  # reaps the process group before the fixture unmounts the tmpfs
