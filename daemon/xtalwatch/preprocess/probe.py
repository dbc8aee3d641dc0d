"""Check a file is a whole, plausible image from its bytes alone, without decoding pixels.

Ingest runs this on every file before cataloguing it: the magic number, the declared dimensions
and the end marker (read by ``preprocess.decode``'s header reader, the one place that parses
image headers) are enough to refuse empty files, non-images, files whose extension lies,
truncated files, and decompression bombs (huge declared dimensions), at the cost of reading the
file once, which hashing does anyway. The reasons here are the catalogue's stable codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from xtalwatch.preprocess.decode import DecodeError, content_kind, looks_truncated, read_header

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


def _rejection(exc: DecodeError, data: bytes) -> Rejection:
    if exc.reason == "empty":
        return Rejection("empty_file", "the file is zero bytes long")
    if exc.reason == "unknown_format":
        return Rejection("not_an_image", f"the content is no JPEG, PNG, TIFF or BMP (its first bytes {content_kind(data)})")
    if exc.reason == "truncated":
        return Rejection("truncated", f"{exc.detail}; the file was cut short")
    return Rejection("corrupt", exc.detail or exc.reason)


def probe_bytes(data: bytes, extension: str, max_pixels: int) -> Probe:
    """Probe a whole file's bytes; raise Rejection with the reason when it is not a usable image.

    ``extension`` is the file's extension without the dot; ``max_pixels`` the largest frame
    (width × height) accepted, so that a decompression bomb is refused before any decode.
    """
    try:
        header = read_header(data)
    except DecodeError as exc:
        raise _rejection(exc, data) from None
    fmt = header.format
    expected = EXTENSION_FORMATS.get(extension.lower())
    if expected is not None and expected != fmt:
        raise Rejection("wrong_extension", f"the extension says {expected.upper()} but the content is {fmt.upper()}")
    if header.width <= 0 or header.height <= 0:
        raise Rejection("corrupt", f"{fmt.upper()} declares an empty frame of {header.width}x{header.height}")
    if header.width * header.height > max_pixels:
        raise Rejection(
            "too_many_pixels",
            f"declares {header.width}x{header.height} = {header.width * header.height:,} pixels, over the limit of "
            f"{max_pixels:,} (ingest.max_pixels); not decoded",
        )
    if looks_truncated(header, data):
        raise Rejection("truncated", f"{fmt.upper()} ends before its end marker; the file was cut short")
    return Probe(fmt, header.width, header.height, header.channels)
