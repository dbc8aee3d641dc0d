"""The pictures the pages show, made once with OpenCV and cached under ``<state>/thumbs/``.

An image id stands for fixed content (its sha256), so each picture is rendered on its first
request, written atomically, and served from disk after that with a year-long ``immutable``
cache header and an ETag: a browser asks once, the service renders once.

* ``thumb``: the drop (the preprocessing crop box, cut from the full-resolution frame) scaled to
  ``web.thumbnail_px``; the stored model-size crop when the frame has gone.
* ``frame``: the whole frame scaled to ``web.frame_px``, with the well and the drop outlined by the
  very drawing ``preprocess/overlay.py`` makes for the overlay PNGs of ``xtalwatch preprocess``.
* ``crop``: the model-size crop PNG preprocessing stored, as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from xtalwatch.files import atomic_path
from xtalwatch.preprocess.decode import DecodeError, decode_bytes
from xtalwatch.preprocess.locate import Location
from xtalwatch.preprocess.overlay import draw_overlay
from xtalwatch.store.catalogue import Db
from xtalwatch.store.review import image_sources

__all__ = ["Thumbnails", "Picture", "PictureMissing", "Kind", "THUMBS_DIR", "CACHE_CONTROL"]

THUMBS_DIR = "thumbs"
CACHE_CONTROL = "public, max-age=31536000, immutable"
Kind = Literal["thumb", "frame", "crop"]
_METHODS = ("drop", "well", "centre")


class PictureMissing(LookupError):
    """No picture can be made; the message is one line for a person and never holds a path."""


@dataclass(frozen=True)
class Picture:
    """A picture on disk, ready to send."""

    path: Path
    etag: str
    media_type: str


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _box(value: Any) -> tuple[int, int, int, int] | None:
    if isinstance(value, list | tuple) and len(value) == 4:
        return int(value[0]), int(value[1]), int(value[2]), int(value[3])
    return None


class Thumbnails:
    """Renders and caches the pictures of catalogued images."""

    def __init__(self, state_dir: Path, *, thumbnail_px: int, frame_px: int, max_pixels: int):
        self.root = Path(state_dir) / THUMBS_DIR
        self.thumbnail_px = thumbnail_px
        self.frame_px = frame_px
        self.max_pixels = max_pixels

    def picture(self, db: Db, image_id: int, kind: Kind) -> Picture:
        """The picture of ``kind`` for ``image_id``, rendered now if not cached; ``PictureMissing`` when
        the id is unknown or the files it needs are gone."""
        sources = image_sources(db, image_id)
        if sources is None:
            raise PictureMissing(f"no image {image_id} in the catalogue")
        sha = sources["sha256"]
        if kind == "crop":
            crop = Path(sources["crop_path"]) if sources["crop_path"] else None
            if crop is None or not crop.is_file():
                raise PictureMissing(f"image {image_id} has no stored drop crop (not preprocessed, or it failed)")
            return Picture(crop, f'"{sha[:24]}-crop"', "image/png")
        side = self.thumbnail_px if kind == "thumb" else self.frame_px
        target = self.root / sha[:2] / f"{sha}-{kind}{side}.jpg"
        if not target.is_file():
            image = self._render_thumb(image_id, sources) if kind == "thumb" else self._render_frame(image_id, sources)
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 88])
            if not ok:
                raise PictureMissing(f"image {image_id}: OpenCV could not encode its {kind}")
            with atomic_path(target, suffix=".jpg") as tmp:
                tmp.write_bytes(encoded.tobytes())
        return Picture(target, f'"{sha[:24]}-{kind}{side}"', "image/jpeg")

    # -- rendering ------------------------------------------------------------------------------
    def _frame(self, image_id: int, sources: dict[str, Any]) -> np.ndarray:
        try:
            data = Path(sources["path"]).read_bytes()
        except OSError:
            raise PictureMissing(f"the frame of image {image_id} is no longer where it was catalogued "
                                 "(moved or deleted from the imager folder)") from None
        try:
            image, _ = decode_bytes(data, max_pixels=self.max_pixels)
        except DecodeError as exc:
            raise PictureMissing(f"the frame of image {image_id} cannot be decoded now ({exc.reason})") from None
        return image

    def _render_frame(self, image_id: int, sources: dict[str, Any]) -> np.ndarray:
        image = self._frame(image_id, sources)
        result = sources["result"]
        well, drop, method = _box(result.get("well_box")), _box(result.get("drop_box")), result.get("method")
        if well is None or drop is None or method not in _METHODS:
            return _fit(image, self.frame_px)  # not located: the plain frame
        location = Location(well, result.get("well_shape") or "frame", drop, method)
        return draw_overlay(image, location, list(result.get("flags") or []), max_side=self.frame_px)

    def _render_thumb(self, image_id: int, sources: dict[str, Any]) -> np.ndarray:
        try:
            image = self._frame(image_id, sources)
        except PictureMissing:
            crop = Path(sources["crop_path"]) if sources["crop_path"] else None
            stored = cv2.imread(str(crop), cv2.IMREAD_UNCHANGED) if crop is not None and crop.is_file() else None
            if stored is None:
                raise
            return _fit(stored, self.thumbnail_px)
        box = _box(sources["result"].get("crop_box"))
        if box is not None:
            x, y, w, h = box
            cut = image[max(0, y):y + h, max(0, x):x + w]
            image = cut if cut.size else image
        return _fit(image, self.thumbnail_px)
