"""What an instrument adapter says about an image: plate, well, drop, inspection, imaging mode.

Well names are normalised to row letters and an unpadded column (``A1``, ``H12``, ``P24``,
``AF48``), so that every adapter agrees on what a well is called, whatever the instrument wrote.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = ["ImageIdentity", "Imaging", "PLATE_FORMATS", "well_name", "well_from_index", "well_position", "row_letters",
           "parse_well", "UNASSIGNED"]

Imaging = Literal["visible", "uv", "other"]

UNASSIGNED = "unassigned"

# wells per plate -> (rows, columns); 1536-well plates have 32 rows (A..Z, AA..AF) of 48.
PLATE_FORMATS: dict[int, tuple[int, int]] = {24: (4, 6), 48: (6, 8), 96: (8, 12), 384: (16, 24), 1536: (32, 48)}

_WELL_RE = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,2})$")


def _row_letters(row: int) -> str:
    """Row index (0-based) to letters: 0 -> A, 25 -> Z, 26 -> AA, 31 -> AF."""
    if row < 0 or row >= 32:
        raise ValueError(f"row index {row} outside A..AF")
    return chr(ord("A") + row) if row < 26 else "A" + chr(ord("A") + row - 26)


def _row_index(letters: str) -> int:
    letters = letters.upper()
    if len(letters) == 1:
        return ord(letters) - ord("A")
    if letters[0] == "A" and "A" <= letters[1] <= "F":
        return 26 + ord(letters[1]) - ord("A")
    raise ValueError(f"row {letters!r} is not a plate row (A..Z, AA..AF)")


def well_name(row: int, column: int) -> str:
    """Well name from a 0-based row and a 1-based column: (0, 1) -> "A1"."""
    if not 1 <= column <= 48:
        raise ValueError(f"column {column} outside 1..48")
    return f"{_row_letters(row)}{column}"


def well_from_index(index: int, wells: int = 96) -> str:
    """Well name from a 1-based row-major index on a plate of ``wells`` wells: 13 on 96 -> "B1"."""
    if wells not in PLATE_FORMATS:
        raise ValueError(f"unknown plate format {wells}; known: {sorted(PLATE_FORMATS)}")
    rows, cols = PLATE_FORMATS[wells]
    if not 1 <= index <= rows * cols:
        raise ValueError(f"well number {index} outside 1..{rows * cols} for a {wells}-well plate")
    row, col = divmod(index - 1, cols)
    return well_name(row, col + 1)


def well_position(name: str) -> tuple[int, int]:
    """0-based row and 1-based column of a well name: "B7" -> (1, 7), "AA1" -> (26, 1)."""
    match = _WELL_RE.match(name.strip())
    if not match:
        raise ValueError(f"{name!r} is not a well name")
    return _row_index(match.group(1)), int(match.group(2))


def row_letters(row: int) -> str:
    """Row label from a 0-based index: 0 -> "A", 26 -> "AA"."""
    return _row_letters(row)


def parse_well(text: str) -> str:
    """Normalise ``"a01"``, ``"A1"`` or ``"AF48"`` to the canonical name; ValueError otherwise."""
    match = _WELL_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a well name")
    return well_name(_row_index(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class ImageIdentity:
    """Where an image comes from on the plate, as an adapter read it from the path."""

    plate: str
    well: str | None
    drop: int | None = None
    inspection: int | None = None
    imaged_at: datetime | None = None
    imaging: Imaging = "visible"
    adapter: str = ""
    note: str | None = None  # why the identity is partial, e.g. the reason for "unassigned"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["imaged_at"] = self.imaged_at.isoformat() if self.imaged_at else None
        return data
