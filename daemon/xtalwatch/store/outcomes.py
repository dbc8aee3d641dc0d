"""Per-well outcomes: the calls the rule reads and the ``well_outcomes`` table it keeps current.

The rule itself is pure and lives in ``stages/well_outcome.py``; these are its reads and writes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from xtalwatch.store.catalogue import Db, fetch_rows, fetch_value, writing

__all__ = ["well_calls", "wells_of_images", "stored_outcome", "save_outcome", "plate_outcomes", "wells_by_outcome"]

# Column names are ``well_outcome.Call``'s field names, so that a row is a ``Call(**row)``.
_CALLS_SQL = """
SELECT p.label AS label, p.confidence AS confidence, i.drop_no AS "drop", i.inspection AS inspection,
       (i.status = 'flagged' OR COALESCE(pp.flags, '') != '') AS flagged, i.catalogued_at AS seen_at,
       i.id AS image_id, i.path AS image_path, pl.barcode AS plate, w.name AS well,
       i.plate_id AS plate_id, i.well_id AS well_id, p.model_version AS model_version
FROM images i
JOIN plates pl ON pl.id = i.plate_id
JOIN wells w ON w.id = i.well_id
JOIN predictions p ON p.image_id = i.id
LEFT JOIN preprocess pp ON pp.image_id = i.id
WHERE i.well_id = ?
  AND (? IS NULL OR i.imaging = ?)
  AND NOT EXISTS (SELECT 1 FROM images newer WHERE newer.previous_id = i.id)
  AND p.id = (SELECT q.id FROM predictions q WHERE q.image_id = i.id AND (? IS NULL OR q.model_version = ?)
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
    rows = fetch_rows(db, _CALLS_SQL, (well_id, imaging, imaging, model_version, model_version))
    return [{**dict(r), "flagged": bool(r["flagged"])} for r in rows]


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
               COALESCE(SUM(i.status = 'flagged'), 0) AS flagged, COUNT(i.id) AS images
        FROM wells w JOIN plates p ON p.id = w.plate_id
        LEFT JOIN well_outcomes o ON o.well_id = w.id
        LEFT JOIN images i ON i.well_id = w.id
        WHERE p.barcode = ? GROUP BY w.id""", (plate,))
    return [dict(r) for r in rows]


def wells_by_outcome(db: Db) -> dict[str, int]:
    """How many wells have each saved outcome, most common first (wells with none left out)."""
    rows = fetch_rows(db, "SELECT label, COUNT(*) AS n FROM well_outcomes WHERE label IS NOT NULL "
                          "GROUP BY label ORDER BY n DESC")
    return {r["label"]: r["n"] for r in rows}
