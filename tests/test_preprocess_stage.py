"""The preprocess stage on a full state disk: the image is not blamed, and it is taken again later."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from conftest import jpeg_bytes, make_settings, wait_for
from xtalwatch.observe.metrics import Metrics
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess import STATE_DISK_FULL, preprocess_file
from xtalwatch.preprocess import pipeline as preprocess_pipeline
from xtalwatch.preprocess.probe import probe_bytes
from xtalwatch.stages.preprocess import PreprocessPool
from xtalwatch.store.catalogue import Catalogue


def _full(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_crop_that_cannot_be_written_for_lack_of_space_is_not_the_frames_fault(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "imager").mkdir()
    frame = tmp_path / "imager" / "a.jpg"
    frame.write_bytes(jpeg_bytes(320, 240, seed=3))
    settings = make_settings(tmp_path / "imager", tmp_path / "state")
    monkeypatch.setattr(preprocess_pipeline, "write_png_atomic", _full)
    result = preprocess_file(frame, settings.preprocess, tmp_path / "crops", max_pixels=settings.ingest.max_pixels)
    assert result.error == STATE_DISK_FULL and "No space" in (result.error_detail or "")


def test_the_stage_leaves_the_image_catalogued_and_says_the_disk_is_full(tmp_path: Path) -> None:
    watch, state = tmp_path / "imager", tmp_path / "state"
    watch.mkdir()
    data = jpeg_bytes(320, 240, seed=4)
    (watch / "p_01A_1.jpg").write_bytes(data)
    settings = make_settings(watch, state)
    catalogue = Catalogue(state)
    told: list[tuple[str, BaseException]] = []
    pool = PreprocessPool(settings, catalogue, Metrics(process_collectors=False),
                          on_disk_full=lambda where, exc: told.append((where, exc)))
    try:
        new = catalogue.record_image(str(watch / "p_01A_1.jpg"), len(data), 1, "ab" * 32,
                                     probe_bytes(data, ".jpg", settings.ingest.max_pixels),
                                     ImageIdentity("p", "A1", 1, None))
        # The worker wrote nothing because the disk was full: what it sends back says so.
        pool._store(pool_job(pool, new.image_id, str(watch / "p_01A_1.jpg")),
                    preprocess_pipeline.PreprocessResult(str(watch / "p_01A_1.jpg"), "ab" * 32,
                                                         error=STATE_DISK_FULL, error_detail="No space left"), 0.0)
        assert [w for w, _ in told] == ["preprocessing"]
        status = catalogue.query("SELECT status FROM images WHERE id=?", (new.image_id,))[0][0]
        assert status == "catalogued"  # not failed: taken again when there is room
        assert pool.resume() == 1  # ... which is what resume() does
        wait_for(lambda: catalogue.query("SELECT status FROM images WHERE id=?", (new.image_id,))[0][0]
                 != "catalogued", timeout=60)
    finally:
        pool.shutdown()
        catalogue.close()


def pool_job(pool: PreprocessPool, image_id: int, path: str) -> Any:
    """Register a job the way submit() does, without handing it to a worker."""
    from xtalwatch.stages.preprocess import _Job

    job = _Job(image_id, path, "ab" * 32, None)
    with pool._lock:
        pool._jobs[image_id] = job
    return job


def test_a_frame_whose_drop_was_not_found_but_whose_well_was_is_still_classified() -> None:
    """The well crop gets a call (it keeps its flag, so the call never decides the well); other flags do not."""
    from xtalwatch.preprocess.pipeline import PreprocessResult
    from xtalwatch.stages.preprocess import status_for

    def result(flags: list[str], method: str | None, error: str | None = None) -> PreprocessResult:
        done = PreprocessResult("frame.jpg", "0" * 64)
        done.flags, done.method, done.error = flags, method, error
        return done

    assert status_for(result([], "drop")) == "preprocessed"
    assert status_for(result(["no_drop_found"], "well")) == "preprocessed"
    assert status_for(result(["no_drop_found"], "centre")) == "flagged"
    assert status_for(result(["no_drop_found", "too_dark"], "well")) == "flagged"
    assert status_for(result(["too_dark"], "drop")) == "flagged"
    assert status_for(result([], None, error="truncated")) == "failed"
