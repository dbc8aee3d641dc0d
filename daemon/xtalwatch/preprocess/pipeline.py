"""The preprocessing step end to end: file → decode → locate → crop → normalise → quality → cache.

``preprocess_array`` is pure (arrays in, arrays out) for the synthetic imager, training and
classification. ``preprocess_file`` is what the catalogue calls from a process pool: it is a
top-level function of picklable arguments, writes only under ``out_dir``, and never raises on
a bad frame: the failure comes back as a result with ``error`` set.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from xtalwatch.config import PreprocessConfig
from xtalwatch.preprocess.cache import (
    CachePaths,
    config_fingerprint,
    file_sha256,
    read_json,
    write_jpeg_atomic,
    write_json_atomic,
    write_png_atomic,
)
from xtalwatch.preprocess.decode import DecodeError, decode_bytes, to_uint8
from xtalwatch.preprocess.locate import Box, Location, grey, locate_small, working_copy
from xtalwatch.preprocess.normalise import crop_with_margin, equalise, letterbox, to_channels
from xtalwatch.preprocess.quality import Quality, measure, quality_flags

__all__ = ["Preprocessed", "PreprocessResult", "preprocess_array", "preprocess_file", "STATE_DISK_FULL"]

log = logging.getLogger(__name__)

# The error of a result that could not be written because the state disk is full: not the frame's
# fault, so the preprocess stage leaves the image to be taken again instead of recording it failed.
STATE_DISK_FULL = "state_disk_full"


@dataclass(frozen=True)
class Preprocessed:
    """In-memory result of ``preprocess_array``."""

    crop: np.ndarray  # (S, S) or (S, S, 3) uint8, the model input
    full_crop: np.ndarray  # full-resolution drop crop (with margin), frame layout (grey or BGR)
    location: Location
    crop_box: Box  # the drop box grown by the margin, clipped, in frame pixels
    quality: Quality
    flags: list[str]


def preprocess_array(image: np.ndarray, cfg: PreprocessConfig) -> Preprocessed:
    """Locate, crop, normalise and measure one frame held in memory.

    image: (H, W) grey or (H, W, 3) BGR, uint8 (other depths are scaled to 8 bits; a 4th
    channel is dropped).
    """
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    image = to_uint8(image)
    if image.ndim == 3:
        if image.shape[2] == 1:
            image = image[:, :, 0]
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    height, width = image.shape[:2]
    small, scale = working_copy(image)
    location = locate_small(small, scale, width, height)
    full_crop, crop_box = crop_with_margin(image, location.drop_box, cfg.margin_fraction)
    resized = letterbox(to_channels(full_crop, cfg.channels), cfg.image_size)
    quality = measure(grey(small), grey(resized))
    crop = equalise(resized, cfg.clahe_clip_limit, cfg.clahe_tile_grid)
    return Preprocessed(crop, full_crop, location, crop_box, quality, quality_flags(quality, location.method, cfg))


@dataclass
class PreprocessResult:
    """What the catalogue stores for one frame (JSON-safe through ``to_dict``/``from_dict``).

    Boxes are ``[x, y, w, h]`` in frame pixels after EXIF orientation. On failure ``error`` is a
    short reason (``too_many_pixels``, ``truncated``, ...) and the geometry fields are empty.
    """

    path: str
    sha256: str
    width: int = 0
    height: int = 0
    channels_in: int = 0
    bit_depth: int = 0
    format: str = ""
    well_box: list[int] | None = None
    well_shape: str | None = None
    drop_box: list[int] | None = None
    crop_box: list[int] | None = None
    method: str | None = None
    note: str = ""
    quality: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    crop_path: str | None = None
    full_crop_path: str | None = None
    config: str = ""
    error: str | None = None
    error_detail: str | None = None
    from_cache: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("from_cache")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessResult:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _cached(paths: CachePaths, path: Path, fingerprint: str, cfg: PreprocessConfig) -> PreprocessResult | None:
    data = read_json(paths.json)
    if data is None or data.get("config") != fingerprint or data.get("error"):
        return None
    if not paths.crop.is_file() or (cfg.keep_full_crop and not paths.full_crop.is_file()):
        return None
    result = PreprocessResult.from_dict(data)
    result.path = str(path)
    result.from_cache = True
    return result


def preprocess_file(
    path: Path, cfg: PreprocessConfig, out_dir: Path, *, max_pixels: int, sha256: str | None = None
) -> PreprocessResult:
    """Preprocess one image file, reusing the cached crop under ``out_dir`` when its content was seen.

    path: the image (read, never written). out_dir: the crop cache folder. max_pixels: frames
    declaring more are refused without decoding. sha256: the file's hash if the caller already
    has it (it is then trusted, saving a second hash of the bytes).
    Never raises for a bad frame; unreadable files and decode failures come back with ``error``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return PreprocessResult(str(path), sha256 or "", error="unreadable", error_detail=exc.strerror or str(exc))
    digest = sha256 or file_sha256(data)
    fingerprint = config_fingerprint(cfg)
    paths = CachePaths(Path(out_dir), digest)
    cached = _cached(paths, path, fingerprint, cfg)
    if cached is not None:
        return cached
    result = PreprocessResult(str(path), digest, config=fingerprint)
    try:
        image, header = decode_bytes(data, max_pixels=max_pixels)
    except DecodeError as exc:
        result.error, result.error_detail = exc.reason, exc.detail
        return result
    result.format, result.channels_in, result.bit_depth = header.format, header.channels, header.bit_depth
    result.height, result.width = image.shape[:2]
    try:
        done = preprocess_array(image, cfg)
        write_png_atomic(paths.crop, done.crop)
        if cfg.keep_full_crop:
            write_jpeg_atomic(paths.full_crop, done.full_crop)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # the state disk, not the frame: the image is taken again
            result.error, result.error_detail = STATE_DISK_FULL, exc.strerror or str(exc)
            return result
        log.warning("preprocess failed path=%s error=%s", path, exc)
        result.error, result.error_detail = "preprocess_failed", str(exc).strip().splitlines()[-1][:300]
        return result
    except (cv2.error, ValueError) as exc:  # recorded, never raised: one bad frame must not stop a pool
        log.warning("preprocess failed path=%s error=%s", path, exc)
        result.error, result.error_detail = "preprocess_failed", str(exc).strip().splitlines()[-1][:300]
        return result
    loc = done.location
    result.well_box, result.well_shape = list(loc.well_box), loc.well_shape
    result.drop_box, result.crop_box = list(loc.drop_box), list(done.crop_box)
    result.method, result.note = loc.method, loc.note
    result.quality, result.flags = done.quality.to_dict(), done.flags
    result.crop_path = str(paths.crop)
    result.full_crop_path = str(paths.full_crop) if cfg.keep_full_crop else None
    try:
        write_json_atomic(paths.json, result.to_dict())
    except OSError as exc:
        log.warning("preprocess cache not written path=%s error=%s", path, exc)
    return result
