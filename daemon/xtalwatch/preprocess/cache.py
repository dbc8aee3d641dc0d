"""Where a frame's derived files live, by content hash, so a crop is computed once.

Layout under the cache folder: ``<sha[:2]>/<sha>.json`` (the result), ``<sha>.png`` (model-size
crop), ``<sha>_full.jpg`` (full-resolution crop, JPEG
quality 95: it is for people to look at, and a PNG of it would cost more than the whole
preprocessing). A result is reused only if it was made with
the same preprocessing settings; otherwise it is recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from xtalwatch.config import PreprocessConfig
from xtalwatch.files import atomic_write

__all__ = ["CachePaths", "config_fingerprint", "file_sha256", "read_json", "write_jpeg_atomic", "write_json_atomic", "write_png_atomic"]


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_fingerprint(cfg: PreprocessConfig) -> str:
    """A short hash of the settings that shape a crop; a change invalidates cached crops."""
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


class CachePaths:
    """The derived files of one frame, named by its content hash."""

    def __init__(self, root: Path, sha256: str):
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a lower-case hex sha256: {sha256!r}")
        self.folder = root / sha256[:2]
        self.json = self.folder / f"{sha256}.json"
        self.crop = self.folder / f"{sha256}.png"
        self.full_crop = self.folder / f"{sha256}_full.jpg"



def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode())


def write_png_atomic(path: Path, image: np.ndarray, compression: int = 1) -> None:
    """PNG with light compression: the full crop is written for every frame, so speed beats size."""
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise OSError(f"could not encode {path.name}")
    atomic_write(path, encoded.tobytes())


def write_jpeg_atomic(path: Path, image: np.ndarray, quality: int = 95) -> None:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"could not encode {path.name}")
    atomic_write(path, encoded.tobytes())


def read_json(path: Path) -> dict[str, Any] | None:
    """The cached result, or None when absent or unreadable (then it is simply recomputed)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
