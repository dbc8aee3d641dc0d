"""Check a file is a whole, plausible image from its bytes alone, without decoding pixels.

Ingest runs this on every file before cataloguing it. It reads the magic number, the declared
dimensions and the end marker, which is enough to refuse empty files, non-images, files whose
extension lies, truncated JPEG/PNG, and decompression bombs (huge declared dimensions), at the
cost of reading the file once, which hashing does anyway.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["Probe", "Rejection", "probe_bytes", "EXTENSION_FORMATS"]

EXTENSION_FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "tif": "tiff", "tiff": "tiff", "bmp": "bmp"}


class Rejection(Exception):
    """A file that cannot be catalogued as an image; ``reason`` is a short stable code for metrics."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Probe:
    format: str  # jpeg, png, tiff, bmp
    width: int
    height: int
    channels: int | None


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    return None


def _jpeg(data: bytes) -> Probe:
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise Rejection("corrupt", f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 10 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            channels = data[pos + 9]
            if b"\xff\xd9" not in data[-4096:]:
                raise Rejection("truncated", "JPEG has no end-of-image marker; the file was cut short")
            return Probe("jpeg", width, height, channels)
        if marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    raise Rejection("truncated", "JPEG ends before its frame header")


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _png(data: bytes) -> Probe:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise Rejection("truncated", "PNG ends before its IHDR header")
    width, height, _depth, colour = struct.unpack(">IIBB", data[16:26])
    if b"IEND" not in data[-64:]:
        raise Rejection("truncated", "PNG has no IEND chunk; the file was cut short")
    return Probe("png", width, height, _PNG_CHANNELS.get(colour))


def _tiff(data: bytes) -> Probe:
    endian = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(endian + "I", data[4:8])
        (count,) = struct.unpack(endian + "H", data[ifd:ifd + 2])
        tags: dict[int, int] = {}
        for i in range(count):
            entry = data[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
            tag, typ, _n = struct.unpack(endian + "HHI", entry[:8])
            value = struct.unpack(endian + ("H" if typ == 3 else "I"), entry[8:10] if typ == 3 else entry[8:12])[0]
            tags[tag] = value
    except struct.error:
        raise Rejection("truncated", "TIFF ends inside its first image directory") from None
    if 256 not in tags or 257 not in tags:
        raise Rejection("corrupt", "TIFF has no image width/height tags")
    return Probe("tiff", tags[256], tags[257], tags.get(277))


def _bmp(data: bytes) -> Probe:
    width, height = struct.unpack("<ii", data[18:26])
    (offset,) = struct.unpack("<I", data[10:14])
    bits = struct.unpack("<H", data[28:30])[0] if len(data) >= 30 else 24
    expected = offset + ((abs(width) * bits + 31) // 32) * 4 * abs(height)
    if bits in (8, 24, 32) and len(data) < expected:
        raise Rejection("truncated", f"BMP holds {len(data)} bytes of the {expected} its header declares")
    return Probe("bmp", abs(width), abs(height), max(1, bits // 8))


_PARSERS = {"jpeg": _jpeg, "png": _png, "tiff": _tiff, "bmp": _bmp}


def probe_bytes(data: bytes, extension: str, max_pixels: int) -> Probe:
    """Probe a whole file's bytes; raise Rejection with the reason when it is not a usable image.

    ``extension`` is the file's extension without the dot; ``max_pixels`` the largest frame
    (width × height) accepted, so that a decompression bomb is refused before any decode.
    """
    if not data:
        raise Rejection("empty_file", "the file is zero bytes long")
    fmt = _sniff(data[:32])
    if fmt is None:
        raise Rejection("not_an_image", f"content starts with {data[:8]!r}, which is no JPEG, PNG, TIFF or BMP")
    expected = EXTENSION_FORMATS.get(extension.lower())
    if expected is not None and expected != fmt:
        raise Rejection("wrong_extension", f"the extension says {expected.upper()} but the content is {fmt.upper()}")
    probe = _PARSERS[fmt](data)
    if probe.width <= 0 or probe.height <= 0:
        raise Rejection("corrupt", f"{fmt.upper()} declares an empty frame of {probe.width}x{probe.height}")
    if probe.width * probe.height > max_pixels:
        raise Rejection(
            "too_many_pixels",
            f"declares {probe.width}x{probe.height} = {probe.width * probe.height:,} pixels, over the limit of "
            f"{max_pixels:,} (ingest.max_pixels); not decoded",
        )
    return probe
