"""Preprocessing on real pixels: synthetic frames of known geometry, real codecs, the real cache."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from preprocess_helpers import iou, make_frame, png_header_only, with_exif_orientation
from xtalwatch.cli import main
from xtalwatch.config import PreprocessConfig
from xtalwatch.preprocess import (
    DecodeError,
    PreprocessResult,
    decode_bytes,
    locate,
    preprocess_array,
    preprocess_file,
    read_header,
)

MAX_PIXELS = 50_000_000
CFG = PreprocessConfig()


# ---------------------------------------------------------------- locating the drop


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(well="round"),
        dict(well="square", drop_centre=(0.4, 0.6)),
        dict(well="rect", drop_centre=(0.3, 0.45), drop_radius=0.15),
        dict(well="round", drop_centre=(0.62, 0.3), drop_radius=0.2, seed=3),
        dict(well="round", drop_centre=(0.5, 0.5), gradient=False, seed=5),
        dict(well="round", drop_centre=(0.3, 0.35), drop_radius=0.17, seed=4),
    ],
    ids=["round-centre", "square-off-centre", "rectangular", "round-near-wall", "no-gradient", "round-upper-left"],
)
def test_found_drop_box_matches_the_drawn_one(kwargs: dict) -> None:
    frame, truth = make_frame(**kwargs)
    location = locate(frame)
    assert location.method == "drop"
    assert iou(location.drop_box, truth) >= 0.8, (location.drop_box, truth)


def test_well_shape_is_named() -> None:
    assert locate(make_frame(well="round")[0]).well_shape == "round"
    assert locate(make_frame(well="square")[0]).well_shape == "square"
    assert locate(make_frame(well="rect", drop_centre=(0.3, 0.45), drop_radius=0.15)[0]).well_shape == "rectangular"


def test_empty_well_falls_back_to_the_well_and_featureless_frame_to_the_centre() -> None:
    frame, _ = make_frame(drop_centre=None)
    location = locate(frame)
    assert location.method == "well" and location.note
    blank = np.full((480, 640), 128, np.uint8)
    assert locate(blank).method == "centre"


# ---------------------------------------------------------------- quality flags


def _flags(image: np.ndarray) -> list[str]:
    return preprocess_array(image, CFG).flags


def test_a_good_frame_raises_no_flag() -> None:
    assert _flags(make_frame()[0]) == []


def test_each_flag_is_raised_by_a_frame_built_to_raise_it() -> None:
    good, _ = make_frame()
    assert "too_dark" in _flags((good * 0.08).astype(np.uint8))
    bright = cv2.convertScaleAbs(good, alpha=1.8)
    assert "overexposed" in _flags(bright)
    assert "out_of_focus" in _flags(cv2.GaussianBlur(good, (0, 0), 25))
    assert "no_drop_found" in _flags(make_frame(drop_centre=None)[0])
    assert "low_contrast" in _flags(np.full((480, 640, 3), 128, np.uint8))


def test_model_input_has_the_configured_shape() -> None:
    frame, _ = make_frame()
    assert preprocess_array(frame, CFG).crop.shape == (96, 96, 3)
    grey = PreprocessConfig(channels=1, image_size=64)
    assert preprocess_array(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), grey).crop.shape == (64, 64)
    assert preprocess_array(frame, grey).crop.dtype == np.uint8


# ---------------------------------------------------------------- decoding


def _encode(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    "ext,dtype,channels",
    [
        (".png", np.uint8, 1), (".png", np.uint8, 3), (".png", np.uint8, 4),
        (".png", np.uint16, 1), (".png", np.uint16, 3),
        (".tif", np.uint8, 1), (".tif", np.uint8, 3), (".tif", np.uint16, 1), (".tif", np.uint16, 4),
        (".bmp", np.uint8, 1), (".bmp", np.uint8, 3),
        (".jpg", np.uint8, 1), (".jpg", np.uint8, 3),
    ],
)
def test_decode_formats_depths_and_layouts(ext: str, dtype: type, channels: int) -> None:
    top = 4095 if dtype == np.uint16 else 255  # a 12-bit camera in a 16-bit container
    shape = (40, 60) if channels == 1 else (40, 60, channels)
    image = np.random.default_rng(1).integers(0, top, shape).astype(dtype)
    data = _encode(ext, image)
    header = read_header(data)
    assert (header.width, header.height, header.channels) == (60, 40, channels)
    decoded, _ = decode_bytes(data, max_pixels=MAX_PIXELS)
    assert decoded.dtype == np.uint8
    assert decoded.shape == ((40, 60) if channels == 1 else (40, 60, 3))
    if dtype == np.uint16:  # scaled by the effective depth, so a 12-bit frame is not black
        assert decoded.mean() > 80


def test_exif_orientation_is_honoured() -> None:
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :20] = 255  # a white band on the left
    rotated = with_exif_orientation(_encode(".jpg", image), 6)  # 6: rotate 90° clockwise to display
    decoded, _ = decode_bytes(rotated, max_pixels=MAX_PIXELS)
    assert decoded.shape[:2] == (80, 40)
    assert decoded[:20].mean() > 200 and decoded[-20:].mean() < 50  # the band is now on top


def test_oversized_frame_is_refused_without_decoding(tmp_path: Path) -> None:
    bomb = png_header_only(100_000, 100_000)  # no pixel data: decoding it could only fail
    with pytest.raises(DecodeError) as err:
        decode_bytes(bomb, max_pixels=MAX_PIXELS)
    assert err.value.reason == "too_many_pixels"
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    result = preprocess_file(path, CFG, tmp_path / "cache", max_pixels=MAX_PIXELS)
    assert result.error == "too_many_pixels" and "100000x100000" in (result.error_detail or "")


@pytest.mark.parametrize(
    "name,payload,reason",
    [
        ("cut.jpg", "truncated-jpeg", "truncated"),
        ("cut.png", "truncated-png", "truncated"),
        ("empty.jpg", b"", "empty"),
        ("text.jpg", b"hello, not an image", "unknown_format"),
    ],
)
def test_bad_files_come_back_as_error_results(tmp_path: Path, name: str, payload: object, reason: str) -> None:
    frame, _ = make_frame(size=(240, 320))
    if payload == "truncated-jpeg":
        payload = _encode(".jpg", frame)[:3000]
    elif payload == "truncated-png":
        whole = _encode(".png", frame)
        payload = whole[: len(whole) // 2]
    path = tmp_path / name
    path.write_bytes(payload)  # type: ignore[arg-type]
    result = preprocess_file(path, CFG, tmp_path / "cache", max_pixels=MAX_PIXELS)
    assert not result.ok and result.error == reason
    assert result.crop_path is None


def test_missing_file_is_an_error_result(tmp_path: Path) -> None:
    result = preprocess_file(tmp_path / "gone.jpg", CFG, tmp_path / "cache", max_pixels=MAX_PIXELS)
    assert result.error == "unreadable"


# ---------------------------------------------------------------- files, cache, result, command


def test_preprocess_file_writes_crops_and_caches_by_content(tmp_path: Path) -> None:
    frame, truth = make_frame()
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(_encode(".jpg", frame))
    b.write_bytes(a.read_bytes())  # the same content under another name
    cache = tmp_path / "cache"
    first = preprocess_file(a, CFG, cache, max_pixels=MAX_PIXELS)
    assert first.ok and not first.from_cache and first.method == "drop"
    assert iou(tuple(first.drop_box), truth) >= 0.8
    crop = cv2.imread(first.crop_path, cv2.IMREAD_UNCHANGED)
    assert crop.shape == (96, 96, 3)
    assert first.full_crop_path and Path(first.full_crop_path).is_file()
    stamp = Path(first.crop_path).stat().st_mtime_ns
    second = preprocess_file(b, CFG, cache, max_pixels=MAX_PIXELS)
    assert second.from_cache and second.path == str(b) and second.drop_box == first.drop_box
    assert Path(second.crop_path).stat().st_mtime_ns == stamp  # not recomputed
    # Other settings make other crops: the cache does not answer for them.
    third = preprocess_file(a, PreprocessConfig(image_size=64), cache, max_pixels=MAX_PIXELS)
    assert not third.from_cache and cv2.imread(third.crop_path).shape[:2] == (64, 64)


def test_result_round_trips_through_json_and_pickle(tmp_path: Path) -> None:
    path = tmp_path / "f.png"
    path.write_bytes(_encode(".png", make_frame(size=(240, 320))[0]))
    result = preprocess_file(path, PreprocessConfig(keep_full_crop=False), tmp_path / "c", max_pixels=MAX_PIXELS)
    assert result.full_crop_path is None
    data = json.loads(json.dumps(result.to_dict()))
    assert PreprocessResult.from_dict(data) == result
    assert pickle.loads(pickle.dumps(result)) == result
    assert pickle.loads(pickle.dumps(preprocess_file)) is preprocess_file


def test_command_writes_crop_overlay_and_quality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "in" / "plate"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "good.jpg"), make_frame()[0])
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    out = tmp_path / "out"
    rc = main(["preprocess", str(tmp_path / "in"), "--out", str(out)])
    assert rc == 1  # one file failed, and said so
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and any("ERROR" in line for line in lines)
    assert (out / "good.crop.png").is_file() and (out / "good.overlay.png").is_file()
    quality = json.loads((out / "good.quality.json").read_text())
    assert quality["method"] == "drop" and quality["flags"] == []
    assert json.loads((out / "broken.quality.json").read_text())["error"]


# ---------------------------------------------------------------- real photographs


@pytest.mark.realdata
def test_every_real_image_yields_a_crop_and_a_drop_box_inside_the_frame(tmp_path: Path, real_images: Path) -> None:
    root = real_images
    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
    assert files, f"no images under {root}"
    for path in files:
        result = preprocess_file(path, CFG, tmp_path, max_pixels=MAX_PIXELS)
        assert result.ok, (path, result.error, result.error_detail)
        x, y, w, h = result.drop_box
        assert 0 <= x and 0 <= y and w > 0 and h > 0, path
        assert x + w <= result.width and y + h <= result.height, path
        assert cv2.imread(result.crop_path).shape == (96, 96, 3)


# ---------------------------------------------------------------- speed work kept honest (issue 3)


@pytest.mark.parametrize("shape", [(960, 1280, 3), (1014, 1266), (601, 703, 3)])
@pytest.mark.parametrize("last", ["area", "linear"])
def test_shrink_is_close_to_one_area_resize(shape: tuple[int, ...], last: str) -> None:
    from xtalwatch.preprocess.resize import shrink

    frame, _ = make_frame(size=shape[:2])
    image = frame if len(shape) == 3 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    size = (96, round(96 * shape[0] / shape[1]))
    fast = shrink(image, size, last=last)
    exact = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    assert fast.shape == exact.shape and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - exact).mean() < 2.0
    with pytest.raises(ValueError):
        shrink(image, (shape[1] + 1, 10))


def test_power_of_two_shrink_is_an_area_resize_up_to_rounding() -> None:
    from xtalwatch.preprocess.resize import shrink

    image = np.random.default_rng(0).integers(0, 256, (512, 768, 3), dtype=np.uint8)
    for last in ("area", "linear"):  # halvings round once per level: at most one grey level off
        fast = shrink(image, (96, 64), last=last).astype(int)
        assert np.abs(fast - cv2.resize(image, (96, 64), interpolation=cv2.INTER_AREA)).max() <= 1


@pytest.mark.parametrize("kwargs", [dict(well="round"), dict(well="rect", drop_centre=(0.3, 0.45)), dict(well="round", drop_centre=(0.62, 0.3), drop_radius=0.2, seed=3)])
def test_drop_search_in_the_well_box_equals_the_search_over_the_whole_copy(kwargs: dict) -> None:
    import importlib

    loc = importlib.import_module("xtalwatch.preprocess.locate")
    small, _ = loc.working_copy(make_frame(**kwargs)[0])
    well, _ = loc._find_well(loc.grey(small))
    shrink = max(3, round(0.02 * max(well.shape)))
    fast, _ = loc._find_drop(small, well)
    whole, _ = loc._find_drop_in(small, well, shrink)
    assert fast is not None and np.array_equal(fast, whole)


# ---------------------------------------------------------------- faint drops on real frames (issue 14)

# Drop boxes (x, y, w, h, frame pixels) drawn by eye on the overlays: the faint, large drops the edge
# search used to cut (a floor leaking in through gaps in the rim, a rim thinner than the erosion).
FAINT_DROPS = {
    "marco-gsk/precipitate/gsk_215.jpeg": (389, 343, 548, 571),
    "marco-gsk/precipitate/gsk_216.jpeg": (286, 103, 571, 628),
    "marco-gsk/clear/gsk_220.jpeg": (514, 411, 617, 549),
    "marco-gsk/clear/gsk_236.jpeg": (526, 395, 583, 565),
    "marco-gsk/other/gsk_1401.jpeg": (347, 194, 647, 624),
    "_04_04_02_": (491, 171, 1664, 1514),
    "_05_02_02_": (494, 183, 1449, 1517),
    "_03_01_03_": (640, 411, 1646, 1463),
}


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(FAINT_DROPS))
def test_faint_real_drop_is_boxed_whole(real_images: Path, name: str) -> None:
    found = sorted(real_images.rglob(f"*{name}*")) if name.startswith("_") else [real_images / name]
    if not found or not found[0].is_file():
        pytest.skip(f"{name} is not under {real_images}")
    image, _ = decode_bytes(found[0].read_bytes(), max_pixels=MAX_PIXELS)
    location = locate(image)
    assert location.method == "drop"
    assert iou(location.drop_box, FAINT_DROPS[name]) >= 0.7, (location.drop_box, FAINT_DROPS[name])
