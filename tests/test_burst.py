"""A burst of 500 files lands in the catalogue exactly once each."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import jpeg_bytes, make_settings, wait_for


def test_burst_of_500_files_is_catalogued_exactly_once(folders: tuple[Path, Path], start_service) -> None:
    watch, state = folders
    running = start_service(make_settings(watch, state, **{"watch.settle_seconds": 0.5}))
    for i in range(500):
        plate = f"pl{i // 96:02d}"
        folder = watch / plate / "inspection_01"
        folder.mkdir(parents=True, exist_ok=True)
        row, col = "ABCDEFGH"[(i % 96) // 12], (i % 12) + 1
        # Written to a hidden temporary name and renamed, as rsync and many imagers do.
        tmp = folder / f".{plate}_{col:02d}{row}_1.jpg.tmp"
        tmp.write_bytes(jpeg_bytes(32, 24, seed=i))
        os.rename(tmp, folder / f"{plate}_{col:02d}{row}_1.jpg")
    wait_for(lambda: running.count("images") == 500, timeout=60)
    running.service.rescan()  # a reconciliation scan on top must add nothing
    time.sleep(1.5)
    assert running.count("images") == 500
    assert running.count("files") == 500
    assert running.count("rejected") == 0
    assert running.count("wells") == 500
    assert running.count("images", "plate_id IN (SELECT id FROM plates WHERE barcode='unassigned')") == 0
    assert running.metric("xtalwatch_images_ingested_total") == 500
