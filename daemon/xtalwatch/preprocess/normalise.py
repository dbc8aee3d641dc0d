"""Turn a located frame into the model's input: crop with margin, channels, CLAHE, letterbox."""

from __future__ import annotations

import cv2
import numpy as np

from xtalwatch.preprocess.locate import Box
from xtalwatch.preprocess.resize import shrink

__all__ = ["crop_with_margin", "equalise", "letterbox", "normalise_crop", "to_channels"]


def crop_with_margin(image: np.ndarray, box: Box, margin_fraction: float) -> tuple[np.ndarray, Box]:
    """Cut ``box`` grown by ``margin_fraction`` of its size on every side, clipped to the frame.

    Returns the crop (a view, not a copy) and the box actually cut, in frame pixels.
    """
    height, width = image.shape[:2]
    x, y, w, h = box
    mx, my = round(w * margin_fraction), round(h * margin_fraction)
    x0, y0 = max(0, x - mx), max(0, y - my)
    x1, y1 = min(width, x + w + mx), min(height, y + h + my)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box} lies outside the {width}x{height} frame")
    return image[y0:y1, x0:x1], (x0, y0, x1 - x0, y1 - y0)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Grey (H, W) for ``channels=1``, BGR (H, W, 3) for ``channels=3``."""
    if channels == 1:
        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if channels == 3:
        return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    raise ValueError(f"channels must be 1 or 3, not {channels}")


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to fit a ``size`` x ``size`` square keeping the aspect ratio; pad with the edge mean.

    Padding with the crop's own mean grey (not black) keeps the pad from reading as a dark
    well wall to the model.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if nw <= w and nh <= h:
        resized = shrink(image, (nw, nh))
    else:
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    fill = cv2.mean(resized)[: 1 if image.ndim == 2 else 3]
    top, left = (size - nh) // 2, (size - nw) // 2
    return cv2.copyMakeBorder(
        resized, top, size - nh - top, left, size - nw - left, cv2.BORDER_CONSTANT, value=[round(v) for v in fill]
    )


def equalise(image: np.ndarray, clip_limit: float, tile_grid: int) -> np.ndarray:
    """CLAHE on grey, or on the lightness of BGR."""
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    if image.ndim == 2:
        return clahe.apply(image)
    # Equalise lightness only, so polariser colours keep their hue.
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def normalise_crop(crop: np.ndarray, *, size: int, channels: int, clip_limit: float, tile_grid: int) -> np.ndarray:
    """The model input: (size, size) uint8 grey or (size, size, 3) BGR, CLAHE-equalised.

    CLAHE runs after the resize: at model size it costs microseconds and its tiles cover the
    same fraction of every drop whatever the camera's resolution.
    """
    small = letterbox(to_channels(crop, channels), size)
    return equalise(small, clip_limit, tile_grid)
