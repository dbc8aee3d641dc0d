"""A debug picture: the frame with the found well and drop drawn on it, so a person sees what we saw."""

from __future__ import annotations

import cv2
import numpy as np

from xtalwatch.preprocess.locate import Location

__all__ = ["draw_overlay"]

_WELL_COLOUR = (255, 160, 0)  # BGR blue
_DROP_COLOUR = {"drop": (0, 220, 0), "well": (0, 200, 255), "centre": (0, 0, 255)}


def draw_overlay(image: np.ndarray, location: Location, flags: list[str] | None = None, *, max_side: int = 800) -> np.ndarray:
    """Return a BGR copy of ``image`` (downscaled to ``max_side``) with the well and drop outlined.

    Well in blue (an ellipse for round wells, a rectangle otherwise); drop box in green when a
    drop was found, orange when it fell back to the well, red when it fell back to the centre.
    """
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    canvas = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else image.copy()
    if canvas.ndim == 2:
        canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)
    thick = max(2, round(max(canvas.shape[:2]) / 300))

    def pt(x: float, y: float) -> tuple[int, int]:
        return round(x * scale), round(y * scale)

    wx, wy, ww, wh = location.well_box
    if location.well_shape == "round":
        cv2.ellipse(canvas, pt(wx + ww / 2, wy + wh / 2), pt(ww / 2, wh / 2), 0, 0, 360, _WELL_COLOUR, thick)
    elif location.well_shape != "frame":
        cv2.rectangle(canvas, pt(wx, wy), pt(wx + ww - 1, wy + wh - 1), _WELL_COLOUR, thick)
    dx, dy, dw, dh = location.drop_box
    colour = _DROP_COLOUR[location.method]
    cv2.rectangle(canvas, pt(dx, dy), pt(dx + dw - 1, dy + dh - 1), colour, thick)
    label = f"{location.method} / well {location.well_shape}"
    if flags:
        label += " / " + ",".join(flags)
    cv2.putText(canvas, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(canvas, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas
