"""The review app's reads: one named query per page, each a single statement served by an index.

The pages (``xtalwatch.review``) read through a read-only connection, so none of these ever waits
for the service's writer. Paths never leave this module except through :func:`image_sources`,
which the thumbnail maker needs to open the files; a page receives ids, names and numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from xtalwatch.store.catalogue import Db, fetch_rows, fetch_value
from xtalwatch.store.paths import from_db

__all__ = ["plate_summaries", "imager_names", "plate_by_barcode", "well_info", "well_timeline", "image_sources", "image_exists",
           "latest_event", "recent_events"]


def plate_summaries(db: Db, crystal_classes: Sequence[str], imager: str | None = None) -> list[dict[str, Any]]:
    """Every plate (of ``imager`` only, when given), newest image first: ``id``, ``barcode``, ``adapter``,
    ``imager`` (None for a plate from before the site), ``newest_inspection``, ``images``,
    ``last_image_at`` (Unix s) and ``hits`` (wells whose saved outcome is one of ``crystal_classes``).

    Each figure comes from the images(plate_id, inspection) index; the newest image is the plate's
    highest id (ids grow with cataloguing), so no image row is read but that one."""
    marks = ",".join("?" * len(crystal_classes)) or "NULL"
    return [dict(r) for r in fetch_rows(db, f"""
        SELECT p.id AS id, p.barcode AS barcode, p.adapter AS adapter, p.imager AS imager,
               (SELECT MAX(inspection) FROM images WHERE plate_id = p.id) AS newest_inspection,
               (SELECT COUNT(*) FROM images WHERE plate_id = p.id) AS images,
               (SELECT catalogued_at FROM images WHERE id = (SELECT MAX(id) FROM images WHERE plate_id = p.id))
                   AS last_image_at,
               (SELECT COUNT(*) FROM well_outcomes o JOIN wells w ON w.id = o.well_id
                WHERE w.plate_id = p.id AND o.label IN ({marks})) AS hits
        FROM plates p WHERE CAST(? AS TEXT) IS NULL OR p.imager = ?
        ORDER BY last_image_at DESC, p.id DESC""", (*crystal_classes, imager, imager))]


def imager_names(db: Db) -> list[str]:
    """The imagers that plates came from, sorted (plates from before the site, with none, left out)."""
    return [r[0] for r in fetch_rows(db, "SELECT DISTINCT imager FROM plates WHERE imager IS NOT NULL ORDER BY imager")]


def plate_by_barcode(db: Db, barcode: str) -> dict[str, Any] | None:
    """``id``, ``barcode`` and ``adapter`` of the plate with this barcode, or None."""
    rows = fetch_rows(db, "SELECT id, barcode, adapter FROM plates WHERE barcode = ?", (barcode,))
    return dict(rows[0]) if rows else None


def well_info(db: Db, well_id: int) -> dict[str, Any] | None:
    """``id``, ``name``, ``plate_id`` and ``barcode`` of one well, or None."""
    rows = fetch_rows(db, """SELECT w.id AS id, w.name AS name, w.plate_id AS plate_id, p.barcode AS barcode
                             FROM wells w JOIN plates p ON p.id = w.plate_id WHERE w.id = ?""", (well_id,))
    return dict(rows[0]) if rows else None


def well_timeline(db: Db, well_id: int) -> list[dict[str, Any]]:
    """Each current image of the well (a replaced file counts as its newest version), by inspection
    and drop, with its preprocessing ``flags``/``quality``/``method``/``error`` and its newest
    prediction: ``label``, ``confidence``, ``probabilities`` (dict), ``uncertain``, ``model_version``."""
    rows = fetch_rows(db, """
        SELECT i.id AS id, i.drop_no AS drop_no, i.inspection AS inspection, i.imaged_at AS imaged_at,
               i.catalogued_at AS catalogued_at, i.status AS status, i.imaging AS imaging,
               i.width AS width, i.height AS height, pp.flags AS flags, pp.result AS result, pp.error AS error,
               p.label AS label, p.confidence AS confidence, p.probabilities AS probabilities,
               p.uncertain AS uncertain, p.model_version AS model_version
        FROM images i
        LEFT JOIN preprocess pp ON pp.image_id = i.id
        LEFT JOIN predictions p ON p.id = (SELECT q.id FROM predictions q WHERE q.image_id = i.id
                                           ORDER BY q.created_at DESC, q.id DESC LIMIT 1)
        WHERE i.well_id = ? AND NOT EXISTS (SELECT 1 FROM images n WHERE n.previous_id = i.id)
        ORDER BY COALESCE(i.inspection, 0), COALESCE(i.drop_no, 0), i.id""", (well_id,))
    timeline = []
    for r in rows:
        item = {k: r[k] for k in r.keys() if k not in ("result", "probabilities")}
        result = json.loads(r["result"]) if r["result"] else {}
        item["quality"] = result.get("quality") or {}
        item["method"] = result.get("method")
        item["flags"] = [f for f in (r["flags"] or "").split(",") if f]
        item["probabilities"] = json.loads(r["probabilities"]) if r["probabilities"] else {}
        item["uncertain"] = bool(r["uncertain"])
        timeline.append(item)
    return timeline


def image_exists(db: Db, image_id: int) -> bool:
    """True when an image with this id is catalogued."""
    return fetch_value(db, "SELECT 1 FROM images WHERE id = ?", (image_id,)) is not None


def image_sources(db: Db, image_id: int) -> dict[str, Any] | None:
    """What the thumbnail maker opens: ``sha256``, ``path`` (the frame), ``crop_path`` (None when not
    cropped) and ``result`` (the preprocessing result, decoded; {} when none); None for an unknown id."""
    rows = fetch_rows(db, """SELECT i.sha256, i.path, pp.crop_path, pp.result FROM images i
                             LEFT JOIN preprocess pp ON pp.image_id = i.id WHERE i.id = ?""", (image_id,))
    if not rows:
        return None
    sha256, path, crop_path, result = rows[0]
    return {"sha256": sha256, "path": from_db(path), "crop_path": crop_path,
            "result": json.loads(result) if result else {}}


def _event(row: Any) -> dict[str, Any]:
    event = dict(row)
    event["payload"] = json.loads(event["payload"]) if event["payload"] else {}
    return event


def latest_event(db: Db, kinds: Sequence[str]) -> dict[str, Any] | None:
    """The newest event of any of ``kinds`` (``id``, ``kind``, ``created_at``, ``payload``), or None."""
    rows = fetch_rows(db, f"SELECT id, kind, created_at, payload FROM events WHERE kind IN "
                          f"({','.join('?' * len(kinds))}) ORDER BY id DESC LIMIT 1", tuple(kinds))
    return _event(rows[0]) if rows else None


def recent_events(db: Db, kinds: Sequence[str], *, after_id: int = 0, limit: int = 100,
                  imager: str | None = None) -> list[dict[str, Any]]:
    """Events of ``kinds`` stored after row ``after_id``, newest first, at most ``limit``: ``id``, ``kind``,
    ``created_at``, ``plate_id``, ``well_id``, ``image_id``, ``barcode``, ``well``, ``imager`` (the plate's)
    and ``payload``. ``imager``: only events of that imager's plates (an event with no plate is left out)."""
    rows = fetch_rows(db, f"""
        SELECT e.id AS id, e.kind AS kind, e.created_at AS created_at, e.plate_id AS plate_id,
               e.well_id AS well_id, e.image_id AS image_id, p.barcode AS barcode, w.name AS well,
               p.imager AS imager, e.payload AS payload
        FROM events e LEFT JOIN plates p ON p.id = e.plate_id LEFT JOIN wells w ON w.id = e.well_id
        WHERE e.kind IN ({','.join('?' * len(kinds))}) AND e.id > ? AND (CAST(? AS TEXT) IS NULL OR p.imager = ?)
        ORDER BY e.id DESC LIMIT ?""", (*kinds, after_id, imager, imager, limit))
    return [_event(r) for r in rows]
