"""Preprocessing: any imager frame → a normalised drop crop for the model, plus quality flags.

One module per stage: ``decode`` (bytes → pixels, bombs refused unread), ``locate`` (well and
drop), ``normalise`` (crop, channels, CLAHE, letterbox), ``quality`` (metrics and flags),
``cache`` (derived files by content hash), ``overlay`` (the debug picture), ``resize`` (fast
area-like shrinking for the working copy and the model crop) and ``pipeline`` (the two entry
points). See docs/preprocessing.md.
"""

from __future__ import annotations

from xtalwatch.preprocess.decode import DecodeError, FrameHeader, decode_bytes, read_header
from xtalwatch.preprocess.locate import Location, locate
from xtalwatch.preprocess.overlay import draw_overlay
from xtalwatch.preprocess.pipeline import (
    STATE_DISK_FULL,
    Preprocessed,
    PreprocessResult,
    preprocess_array,
    preprocess_file,
)
from xtalwatch.preprocess.quality import FLAGS, Quality

__all__ = [
    "FLAGS",
    "DecodeError",
    "FrameHeader",
    "Location",
    "Preprocessed",
    "PreprocessResult",
    "Quality",
    "STATE_DISK_FULL",
    "decode_bytes",
    "draw_overlay",
    "locate",
    "preprocess_array",
    "preprocess_file",
    "read_header",
]
