"""Across restarts, touches, copies and rewrites: one record per content, nothing missed."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from conftest import jpeg_bytes, make_settings, tree_snapshot, wait_for
from xtalwatch.store.catalogue import Catalogue


def test_files_written_while_stopped_are_picked_up(folders: tuple[Path, Path], start_service) -> None:
    watch, state = folders
    settings = make_settings(watch, state)
    (watch / "a_01A_1.jpg").write_bytes(jpeg_bytes(seed=1))
    first = start_service(settings)
    wait_for(lambda: first.count("images") == 1)
    first.stop()

    for i in range(2, 6):  # the imager keeps working while the service is down
        (watch / f"a_0{i}A_1.jpg").write_bytes(jpeg_bytes(seed=i))
    os.utime(watch / "a_01A_1.jpg")  # touched while down: still the same image

    second = start_service(settings)
    wait_for(lambda: second.count("images") == 5)
    time.sleep(1.0)
    assert second.count("images") == 5
    assert second.count("files") == 5


def test_touch_copy_and_rewrite(folders: tuple[Path, Path], start_service) -> None:
    watch, state = folders
    running = start_service(make_settings(watch, state))
    original = watch / "b_01A_1.jpg"
    original.write_bytes(jpeg_bytes(seed=10))
    wait_for(lambda: running.count("images") == 1)

    os.utime(original, (time.time() + 5, time.time() + 5))  # touch
    shutil.copy(original, watch / "b_01A_1-copy.jpg")  # copy: same content, second path
    wait_for(lambda: running.count("files") == 2)
    running.service.rescan()
    time.sleep(1.0)
    assert running.count("images") == 1, "a touch or a copy made a second record"
    assert running.metric("xtalwatch_images_duplicate_total") >= 1

    original.write_bytes(jpeg_bytes(seed=11))  # same path, new content: a new version
    wait_for(lambda: running.count("images") == 2)
    rows = running.service.catalogue.query("SELECT version, previous_id FROM images ORDER BY id")
    assert [r["version"] for r in rows] == [1, 2]
    assert rows[1]["previous_id"] is not None


def test_ingest_command_then_service_adds_nothing(folders: tuple[Path, Path], tmp_path: Path) -> None:
    """`xtalwatch ingest` and the service agree on identity: the same files are not catalogued twice."""
    import subprocess
    import sys

    watch, state = folders
    for i in range(3):
        (watch / f"c_0{i + 1}B_2.jpg").write_bytes(jpeg_bytes(seed=100 + i))
    before = tree_snapshot(watch)
    cmd = [sys.executable, "-m", "xtalwatch", "ingest", str(watch), "--state", str(state)]
    for _ in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert "3 unchanged" in proc.stdout
    catalogue = Catalogue(state)
    try:
        assert catalogue.query("SELECT COUNT(*) FROM images")[0][0] == 3
        wells = {r[0] for r in catalogue.query("SELECT name FROM wells")}
        assert wells == {"B1", "B2", "B3"}
    finally:
        catalogue.close()
    assert tree_snapshot(watch) == before
