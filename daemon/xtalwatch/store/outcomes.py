"""Per-well outcomes: the calls the rule reads and the ``well_outcomes`` table it keeps current.

The rule itself is pure and lives in ``stages/well_outcome.py``; these are its reads and writes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from xtalwatch.store.catalogue import Db, fetch_rows, fetch_value, writing

__all__ = ["well_calls", "plate_calls", "PLATE_CALL_FIELDS", "plate_wells", "plate_inspections", "wells_of_images", "stored_outcome",
           "save_outcome", "plate_outcomes", "wells_by_outcome"]

# Column names are ``well_outcome.Call``'s field names, so that a row is a ``Call(**row)``.
_CALL_COLUMNS = """
p.label AS label, p.confidence AS confidence, i.drop_no AS "drop", i.inspection AS inspection,
CASE WHEN i.status = 'flagged' OR COALESCE(pp.flags, '') != '' THEN 1 ELSE 0 END AS flagged, i.catalogued_at AS seen_at,
i.id AS image_id, i.path AS image_path, pl.barcode AS plate, w.name AS well,
i.plate_id AS plate_id, i.well_id AS well_id, p.model_version AS model_version, p.uncertain AS uncertain
"""
_CALLS_SQL = f"""
SELECT {_CALL_COLUMNS}
FROM images i
JOIN plates pl ON pl.id = i.plate_id
JOIN wells w ON w.id = i.well_id
JOIN predictions p ON p.image_id = i.id
LEFT JOIN preprocess pp ON pp.image_id = i.id
WHERE i.well_id = ?
  AND (CAST(? AS TEXT) IS NULL OR i.imaging = ?)
  AND NOT EXISTS (SELECT 1 FROM images newer WHERE newer.previous_id = i.id)
  AND p.id = (SELECT q.id FROM predictions q WHERE q.image_id = i.id AND (CAST(? AS TEXT) IS NULL OR q.model_version = ?)
              ORDER BY q.created_at DESC, q.id DESC LIMIT 1)
"""


def well_calls(db: Db, well_id: int, *, model_version: str | None = None,
               imaging: str | None = "visible") -> list[dict[str, Any]]:
    """Every classified image of one well, one dict per image with ``Call``'s fields.

    Each image contributes its newest prediction, or the one by ``model_version`` when given
    (images that model has not classified yet are then left out). A file replaced by a newer
    version counts only as the newer one. ``imaging`` keeps one imaging mode (None: all).
    ``flagged`` is True for an image flagged by preprocessing or carrying any quality flag.
    """
    return _call_dicts(fetch_rows(db, _CALLS_SQL, (well_id, imaging, imaging, model_version, model_version)))


def _call_dicts(rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
    """Rows of ``_CALL_COLUMNS`` as dicts, with SQLite's 0/1 as bools (a plate has thousands: keys read once)."""
    if not rows:
        return []
    keys = rows[0].keys()
    out = []
    for row in rows:
        call = dict(zip(keys, row, strict=True))
        call["flagged"], call["uncertain"] = bool(call["flagged"]), bool(call["uncertain"])
        out.append(call)
    return out


# The plate map's read, one statement for the whole plate: the plate's images through the
# images(plate_id, inspection) index, a newer file version looked up in images(previous_id), and
# each image's newest prediction as one probe of the covering index predictions(image_id,
# created_at). Measured at a 1,536-well plate among 100,000 images (4 inspections, 2 models), this
# probe per image takes half the time of a ROW_NUMBER() window over the plate's predictions (which
# sorts them in a temporary b-tree), and a MAX-join is 20 times slower (it scans the index).
_PLATE_CALLS_SQL = """
SELECT p.label, p.confidence, i.drop_no, i.inspection,
       CASE WHEN i.status = 'flagged' OR COALESCE(pp.flags, '') != '' THEN 1 ELSE 0 END,
       i.catalogued_at, i.id, i.well_id, p.model_version, COALESCE(p.uncertain, 0)
FROM images i
LEFT JOIN predictions p ON p.id = (SELECT q.id FROM predictions q WHERE q.image_id = i.id
                                   ORDER BY q.created_at DESC, q.id DESC LIMIT 1)
LEFT JOIN preprocess pp ON pp.image_id = i.id
WHERE i.plate_id = ? AND i.well_id IS NOT NULL AND (CAST(? AS INTEGER) IS NULL OR i.inspection <= ?)
  AND (CAST(? AS TEXT) IS NULL OR i.imaging = ?)
  AND NOT EXISTS (SELECT 1 FROM images newer WHERE newer.previous_id = i.id)
"""
# The order of ``plate_calls``' columns. Tuples, not dicts: a 1,536-well plate has thousands of rows and
# the plate map's time budget is 300 ms.
PLATE_CALL_FIELDS = ("label", "confidence", "drop", "inspection", "flagged", "seen_at", "image_id", "well_id",
                     "model_version", "uncertain")


def plate_calls(db: Db, plate_id: int, *, inspection: int | None = None,
                imaging: str | None = "visible") -> list[tuple[Any, ...]]:
    """Every image of one plate in a well, as tuples in ``PLATE_CALL_FIELDS`` order, in one read.

    As ``well_calls`` (newest file version, newest prediction, ``imaging`` mode), but for the whole
    plate, and an image no model classified is included with ``label`` None (it counts as an image
    of its well, flagged or waiting). ``inspection`` keeps numbered inspections up to that one.
    """
    return [tuple(r) for r in fetch_rows(db, _PLATE_CALLS_SQL, (plate_id, inspection, inspection, imaging, imaging))]


def plate_wells(db: Db, plate_id: int) -> dict[int, str]:
    """id → name of each well of the plate that the catalogue knows (those some image named)."""
    return {int(r[0]): r[1] for r in fetch_rows(db, "SELECT id, name FROM wells WHERE plate_id = ? ORDER BY id",
                                                (plate_id,))}


def plate_inspections(db: Db, plate_id: int) -> list[int]:
    """The numbered inspections of the plate's images, ascending (for the plate map's selector)."""
    rows = fetch_rows(db, "SELECT DISTINCT inspection FROM images WHERE plate_id = ? AND inspection IS NOT NULL "
                          "ORDER BY inspection", (plate_id,))
    return [int(r[0]) for r in rows]


def wells_of_images(db: Db, image_ids: Iterable[int]) -> list[int]:
    """The wells (ids, ascending) that hold any of ``image_ids``; images with no well are left out."""
    ids = sorted(set(image_ids))
    if not ids:
        return []
    rows = fetch_rows(db, f"SELECT DISTINCT well_id FROM images WHERE well_id IS NOT NULL "
                          f"AND id IN ({','.join('?' * len(ids))}) ORDER BY well_id", ids)
    return [int(r[0]) for r in rows]


def stored_outcome(db: Db, well_id: int) -> str | None:
    """The well's outcome as last saved; None when none was, or it had no reliable call."""
    return fetch_value(db, "SELECT label FROM well_outcomes WHERE well_id=?", (well_id,))


def save_outcome(db: Db, well_id: int, label: str | None, confidence: float | None, image_id: int | None,
                 model_version: str | None) -> None:
    """Make this the well's current outcome (``label`` None: no reliable call yet)."""
    with writing(db) as conn:
        conn.execute(
            """INSERT INTO well_outcomes (well_id, label, confidence, image_id, model_version, updated_at)
               VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(well_id) DO UPDATE SET label=excluded.label,
               confidence=excluded.confidence, image_id=excluded.image_id,
               model_version=excluded.model_version, updated_at=excluded.updated_at""",
            (well_id, label, confidence, image_id, model_version, time.time()))


def plate_outcomes(db: Db, plate: str) -> list[dict[str, Any]]:
    """Each well of the plate with a barcode ``plate``: ``well`` (name), ``label`` and ``confidence``
    of its saved outcome (None when none), ``images`` and how many of them are ``flagged``."""
    rows = fetch_rows(db, """
        SELECT w.name AS well, o.label AS label, o.confidence AS confidence,
               COALESCE(SUM(CASE WHEN i.status = 'flagged' THEN 1 ELSE 0 END), 0) AS flagged, COUNT(i.id) AS images
        FROM wells w JOIN plates p ON p.id = w.plate_id
        LEFT JOIN well_outcomes o ON o.well_id = w.id
        LEFT JOIN images i ON i.well_id = w.id
        WHERE p.barcode = ? GROUP BY w.id, w.name, o.label, o.confidence""", (plate,))
    return [dict(r) for r in rows]


def wells_by_outcome(db: Db, imager: str | None = None) -> dict[str, int]:
    """How many wells have each saved outcome, most common first (wells with none left out); ``imager``'s only when given."""
    rows = fetch_rows(db, """
        SELECT o.label AS label, COUNT(*) AS n FROM well_outcomes o
        WHERE o.label IS NOT NULL AND (CAST(? AS TEXT) IS NULL OR o.well_id IN (
            SELECT w.id FROM wells w JOIN plates p ON p.id = w.plate_id WHERE p.imager = ?))
        GROUP BY o.label ORDER BY n DESC""", (imager, imager))
    return {r["label"]: r["n"] for r in rows}
