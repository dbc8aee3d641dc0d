"""Synthetic imager frames with known well and drop geometry, drawn with OpenCV, for the preprocess tests."""

from __future__ import annotations

import struct

import cv2
import numpy as np

Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / float(aw * ah + bw * bh - inter)


def drop_polygon(centre: tuple[int, int], radius: float, seed: int, squash: float = 0.8) -> np.ndarray:
    """An irregular, smooth, blob-shaped drop outline (N, 1, 2) int32."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    wobble = np.zeros_like(angles)
    for k in (2, 3, 5):
        wobble += rng.uniform(0.03, 0.08) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    r = radius * (1 + wobble)
    xs = centre[0] + r * np.cos(angles)
    ys = centre[1] + squash * r * np.sin(angles)
    return np.stack([xs, ys], axis=1).round().astype(np.int32).reshape(-1, 1, 2)


def make_frame(
    *,
    well: str = "round",
    drop_centre: tuple[float, float] | None = (0.55, 0.55),
    drop_radius: float = 0.18,
    gradient: bool = True,
    size: tuple[int, int] = (960, 1280),
    seed: int = 0,
) -> tuple[np.ndarray, Box | None]:
    """A BGR frame like an imager's: dark plate, bright well with a dark wall, a drop with a dark rim.

    drop_centre and drop_radius are fractions of the frame height; None draws an empty well.
    Returns the frame and the true drop box (x, y, w, h), rim included.
    """
    h, w = size
    rng = np.random.default_rng(seed)
    frame = np.full((h, w, 3), 45, np.uint8)
    cx, cy, r = w // 2, h // 2, int(0.44 * h)
    mask = np.zeros((h, w), np.uint8)
    if well == "round":
        cv2.circle(mask, (cx, cy), r, 255, -1)
    else:
        aspect = 1.0 if well == "square" else 1.4
        half_w, half_h = int(r * aspect), r
        cv2.rectangle(mask, (cx - half_w, cy - half_h), (cx + half_w, cy + half_h), 255, -1)
    floor = np.zeros((h, w, 3), np.float32)
    floor[:] = (205, 200, 210)
    if gradient:  # polariser: smooth colour ramps in opposite directions per channel
        xs = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
        ys = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
        floor[:, :, 0] += 30 * xs
        floor[:, :, 2] -= 30 * ys
        floor[:, :, 1] += 15 * (xs * ys)
    frame[mask > 0] = np.clip(floor, 0, 255).astype(np.uint8)[mask > 0]
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(frame, contours, -1, (20, 20, 20), 12)  # the well wall
    box: Box | None = None
    if drop_centre is not None:
        centre = (int(drop_centre[0] * w), int(drop_centre[1] * h))
        poly = drop_polygon(centre, drop_radius * h, seed)
        drop_mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(drop_mask, [poly], 255)
        drop_mask &= mask  # a drop touching the wall is cut by it
        shaded = frame.astype(np.int16)
        shaded[drop_mask > 0] -= (18, 10, 25)
        frame = np.clip(shaded, 0, 255).astype(np.uint8)
        rim = np.zeros((h, w), np.uint8)
        cv2.polylines(rim, [poly], True, 255, 4)
        rim &= mask
        frame[rim > 0] = (70, 70, 75)
        for _ in range(4):  # a few crystals inside
            px = int(centre[0] + rng.uniform(-0.4, 0.4) * drop_radius * h)
            py = int(centre[1] + rng.uniform(-0.3, 0.3) * drop_radius * h)
            cv2.rectangle(frame, (px, py), (px + 18, py + 12), (60, 60, 60), 2)
        # The true box is what can be seen: the drop and its rim on the floor, not under the wall.
        visible = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13)))
        box = cv2.boundingRect(cv2.bitwise_or(drop_mask, rim) & visible)
    noise = rng.normal(0, 3, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8), box


def exif_orientation_segment(orientation: int) -> bytes:
    """An APP1 Exif segment holding only the Orientation tag (0x0112), big-endian TIFF."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1)  # one IFD entry
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(">I", 0)  # no next IFD
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an Exif orientation right after SOI (OpenCV's own JPEGs carry JFIF APP0, which may follow)."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + exif_orientation_segment(orientation) + jpeg[2:]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but carries no pixels: decoding it would fail, not refuse."""
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk
