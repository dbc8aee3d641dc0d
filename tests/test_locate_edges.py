"""Hard cases for the drop finder (issue 14): wells the frame edge cuts, pale drops without a rim.

The frames are drawn with OpenCV like ``preprocess_helpers.make_frame``, but the well's circle is
placed so the frame edge cuts it: its wall is drawn as the whole circle, so the floor runs right
up to the frame edge where the camera's field of view ends, as on a real imager.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from preprocess_helpers import Box, drop_polygon, iou
from xtalwatch.config import PreprocessConfig
from xtalwatch.preprocess import locate, preprocess_array


def cut_well_frame(
    well_centre_y: float, well_radius: float, drop_centre: tuple[float, float], drop_radius: float, *,
    plate: int = 45, size: tuple[int, int] = (960, 1280), seed: int = 0,
) -> tuple[np.ndarray, Box]:
    """A BGR frame with a bright round well whose circle runs past the top edge, and a drop in it.

    Positions and radii are fractions of the frame height; the well is centred across.
    Returns the frame and the true drop box (x, y, w, h), rim included.
    """
    h, w = size
    rng = np.random.default_rng(seed)
    frame = np.full((h, w, 3), plate, np.uint8)
    centre, radius = (w // 2, int(well_centre_y * h)), int(well_radius * h)
    cv2.circle(frame, centre, radius, (205, 200, 210), -1)
    cv2.circle(frame, centre, radius, (20, 20, 20), 12)  # the wall, where it is inside the frame
    poly = drop_polygon((int(drop_centre[0] * w), int(drop_centre[1] * h)), drop_radius * h, seed)
    drop = np.zeros((h, w), np.uint8)
    cv2.fillPoly(drop, [poly], 255)
    shaded = frame.astype(np.int16)
    shaded[drop > 0] -= (18, 10, 25)
    frame = np.clip(shaded, 0, 255).astype(np.uint8)
    cv2.polylines(frame, [poly], True, (70, 70, 75), 4)
    noisy = frame + rng.normal(0, 3, frame.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), cv2.boundingRect(poly)


@pytest.mark.parametrize(
    "well_y, well_r, drop, drop_r, plate",
    [
        (0.05, 0.45, (0.5, 0.2), 0.12, 45),  # the well's centre near the top edge: it misses the frame centre
        (0.15, 0.30, (0.5, 0.2), 0.10, 45),  # a small well high in the frame
        (0.05, 0.45, (0.45, 0.22), 0.12, 150),  # light plate around the well
        (0.30, 0.50, (0.5, 0.45), 0.16, 45),  # cut at the top but holding the frame centre
        (0.00, 0.55, (0.5, 0.25), 0.12, 45),  # half the well is out of the frame
    ],
    ids=["centre-near-edge", "small-high", "light-plate", "holds-centre", "half-out"],
)
def test_drop_is_found_in_a_well_cut_by_the_top_edge(
    well_y: float, well_r: float, drop: tuple[float, float], drop_r: float, plate: int
) -> None:
    frame, truth = cut_well_frame(well_y, well_r, drop, drop_r, plate=plate)
    location = locate(frame)
    assert location.method == "drop", location
    assert location.well_shape != "frame" and location.well_box[1] == 0, location
    assert iou(location.drop_box, truth) >= 0.5, (location.drop_box, truth)


def test_a_cut_round_well_is_still_called_round() -> None:
    frame, _ = cut_well_frame(0.05, 0.45, (0.5, 0.2), 0.12)
    assert locate(frame).well_shape == "round"


def test_a_cut_well_with_a_drop_raises_no_flag() -> None:
    frame, _ = cut_well_frame(0.05, 0.45, (0.5, 0.2), 0.12)
    assert "no_drop_found" not in preprocess_array(frame, PreprocessConfig()).flags


def test_a_cut_well_without_a_drop_falls_back_to_the_well_and_is_flagged() -> None:
    frame, _ = cut_well_frame(0.05, 0.45, (0.5, 0.2), 0.0)
    done = preprocess_array(frame, PreprocessConfig())
    assert done.location.method == "well" and done.location.note
    assert "no_drop_found" in done.flags


def pale_drop_frame(seed: int, *, softness_px: float = 20.0, shade: int = 14) -> tuple[np.ndarray, Box]:
    """A Rigaku-like frame: an even square well floor, a pale drop whose edge fades over ``softness_px``
    (no rim: no strong edge), and bubbles gathered in the lower middle of the drop.

    Returns the frame and the true drop box (x, y, w, h).
    """
    h, w = 960, 1280
    rng = np.random.default_rng(seed)
    frame = np.full((h, w, 3), 150, np.uint8)
    half = int(0.44 * h)
    corners = (w // 2 - half, h // 2 - half), (w // 2 + half, h // 2 + half)
    cv2.rectangle(frame, *corners, (225, 226, 222), -1)
    cv2.rectangle(frame, *corners, (60, 60, 60), 10)
    poly = drop_polygon((w // 2, h // 2), 0.3 * h, seed, squash=0.9)
    drop = np.zeros((h, w), np.float32)
    cv2.fillPoly(drop, [poly], 1.0)
    soft = cv2.GaussianBlur(drop, (0, 0), softness_px)
    frame = np.clip(frame - shade * soft[..., None], 0, 255).astype(np.uint8)
    x, y, bw, bh = cv2.boundingRect(poly)
    for _ in range(14):
        centre = int(x + bw * rng.uniform(0.4, 0.6)), int(y + bh * rng.uniform(0.55, 0.85))
        cv2.circle(frame, centre, int(rng.uniform(6, 14)), (40, 40, 40), 3)
    noisy = frame + rng.normal(0, 2, frame.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), (x, y, bw, bh)


@pytest.mark.parametrize("seed", range(3))
def test_pale_drop_without_a_rim_is_boxed_whole_not_just_its_bubbles(seed: int) -> None:
    # Edges alone find only the bubbles (IoU about 0.08 before issue 14): the drop's shade finds the rest.
    frame, truth = pale_drop_frame(seed)
    location = locate(frame)
    assert location.method == "drop"
    assert iou(location.drop_box, truth) >= 0.8, (location.drop_box, truth)


def test_shade_search_in_the_well_box_equals_the_search_over_the_whole_copy() -> None:
    # The shade blur must stay inside the drop search's pad, like every other filter chain.
    import importlib

    loc = importlib.import_module("xtalwatch.preprocess.locate")
    small, _ = loc.working_copy(pale_drop_frame(0)[0])
    well, _ = loc._find_well(loc.grey(small))
    shrink = max(3, round(0.02 * max(well.shape)))
    fast, _ = loc._find_drop(small, well)
    whole, _ = loc._find_drop_in(small, well, shrink)
    assert fast is not None and np.array_equal(fast, whole)
