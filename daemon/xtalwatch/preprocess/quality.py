"""Quality metrics of a frame and its drop crop, and the flags that keep bad frames out of scoring.

Flagged frames are kept out of training and hit alerts and reported as flagged; they are never
silently classified.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from xtalwatch.config import PreprocessConfig

__all__ = ["FLAGS", "Quality", "measure", "quality_flags"]

FLAGS = ("too_dark", "overexposed", "out_of_focus", "low_contrast", "no_drop_found")
_SATURATED = 250  # grey level counted as clipped highlights


@dataclass(frozen=True)
class Quality:
    """Measurements; brightness and saturation over the frame, focus and contrast over the drop."""

    mean_brightness: float  # 0-255, frame
    saturated_fraction: float  # 0-1, frame pixels at or above _SATURATED
    contrast: float  # grey standard deviation of the drop crop, 0-255
    focus: float  # variance of the Laplacian of the drop crop at model size

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def measure(frame_small_grey: np.ndarray, crop_model_grey: np.ndarray) -> Quality:
    """Measure a frame from its small grey copy and its drop crop at model size (both uint8 grey).

    Focus is measured at model size on purpose: it is what the model sees, and it makes the
    threshold independent of the camera's resolution.
    """
    mean, std = cv2.meanStdDev(crop_model_grey)
    saturated = float(np.count_nonzero(frame_small_grey >= _SATURATED)) / max(frame_small_grey.size, 1)
    focus = float(cv2.Laplacian(crop_model_grey, cv2.CV_64F).var())
    return Quality(
        mean_brightness=float(frame_small_grey.mean()),
        saturated_fraction=saturated,
        contrast=float(std[0, 0]),
        focus=focus,
    )


def quality_flags(quality: Quality, method: str, cfg: PreprocessConfig) -> list[str]:
    """The flags raised by ``quality`` under ``cfg``'s thresholds, in ``FLAGS`` order."""
    raised = {
        "too_dark": quality.mean_brightness < cfg.too_dark_mean,
        "overexposed": quality.saturated_fraction > cfg.overexposed_fraction,
        "out_of_focus": quality.focus < cfg.out_of_focus_laplacian,
        "low_contrast": quality.contrast < cfg.low_contrast_std,
        "no_drop_found": method != "drop",
    }
    return [name for name in FLAGS if raised[name]]
