"""A damaged catalogue is refused on one line and left as it is; a backup brings everything back.

A real catalogue with images and labels is made by the real service and ``xtalwatch labels
import``, backed up with ``xtalwatch catalogue backup``, then damaged four ways: emptied (0 bytes),
cut in half, random bytes over the header, random bytes over a middle page. Every command that
opens the catalogue must refuse with exactly one line on stderr and a non-zero status, without
touching the file; ``catalogue check`` must name the problem; ``catalogue restore`` must bring back
every image and label, after which the service starts and catalogues new files exactly once.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from chaos_helpers import REPO, ServiceProcess, free_port, wait_until
from conftest import jpeg_bytes

N_IMAGES = 4
LOG_LINE = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) "


def xtalwatch(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XTALWATCH_CONFIG", "NOTIFY_SOCKET")}
    env.update(XTALWATCH_RETRAIN__ENABLED="false", XTALWATCH_WATCH__SETTLE_SECONDS="0.3")
    return subprocess.Popen([sys.executable, "-m", "xtalwatch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env, cwd=REPO)


def finished(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, bytes]:
    """(watch, a state folder's catalogue bytes, a backup from ``catalogue backup``) of a real service's work."""
    root = tmp_path_factory.mktemp("made")
    watch, state = root / "watch", root / "state"
    watch.mkdir()
    for i in range(N_IMAGES):
        (watch / f"P1_A{i + 1}_1.jpg").write_bytes(jpeg_bytes(seed=i))
    service = ServiceProcess(watch, state, root / "service.log")
    try:
        service.start().wait_ready()
        wait_until(lambda: service.count("images") == N_IMAGES, 120, "the images to be catalogued")
        assert service.stop() == 0
    finally:
        service.cleanup()
    (root / "labels.csv").write_text("1,clear,ann\n2,crystals,ann\n3,precipitate,ann\n")
    assert finished(xtalwatch("labels", "import", str(root / "labels.csv"), "--state", str(state)))[0] == 0
    backup = root / "backup.sqlite3"
    code, out, err = finished(xtalwatch("catalogue", "backup", "--out", str(backup), "--state", str(state)))
    assert code == 0, err
    return watch, state, backup, (state / "catalogue.sqlite3").read_bytes()


def _zero(data: bytes, rng: random.Random) -> bytes:
    return b""


def _half(data: bytes, rng: random.Random) -> bytes:
    return data[: len(data) // 2]


def _header(data: bytes, rng: random.Random) -> bytes:
    return rng.randbytes(100) + data[100:]


def _middle_page(data: bytes, rng: random.Random) -> bytes:
    page = int.from_bytes(data[16:18], "big")
    middle = (len(data) // page) // 2 * page
    return data[:middle] + rng.randbytes(page) + data[middle + page:]


DAMAGE: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "zero-bytes": _zero, "truncated": _half, "garbled-header": _header, "garbled-middle-page": _middle_page}


def catalogue_rows(db: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return (conn.execute("SELECT id, sha256, path FROM images ORDER BY id").fetchall(),
                conn.execute("SELECT image_id, label, labeller FROM labels ORDER BY image_id").fetchall())
    finally:
        conn.close()


def damaged_state(tmp_path: Path, good: bytes, damage: str) -> Path:
    """A state folder whose catalogue is ``good`` damaged the ``damage`` way."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "catalogue.sqlite3").write_bytes(DAMAGE[damage](good, random.Random(damage)))
    return state


def test_the_made_catalogue_has_no_free_pages(made: tuple[Path, Path, Path, bytes]) -> None:
    """So that the page garbled in the middle is one in use."""
    conn = sqlite3.connect(f"file:{made[1] / 'catalogue.sqlite3'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    finally:
        conn.close()


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_catalogue_is_refused_on_one_line_and_left_untouched(
        damage: str, made: tuple[Path, Path, Path, bytes], tmp_path: Path) -> None:
    watch, _, _, good = made
    state = damaged_state(tmp_path, good, damage)
    db = state / "catalogue.sqlite3"
    damaged = db.read_bytes()
    (tmp_path / "labels.csv").write_text("1,clear,bob\n")
    st = ["--state", str(state)]
    commands = {
        "run": ["run", "--watch", str(watch), "--metrics-port", str(free_port()), *st],
        "status": ["status", *st],
        "labels import": ["labels", "import", str(tmp_path / "labels.csv"), *st],
        "ingest": ["ingest", "--no-preprocess", str(watch), *st],
        "catalogue backup": ["catalogue", "backup", "--out", str(tmp_path / "b.sqlite3"), *st],
    }
    if damage != "garbled-middle-page":  # the rest open it the same ways; once is enough for them
        commands = {name: args for name, args in commands.items() if name in ("run", "status")}
    procs = {name: xtalwatch(*args) for name, args in commands.items()}
    for name, proc in procs.items():
        code, out, err = finished(proc)
        assert code != 0, f"{name} accepted a {damage} catalogue:\n{out}{err}"
        assert "Traceback" not in err, f"{name}:\n{err}"
        lines = [line for line in err.splitlines()
                 if not (name == "run" and re.match(LOG_LINE, line))]  # run also logs "stopped"
        assert len(lines) == 1, f"{name} said {len(lines)} lines:\n{err}"
        assert lines[0].startswith(f"xtalwatch: {db} is not a sound catalogue ("), lines[0]
        assert "xtalwatch catalogue restore" in lines[0]
        assert db.read_bytes() == damaged, f"{name} changed the damaged file"
    assert not (tmp_path / "b.sqlite3").exists()

    code, out, err = finished(xtalwatch("catalogue", "check", *st))
    assert code == 1 and err.strip() and "Traceback" not in err, (code, out, err)
    assert all(line.startswith(f"xtalwatch catalogue check: {db}: ") for line in err.splitlines()), err
    assert db.read_bytes() == damaged


def test_restore_brings_back_every_image_and_label_then_the_service_runs(
        made: tuple[Path, Path, Path, bytes], tmp_path: Path) -> None:
    watch, good_state, backup, good = made
    before = catalogue_rows(good_state / "catalogue.sqlite3")
    assert len(before[0]) == N_IMAGES and len(before[1]) == 3
    state = damaged_state(tmp_path, good, "garbled-middle-page")
    db = state / "catalogue.sqlite3"
    damaged = db.read_bytes()
    st = ["--state", str(state)]
    code, out, err = finished(xtalwatch("catalogue", "restore", str(backup), *st))
    assert code == 0, err
    kept = [p for p in state.iterdir() if re.fullmatch(r"catalogue\.sqlite3\.damaged-\d{8}T\d{6}Z", p.name)]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    assert catalogue_rows(db) == before
    assert finished(xtalwatch("catalogue", "check", *st))[0] == 0

    # The restored catalogue serves: the old files are not taken again, a new one is taken once.
    service = ServiceProcess(watch_copy := tmp_path / "watch", state, tmp_path / "service.log")
    watch_copy.mkdir()
    for old in watch.iterdir():
        (watch_copy / old.name).write_bytes(old.read_bytes())
    try:
        service.start().wait_ready()
        (watch_copy / "P2_B1_1.jpg").write_bytes(jpeg_bytes(seed=99))
        wait_until(lambda: service.count("images") == N_IMAGES + 1, 120, "the new file to be catalogued")
        assert service.stop() == 0
        service.assert_healthy_end(N_IMAGES + 1)
        assert catalogue_rows(db)[1] == before[1]
    finally:
        service.cleanup()


def test_restore_refuses_while_the_service_holds_the_state_and_its_scheduled_backup_restores(
        made: tuple[Path, Path, Path, bytes], tmp_path: Path) -> None:
    """Needs Service.start to hold the state lock and run the backup schedule (see docs/catalogue.md)."""
    watch, good_state, _, good = made
    before = catalogue_rows(good_state / "catalogue.sqlite3")
    state = tmp_path / "state"
    state.mkdir()
    (state / "catalogue.sqlite3").write_bytes(good)
    service = ServiceProcess(watch, state, tmp_path / "service.log")
    try:
        service.start().wait_ready()
        scheduled = wait_until(lambda: sorted((state / "backups").glob("catalogue-*.sqlite3")), 60,
                               "the first scheduled backup")[0]
        code, out, err = finished(xtalwatch("catalogue", "restore", str(scheduled), "--state", str(state)))
        assert code != 0 and len(err.splitlines()) == 1 and "in use by" in err, (code, out, err)
        assert not [p for p in state.iterdir() if ".damaged-" in p.name]
        code, out, err = finished(xtalwatch("catalogue", "check", "--state", str(state)))
        assert code == 0, err  # read-only, beside the running service
        assert service.stop() == 0
        service.assert_healthy_end(N_IMAGES)
    finally:
        service.cleanup()
    (state / "catalogue.sqlite3").write_bytes(_half(good, random.Random(0)))
    assert finished(xtalwatch("catalogue", "restore", str(scheduled), "--state", str(state)))[0] == 0
    assert catalogue_rows(state / "catalogue.sqlite3") == before
