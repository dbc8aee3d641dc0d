"""The crop cache: real image files decoded once, unreadable ones skipped, arrays accepted."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from xtalwatch.config import PreprocessConfig
from xtalwatch.learn.simclr.data import from_arrays, list_images, load_folder, prepare_crop


def _write_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"plate{i % 2}" / "well"
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"img{i}.{'png' if i % 2 else 'jpg'}"), image)


def test_folder_is_decoded_once_into_a_cache(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _write_images(images, 6)
    (images / "broken.png").write_bytes(b"not an image")
    (images / ".hidden.png").write_bytes(b"x")
    (images / "notes.txt").write_text("ignored")
    cache = tmp_path / "cache"
    ds = load_folder(images, 16, cache, workers=2)
    assert len(ds) == 6 and ds.images.shape == (6, 16, 16, 3) and ds.images.dtype == np.uint8
    assert ds.skipped == [("broken.png", "not a decodable image")]
    assert len(ds.paths) == 6 and ds.paths == sorted(ds.paths)
    npy = next(cache.glob("crops-*.npy"))
    mtime = npy.stat().st_mtime_ns
    again = load_folder(images, 16, cache)
    assert again.fingerprint == ds.fingerprint and npy.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(ds.images))
    assert load_folder(images, 24, cache).fingerprint != ds.fingerprint  # another size, another cache


def test_prepare_crop_is_a_centre_square_in_rgb() -> None:
    frame = np.zeros((20, 40, 3), np.uint8)
    frame[:, 10:30] = (255, 0, 0)  # blue in BGR, exactly the centre square
    crop = prepare_crop(frame, 8)
    assert crop.shape == (8, 8, 3)
    assert (crop[..., 2] == 255).all() and (crop[..., 0] == 0).all()


def test_drop_preprocessing_gives_model_size_rgb_crops(tmp_path: Path) -> None:
    frame = np.full((240, 320, 3), 200, np.uint8)
    cv2.circle(frame, (160, 120), 100, (90, 90, 90), -1)  # a well
    cv2.circle(frame, (170, 125), 50, (150, 170, 160), -1)  # a drop
    cv2.rectangle(frame, (160, 115), (172, 121), (20, 40, 30), -1)  # a crystal
    crop = prepare_crop(frame, 16, PreprocessConfig())
    assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), frame)
    drop = load_folder(folder, 16, tmp_path / "cache", preprocess=PreprocessConfig())
    centre = load_folder(folder, 16, tmp_path / "cache")
    assert drop.fingerprint != centre.fingerprint and len(drop) == 1


def test_from_arrays_accepts_grey_and_resizes() -> None:
    grey = np.random.default_rng(1).integers(0, 256, (3, 20, 20, 1), dtype=np.uint8)
    ds = from_arrays(grey, 16)
    assert ds.images.shape == (3, 16, 16, 3)
    assert from_arrays(grey).fingerprint == from_arrays(grey.copy()).fingerprint
    with pytest.raises(ValueError, match="uint8"):
        from_arrays(grey.astype(np.float32))


def test_missing_folder_and_listing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_folder(tmp_path / "nope", 16, tmp_path / "c")
    _write_images(tmp_path / "x", 3)
    assert len(list_images(tmp_path / "x")) == 3
