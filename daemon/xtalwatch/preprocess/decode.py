"""Decode an imager frame into an 8-bit array, refusing bombs before decoding.

Why a header reader of our own: OpenCV only tells us a frame's size by decoding it, and a
decompression bomb (a few KB declaring 100k x 100k pixels) must be refused *before* that.
The header also gives the source channel count (RGBA collapses to BGR on decode).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["DecodeError", "FrameHeader", "content_kind", "decode_bytes", "looks_truncated", "read_header", "to_uint8"]

# EXIF orientation is applied by OpenCV for every flag except IMREAD_UNCHANGED; ANYCOLOR keeps grey
# frames grey (one channel, a third of the work) and ANYDEPTH keeps 16-bit samples for to_uint8.
_IMREAD_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH


class DecodeError(Exception):
    """A frame that cannot be turned into pixels; ``reason`` is a short stable tag for the catalogue."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FrameHeader:
    """What a file declares about itself, read without decoding pixels."""

    format: str  # "jpeg" | "png" | "tiff" | "bmp"
    width: int
    height: int
    channels: int
    bit_depth: int


def _jpeg_header(data: bytes) -> FrameHeader:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise DecodeError("bad_header", f"JPEG marker expected at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 10 > n:
                break
            precision, height, width, comps = struct.unpack(">BHHB", data[i + 4 : i + 10])
            return FrameHeader("jpeg", width, height, comps, precision)
        if marker == 0xDA:  # start of scan before any SOF: malformed
            break
        i += 2 + length
    raise DecodeError("truncated" if i + 4 > n else "bad_header", "no JPEG frame header (SOF) found")


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _png_header(data: bytes) -> FrameHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise DecodeError("truncated" if len(data) < 33 else "bad_header", "no PNG IHDR chunk")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_CHANNELS:
        raise DecodeError("bad_header", f"PNG colour type {colour}")
    return FrameHeader("png", width, height, _PNG_CHANNELS[colour], depth)


def _bmp_header(data: bytes) -> FrameHeader:
    if len(data) < 30:
        raise DecodeError("truncated", "BMP header cut short")
    (dib_size,) = struct.unpack("<I", data[14:18])
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _planes, bits = struct.unpack("<HHHH", data[18:26])
    else:
        width, height, _planes, bits = struct.unpack("<iiHH", data[18:30])
    channels = {32: 4, 24: 3, 16: 3}.get(bits, 3 if bits > 8 else 1)
    return FrameHeader("bmp", abs(width), abs(height), channels, min(bits, 8) if bits <= 8 else 8)


def _tiff_header(data: bytes) -> FrameHeader:
    endian = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        raise DecodeError("truncated", "TIFF header cut short")
    (ifd,) = struct.unpack(endian + "I", data[4:8])
    if ifd + 2 > len(data):
        raise DecodeError("truncated", "TIFF directory beyond end of file")
    (count,) = struct.unpack(endian + "H", data[ifd : ifd + 2])
    tags: dict[int, int] = {}
    for k in range(count):
        off = ifd + 2 + 12 * k
        if off + 12 > len(data):
            raise DecodeError("truncated", "TIFF directory cut short")
        tag, typ, n = struct.unpack(endian + "HHI", data[off : off + 8])
        if typ == 3:  # SHORT: the first value sits in the first two bytes of the value field
            (value,) = struct.unpack(endian + "H", data[off + 8 : off + 10])
        else:
            (value,) = struct.unpack(endian + "I", data[off + 8 : off + 12])
        if tag == 258 and n > 1:  # BitsPerSample per channel: the field is an offset; read the first
            if value + 2 <= len(data):
                (value,) = struct.unpack(endian + "H", data[value : value + 2])
        tags[tag] = value
    if 256 not in tags or 257 not in tags:
        raise DecodeError("bad_header", "TIFF without ImageWidth/ImageLength")
    return FrameHeader("tiff", tags[256], tags[257], tags.get(277, 1), tags.get(258, 1))


def read_header(data: bytes) -> FrameHeader:
    """Read format, size, channels and bit depth from the first bytes of an image file."""
    if len(data) == 0:
        raise DecodeError("empty", "zero-byte file")
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_header(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_header(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_header(data)
    if data[:2] == b"BM":
        return _bmp_header(data)
    raise DecodeError("unknown_format", f"not JPEG/PNG/TIFF/BMP (its first bytes {content_kind(data)})")


def content_kind(data: bytes) -> str:
    """What a file's first bytes look like, in words: an error describes content, never quotes it
    (the file may be anything a link pointed at, a key or a password file)."""
    head = data[:64]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "are binary data"
    return "look like text" if all(c.isprintable() or c in "\t\r\n" for c in text) else "are binary data"


def looks_truncated(header: FrameHeader, data: bytes) -> bool:
    """True when the file ends before its end marker (JPEG EOI, PNG IEND) or its declared BMP size."""
    # libjpeg and libpng "recover" a cut file by padding it grey and only warn on stderr, so a
    # truncated frame would otherwise pass as a real (half grey) picture.
    if header.format == "jpeg":
        return b"\xff\xd9" not in data[-4096:]
    if header.format == "png":
        return b"IEND" not in data[-64:]
    if header.format == "bmp" and len(data) >= 34:
        (offset,) = struct.unpack("<I", data[10:14])
        (bits,) = struct.unpack("<H", data[28:30])
        if bits in (8, 24, 32):
            row = ((header.width * bits + 31) // 32) * 4
            return len(data) < offset + row * header.height
    return False


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale 16-bit or float samples to 0-255, by the container's effective bit depth.

    A 12-bit camera in a 16-bit container (max 4095) is scaled by 4095, not 65535, so that a
    correctly exposed frame does not look black; a dark frame stays dark.
    """
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        top = float(np.nanmax(image)) if image.size else 1.0
        scale = 255.0 if top <= 1.0 else 255.0 / top
        return np.clip(np.nan_to_num(image) * scale, 0, 255).astype(np.uint8)
    top = int(image.max()) if image.size else 0
    full = (1 << max(8, top.bit_length())) - 1
    return cv2.convertScaleAbs(image, alpha=255.0 / full)


def decode_bytes(data: bytes, *, max_pixels: int) -> tuple[np.ndarray, FrameHeader]:
    """Decode file bytes into an 8-bit grey (H, W) or BGR (H, W, 3) array, EXIF orientation applied.

    Raises ``DecodeError`` with a stable ``reason``: empty, unknown_format, bad_header,
    too_many_pixels, truncated, corrupt.
    """
    header = read_header(data)
    if header.width <= 0 or header.height <= 0:
        raise DecodeError("bad_header", f"declared size {header.width}x{header.height}")
    if header.width * header.height > max_pixels:
        raise DecodeError(
            "too_many_pixels", f"declares {header.width}x{header.height} > limit {max_pixels} pixels; not decoded"
        )
    if looks_truncated(header, data):
        raise DecodeError("truncated", f"{header.format} file ends before its end marker")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _IMREAD_FLAGS)
    except cv2.error as exc:
        raise DecodeError("corrupt", str(exc).strip().splitlines()[-1]) from None
    if image is None or image.size == 0:
        raise DecodeError("corrupt", f"OpenCV could not decode this {header.format} file")
    if image.ndim == 3 and image.shape[2] == 4:  # ANYCOLOR keeps alpha for some codecs; drop it
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim == 3 and image.shape[2] == 2:
        image = image[:, :, 0]
    return to_uint8(image), header
