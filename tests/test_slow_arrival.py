"""A file written slowly, in chunks, is taken once, when it is complete (native and polling observers)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from conftest import jpeg_bytes, make_settings, wait_for


@pytest.mark.parametrize("mode", ["native", "poll"])
def test_slow_chunked_write_is_taken_once_when_complete(folders: tuple[Path, Path], start_service, mode: str) -> None:
    watch, state = folders
    running = start_service(make_settings(watch, state, **{"watch.mode": mode, "watch.settle_seconds": 1.0}))
    data = jpeg_bytes(320, 240, seed=1)
    target = watch / "90j8" / "inspection_01" / "90j8_01A_1.jpg"
    target.parent.mkdir(parents=True)
    chunks = [data[i:i + len(data) // 6 + 1] for i in range(0, len(data), len(data) // 6 + 1)]
    with open(target, "wb") as handle:  # held open: the close is the end of the write
        for chunk in chunks:
            handle.write(chunk)
            handle.flush()
            time.sleep(0.3)
            assert running.count("images") == 0, "taken before it was complete"
    wait_for(lambda: running.count("images") == 1)
    time.sleep(1.5)  # any late event must not make a second record
    assert running.count("images") == 1
    assert running.count("rejected") == 0, "a partial file was seen as corrupt"
    sha = running.service.catalogue.query("SELECT sha256 FROM images")[0][0]
    assert sha == hashlib.sha256(data).hexdigest()
    assert running.metric("xtalwatch_images_ingested_total") == 1


def test_reopened_writes_wait_for_stable_size(folders: tuple[Path, Path], start_service) -> None:
    """An instrument that opens, appends and closes per chunk: the settle time bridges the gaps."""
    watch, state = folders
    running = start_service(make_settings(watch, state, **{"watch.settle_seconds": 1.5}))
    data = jpeg_bytes(320, 240, seed=2)
    target = watch / "slow.jpg"
    third = len(data) // 3 + 1
    for i in range(3):
        with open(target, "ab") as handle:
            handle.write(data[i * third:(i + 1) * third])
        time.sleep(0.15)
    wait_for(lambda: running.count("images") == 1)
    assert running.service.catalogue.query("SELECT sha256 FROM images")[0][0] == hashlib.sha256(data).hexdigest()
