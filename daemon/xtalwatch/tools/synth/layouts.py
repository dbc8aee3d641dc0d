"""Where each instrument puts a drop image: the folder layouts the adapters parse.

Each layout is a pure function from (plate, well, drop, inspection) to a path relative to the
imager's root, with '/' separators. The plates' identities (barcodes, Rock Maker plate ids,
dates) are drawn once per plate from the seed, so a run is reproducible.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import numpy as np

from xtalwatch.plate import PLATE_FORMATS, well_name

__all__ = [
    "LAYOUTS",
    "Layout",
    "Plate",
    "inspection_date",
    "make_plates",
    "relpath",
    "well_grid",
]

Layout = Literal["rockmaker", "export", "minstrel"]
LAYOUTS: tuple[str, ...] = ("rockmaker", "export", "minstrel")

# Days after set-up of each inspection; imagers follow a roughly Fibonacci schedule.
_SCHEDULE_DAYS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144)

_LOWER = string.ascii_lowercase + string.digits
_UPPER = string.ascii_uppercase


@dataclass(frozen=True)
class Plate:
    """One synthetic plate: its index in the run and the identity its instrument gives it."""

    index: int
    barcode: str  # what adapters report as ``plate``
    plate_id: int  # Rock Maker's numeric id (== int(barcode) for rockmaker)
    type_code: str  # Minstrel's two-letter plate type, also inside its barcode
    setup: date  # day of the first inspection


def well_grid(wells: int) -> tuple[int, int]:
    """(rows, columns) of a plate format; 96 -> (8, 12)."""
    if wells not in PLATE_FORMATS:
        raise ValueError(f"unknown plate format {wells}; known: {sorted(PLATE_FORMATS)}")
    return PLATE_FORMATS[wells]


def _barcode(rng: np.random.Generator, layout: str, plate_id: int, type_code: str) -> str:
    if layout == "rockmaker":
        return str(plate_id)
    if layout == "export":
        n = int(rng.integers(4, 7))
        return "".join(_LOWER[i] for i in rng.integers(0, len(_LOWER), n))
    if layout == "minstrel":
        return f"0000{type_code}{int(rng.integers(0, 1_000_000)):06d}"
    raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def make_plates(seed: int, layout: str, count: int) -> list[Plate]:
    """``count`` plates with distinct barcodes, drawn from ``seed``."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    rng = np.random.default_rng([seed, 0xB0C0DE])
    plates: list[Plate] = []
    seen: set[str] = set()
    while len(plates) < count:
        plate_id = int(rng.integers(1, 100_000))
        type_code = "".join(_UPPER[i] for i in rng.integers(0, 26, 2))
        barcode = _barcode(rng, layout, plate_id, type_code)
        if barcode in seen:
            continue
        seen.add(barcode)
        setup = date(2008, 1, 1) + timedelta(days=int(rng.integers(0, 6000)))
        plates.append(Plate(len(plates), barcode, plate_id, type_code, setup))
    return plates


def inspection_date(plate: Plate, inspection: int) -> date:
    """Day of a 1-based inspection on the imager's schedule."""
    k = inspection - 1
    days = _SCHEDULE_DAYS[k] if k < len(_SCHEDULE_DAYS) else _SCHEDULE_DAYS[-1] + 60 * (k - len(_SCHEDULE_DAYS) + 1)
    return plate.setup + timedelta(days=days)


def relpath(layout: str, plate: Plate, row: int, col: int, drop: int, inspection: int, wells: int = 96) -> str:
    """Path of one image relative to the imager root.

    Args:
        row: 0-based plate row (0 = A); col: 0-based column (0 = column 1).
        drop: 1-based drop in the well; inspection: 1-based inspection number.
    """
    rows, cols = well_grid(wells)
    if not (0 <= row < rows and 0 <= col < cols):
        raise ValueError(f"well ({row}, {col}) outside a {wells}-well plate")
    if layout == "rockmaker":
        n = row * cols + col + 1
        return (f"WellImages/{plate.plate_id % 1000:03d}/plateID_{plate.plate_id}/batchID_{inspection}/"
                f"wellNum_{n}/profileID_1/d{drop}_r{drop}_ef.jpg")
    if layout == "export":
        letters = well_name(row, col + 1).rstrip("0123456789")
        bc = plate.barcode
        return f"{bc}/inspection_{inspection:02d}/{bc}_{col + 1:02d}{letters}_{drop}.jpg"
    if layout == "minstrel":
        day = inspection_date(plate, inspection).strftime("%y%m%d")
        bc = plate.barcode
        return (f"{bc}/RMM3_01_470_RGKU_Test1_Clon1_{plate.type_code}_{bc}_{inspection:03d}_{day}_"
                f"{row + 1:02d}_{col + 1:02d}_{drop:02d}_E0_99_030_001_RDI.jpg")
    raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
