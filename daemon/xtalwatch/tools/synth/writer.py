"""Putting frames on disk the way an imager does.

Instruments write straight into the final file name, and a watcher can see a file while it is
still being written. So there is deliberately no temp-name-and-rename here: in paced mode each
file is written as a first chunk, flushed, left for a short pause, then completed. The
ground-truth CSV is appended and flushed row by row, so a demo can read it mid-run.
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import cv2
import numpy as np

__all__ = ["LABEL_COLUMNS", "LabelRow", "LabelWriter", "encode", "read_labels", "write_file", "write_partially"]

LABEL_COLUMNS = ("path", "class", "plate", "well", "drop", "inspection")


@dataclass(frozen=True)
class LabelRow:
    """Ground truth for one image; ``path`` is relative to the image tree's root, '/' separated."""

    path: str
    label: str  # the CSV column is called ``class``
    plate: str
    well: str
    drop: int
    inspection: int


assert len(fields(LabelRow)) == len(LABEL_COLUMNS)


def encode(img: np.ndarray, ext: str, jpeg_quality: int = 92) -> bytes:
    """Encode a BGR or greyscale uint8 image as ``.jpg`` or ``.png`` bytes."""
    ext = ext.lower().lstrip(".")
    if ext in ("jpg", "jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    elif ext == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # fast; these are throwaway test images
    else:
        raise ValueError(f"unsupported image extension {ext!r}; use jpg or png")
    ok, buf = cv2.imencode("." + ext, img, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {img.shape} image as {ext}")
    return buf.tobytes()


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in one go, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_partially(path: Path, data: bytes, pause_seconds: float, *, first_fraction: float = 0.3,
                    stop: threading.Event | None = None) -> None:
    """Write a first chunk, flush, pause, then the rest: how a slow imager's file appears.

    The file is always completed, even when ``stop`` is set or Ctrl-C arrives during the pause, so
    stopping never leaves a truncated image behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = max(1, min(len(data) - 1, int(len(data) * first_fraction)))
    with open(path, "wb") as f:
        f.write(data[:cut])
        f.flush()
        try:
            if pause_seconds > 0:
                (stop or threading.Event()).wait(pause_seconds)
        finally:  # even a KeyboardInterrupt during the pause leaves a complete file
            f.write(data[cut:])


class LabelWriter:
    """Appends ground-truth rows to a CSV, flushed per row; a context manager."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._csv = csv.writer(self._file)
        self._csv.writerow(LABEL_COLUMNS)
        self._file.flush()

    def write(self, rows: Iterable[LabelRow]) -> None:
        for row in rows:
            self._csv.writerow(astuple(row))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LabelWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_labels(path: Path) -> list[LabelRow]:
    """Read a labels CSV written by :class:`LabelWriter`."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != LABEL_COLUMNS:
            raise ValueError(f"{path}: expected columns {','.join(LABEL_COLUMNS)}, got {reader.fieldnames}")
        return [LabelRow(r["path"], r["class"], r["plate"], r["well"], int(r["drop"]), int(r["inspection"]))
                for r in reader]
