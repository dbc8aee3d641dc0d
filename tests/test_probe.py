"""Header probing: formats and dimensions without decoding, and the reasons for refusing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from xtalwatch.preprocess.probe import Rejection, probe_bytes


@pytest.mark.parametrize(("ext", "shape", "dtype"), [
    ("jpg", (30, 40, 3), np.uint8), ("jpg", (30, 40), np.uint8), ("png", (30, 40, 4), np.uint8),
    ("png", (30, 40), np.uint16), ("tif", (30, 40, 3), np.uint16), ("bmp", (30, 40, 3), np.uint8),
])
def test_dimensions_of_each_format(ext: str, shape: tuple[int, ...], dtype: type) -> None:
    image = (np.arange(np.prod(shape)) % 200).reshape(shape).astype(dtype)
    ok, buf = cv2.imencode(f".{ext}", image)
    assert ok
    probe = probe_bytes(buf.tobytes(), ext, 10**6)
    assert (probe.width, probe.height) == (40, 30)


def test_truncated_png_and_bmp() -> None:
    image = np.full((50, 60, 3), 128, np.uint8)
    for ext in ("png", "bmp"):
        data = cv2.imencode(f".{ext}", image)[1].tobytes()
        with pytest.raises(Rejection) as err:
            probe_bytes(data[: len(data) // 2], ext, 10**6)
        assert err.value.reason == "truncated"


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = cv2.imencode(".jpg", np.zeros((100, 100), np.uint8))[1].tobytes()
    with pytest.raises(Rejection) as err:
        probe_bytes(data, "jpeg", 9_999)
    assert err.value.reason == "too_many_pixels" and "100x100" in err.value.detail
