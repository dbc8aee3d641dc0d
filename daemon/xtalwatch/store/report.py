"""Counts and listings for people: what ``xtalwatch status``, ``/api/status`` and the demo's summary show.

Reads only, so each works on a read-only connection to a stopped service's catalogue.
"""

from __future__ import annotations

from typing import Any

from xtalwatch.plate import UNASSIGNED
from xtalwatch.store.catalogue import Db, fetch_rows, fetch_value
from xtalwatch.store.paths import shown

__all__ = ["totals", "rejected_by_reason", "images_by_status", "flagged_by_flag", "failed_by_reason",
           "plate_barcodes", "newest_images", "recent_rejections", "images_past_preprocessing"]

def totals(db: Db) -> dict[str, int]:
    """Row counts: ``images``, ``files``, ``rejected``, ``predictions``, ``wells``, and ``unassigned``
    (images on no known plate)."""
    row = fetch_rows(db, """
        SELECT (SELECT COUNT(*) FROM images) AS images, (SELECT COUNT(*) FROM files) AS files,
               (SELECT COUNT(*) FROM rejected) AS rejected, (SELECT COUNT(*) FROM predictions) AS predictions,
               (SELECT COUNT(*) FROM wells) AS wells,
               (SELECT COUNT(*) FROM images i JOIN plates p ON p.id = i.plate_id WHERE p.barcode = ?) AS unassigned
        """, (UNASSIGNED,))[0]
    return {key: int(row[key]) for key in row.keys()}


def rejected_by_reason(db: Db) -> dict[str, int]:
    """Rejected files per reason, most common first."""
    return {r["reason"]: r["n"] for r in fetch_rows(
        db, "SELECT reason, COUNT(*) AS n FROM rejected GROUP BY reason ORDER BY n DESC")}


def images_by_status(db: Db) -> dict[str, int]:
    """Images per status (``catalogued``, ``preprocessed``, ``flagged``, ``failed``)."""
    return {r["status"]: r["n"] for r in fetch_rows(db, "SELECT status, COUNT(*) AS n FROM images GROUP BY status")}


def flagged_by_flag(db: Db) -> dict[str, int]:
    """Preprocessed images per quality flag (an image with two flags counts under both)."""
    counts: dict[str, int] = {}
    for row in fetch_rows(db, "SELECT flags FROM preprocess WHERE flags != ''"):
        for flag in row["flags"].split(","):
            counts[flag] = counts.get(flag, 0) + 1
    return counts


def failed_by_reason(db: Db) -> dict[str, int]:
    """Images preprocessing could not handle, per error."""
    return {r["error"]: r["n"] for r in fetch_rows(
        db, "SELECT error, COUNT(*) AS n FROM preprocess WHERE error IS NOT NULL GROUP BY error")}


def plate_barcodes(db: Db) -> list[str]:
    """Every plate's barcode, sorted."""
    return [r[0] for r in fetch_rows(db, "SELECT barcode FROM plates ORDER BY barcode")]


def newest_images(db: Db, limit: int = 10) -> list[dict[str, Any]]:
    """The last ``limit`` images catalogued, newest first: ``id``, ``path`` (shown: bytes that are not UTF-8
    as ``\\xNN``, see ``store/paths.py``), ``plate``, ``well``, ``drop``,
    ``inspection``, ``version``, ``status``, ``catalogued_at`` (Unix s)."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return [{**dict(r), "path": shown(r["path"])} for r in fetch_rows(db, """
        SELECT i.id AS id, i.path AS path, p.barcode AS plate, w.name AS well, i.drop_no AS "drop",
               i.inspection AS inspection, i.version AS version, i.status AS status, i.catalogued_at AS catalogued_at
        FROM images i JOIN plates p ON p.id = i.plate_id LEFT JOIN wells w ON w.id = i.well_id
        ORDER BY i.id DESC LIMIT ?""", (limit,))]


def recent_rejections(db: Db, limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` files most recently rejected: ``path``, ``reason``, ``detail``, ``last_seen`` (Unix s), ``attempts``."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return [{**dict(r), "path": shown(r["path"])} for r in fetch_rows(
        db, "SELECT path, reason, detail, last_seen, attempts FROM rejected ORDER BY last_seen DESC LIMIT ?", (limit,))]


def images_past_preprocessing(db: Db) -> int:
    """Images preprocessing is done with (preprocessed, flagged or failed)."""
    return int(fetch_value(db, "SELECT COUNT(*) FROM images WHERE status != 'catalogued'"))
