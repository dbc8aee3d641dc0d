"""Plate maps: each well's current outcome, as text for a terminal and as a PNG for people.

Pure functions of ``{well name: (outcome class, confidence)}``; reading the outcomes from the
catalogue is ``well_outcomes``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from xtalwatch.plate import PLATE_FORMATS, row_letters, well_position
from xtalwatch.store.catalogue import Db
from xtalwatch.store.outcomes import plate_outcomes

__all__ = ["plate_map_text", "plate_map_png", "well_outcomes", "COLOURS", "SYMBOLS"]

# BGR colours and one-letter symbols per outcome; crystal habits share the crystal hue.
COLOURS: dict[str, tuple[int, int, int]] = {
    "clear": (225, 225, 225), "precipitate": (70, 110, 160), "other": (160, 160, 160), "dark": (60, 60, 60),
    "crystals": (40, 180, 40), "needles": (40, 200, 120), "plates": (40, 160, 40), "prisms": (20, 120, 20),
    "microcrystals": (110, 200, 170), "flagged": (120, 120, 255), "uncertain": (200, 160, 220), "none": (255, 255, 255),
}
SYMBOLS = {"clear": ".", "precipitate": "p", "other": "o", "dark": "d", "crystals": "X", "needles": "N",
           "plates": "P", "prisms": "R", "microcrystals": "m", "flagged": "!", "uncertain": "?", "none": " "}


def _grid(wells: int) -> tuple[int, int]:
    return PLATE_FORMATS.get(wells, (8, 12))


def _position(name: str) -> tuple[int, int]:
    row, column = well_position(name)
    return row, column - 1


def plate_map_text(outcomes: dict[str, tuple[str, float]], wells: int = 96) -> str:
    """A terminal grid, one symbol per well, with a legend of the symbols used."""
    rows, cols = _grid(wells)
    grid = [[" "] * cols for _ in range(rows)]
    for name, (label, _conf) in outcomes.items():
        r, c = _position(name)
        if r < rows and c < cols:
            grid[r][c] = SYMBOLS.get(label, "*")
    header = "    " + "".join(f"{c + 1:>3}" for c in range(cols))
    lines = [header] + [f" {row_letters(r):>2} " + "".join(f"{s:>3}" for s in grid[r]) for r in range(rows)]
    used = sorted({label for label, _ in outcomes.values()})
    lines.append("  " + "  ".join(f"{SYMBOLS.get(u, '*')} {u}" for u in used))
    return "\n".join(lines)


def plate_map_png(outcomes: dict[str, tuple[str, float]], path: Path, title: str, wells: int = 96,
                  cell: int = 44) -> Path:
    """Draw the plate: a disc per well coloured by outcome, shaded by confidence, with a legend."""
    rows, cols = _grid(wells)
    margin, legend_h = 40, 60
    width, height = margin + cols * cell + 10, margin + rows * cell + legend_h
    image = np.full((height, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title, (8, 16), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for c in range(cols):
        cv2.putText(image, str(c + 1), (margin + c * cell + cell // 3, margin - 6), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for r in range(rows):
        cv2.putText(image, row_letters(r), (6, margin + r * cell + cell // 2 + 5), font, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    for r in range(rows):
        for c in range(cols):
            centre = (margin + c * cell + cell // 2, margin + r * cell + cell // 2)
            cv2.circle(image, centre, cell // 2 - 3, (200, 200, 200), 1, cv2.LINE_AA)
    for name, (label, conf) in outcomes.items():
        r, c = _position(name)
        if r >= rows or c >= cols:
            continue
        colour = np.array(COLOURS.get(label, (0, 0, 255)), np.float32)
        shade = 0.45 + 0.55 * float(np.clip(conf, 0, 1))
        colour = tuple(int(v) for v in (255 - (255 - colour) * shade))
        centre = (margin + c * cell + cell // 2, margin + r * cell + cell // 2)
        cv2.circle(image, centre, cell // 2 - 4, colour, -1, cv2.LINE_AA)
        cv2.putText(image, SYMBOLS.get(label, "*"), (centre[0] - 5, centre[1] + 5), font, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    x = 8
    for label in sorted({label for label, _ in outcomes.values()}):
        y = height - legend_h // 2
        cv2.circle(image, (x + 8, y - 4), 7, COLOURS.get(label, (0, 0, 255)), -1, cv2.LINE_AA)
        cv2.putText(image, label, (x + 20, y), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 30 + 9 * len(label)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return path


def well_outcomes(db: Db, plate: str) -> dict[str, tuple[str, float]]:
    """Each well's current outcome (the per-well rule's, kept by the service); wells with only
    quality-flagged frames show as ``flagged``, wells with no reliable call yet as ``uncertain``.

    ``db`` is a catalogue or a (read-only) connection to one; ``plate`` a barcode.
    """
    out: dict[str, tuple[str, float]] = {}
    for row in plate_outcomes(db, plate):
        if row["label"] is not None:
            out[row["well"]] = (row["label"], float(row["confidence"] or 0.0))
        elif row["images"] and row["flagged"] == row["images"]:
            out[row["well"]] = ("flagged", 1.0)
        elif row["images"]:
            out[row["well"]] = ("uncertain", 0.5)
    return out
