"""Counts and listings for people: what ``xtalwatch status``, ``/api/status`` and the demo's summary show.

Reads only, so each works on a read-only connection to a stopped service's catalogue. On a site
(several imagers sharing one catalogue), ``imager`` narrows a count to one imager's plates and
images; None counts them all. Rows from before the site (no imager) count only under None.
Rejected files carry no imager, so their counts are always the whole site's.
"""

from __future__ import annotations

from typing import Any

from xtalwatch.plate import UNASSIGNED
from xtalwatch.store.catalogue import Db, fetch_rows, fetch_value
from xtalwatch.store.paths import shown

__all__ = ["totals", "rejected_by_reason", "images_by_status", "flagged_by_flag", "failed_by_reason",
           "plate_barcodes", "newest_images", "recent_rejections", "images_past_preprocessing", "images_by_imager"]


def _of_imager(column: str) -> str:
    """The condition "``column`` is the asked imager, or none was asked"; its parameters are ``(imager, imager)``.

    PostgreSQL cannot type a bare ``? IS NULL``, hence the cast."""
    return f"(CAST(? AS TEXT) IS NULL OR {column} = ?)"


def totals(db: Db, imager: str | None = None) -> dict[str, int]:
    """Row counts: ``images``, ``files``, ``rejected`` (the whole site's), ``predictions``, ``wells``, and
    ``unassigned`` (images on no known plate); of ``imager`` only when given."""
    image_of = f"IN (SELECT id FROM images WHERE {_of_imager('imager')})"
    row = fetch_rows(db, f"""
        SELECT (SELECT COUNT(*) FROM images i WHERE {_of_imager('i.imager')}) AS images,
               (SELECT COUNT(*) FROM files f WHERE f.image_id {image_of}) AS files,
               (SELECT COUNT(*) FROM rejected) AS rejected,
               (SELECT COUNT(*) FROM predictions pr WHERE pr.image_id {image_of}) AS predictions,
               (SELECT COUNT(*) FROM wells w JOIN plates p ON p.id = w.plate_id WHERE {_of_imager('p.imager')}) AS wells,
               (SELECT COUNT(*) FROM images i JOIN plates p ON p.id = i.plate_id
                WHERE p.barcode = ? AND {_of_imager('i.imager')}) AS unassigned
        """, (imager,) * 8 + (UNASSIGNED, imager, imager))[0]
    return {key: int(row[key]) for key in row.keys()}


def rejected_by_reason(db: Db) -> dict[str, int]:
    """Rejected files per reason, most common first."""
    return {r["reason"]: r["n"] for r in fetch_rows(
        db, "SELECT reason, COUNT(*) AS n FROM rejected GROUP BY reason ORDER BY n DESC")}


def images_by_status(db: Db, imager: str | None = None) -> dict[str, int]:
    """Images per status (``catalogued``, ``preprocessed``, ``flagged``, ``failed``)."""
    return {r["status"]: r["n"] for r in fetch_rows(
        db, f"SELECT status, COUNT(*) AS n FROM images WHERE {_of_imager('imager')} GROUP BY status", (imager, imager))}


def flagged_by_flag(db: Db, imager: str | None = None) -> dict[str, int]:
    """Preprocessed images per quality flag (an image with two flags counts under both)."""
    counts: dict[str, int] = {}
    for row in fetch_rows(db, f"""SELECT pp.flags AS flags FROM preprocess pp JOIN images i ON i.id = pp.image_id
                                  WHERE pp.flags != '' AND {_of_imager('i.imager')}""", (imager, imager)):
        for flag in row["flags"].split(","):
            counts[flag] = counts.get(flag, 0) + 1
    return counts


def failed_by_reason(db: Db, imager: str | None = None) -> dict[str, int]:
    """Images preprocessing could not handle, per error."""
    return {r["error"]: r["n"] for r in fetch_rows(db, f"""
        SELECT pp.error AS error, COUNT(*) AS n FROM preprocess pp JOIN images i ON i.id = pp.image_id
        WHERE pp.error IS NOT NULL AND {_of_imager('i.imager')} GROUP BY pp.error""", (imager, imager))}


def plate_barcodes(db: Db, imager: str | None = None) -> list[str]:
    """Every plate's barcode (of ``imager`` only, when given), sorted."""
    return [r[0] for r in fetch_rows(
        db, f"SELECT barcode FROM plates WHERE {_of_imager('imager')} ORDER BY barcode", (imager, imager))]


def newest_images(db: Db, limit: int = 10, imager: str | None = None) -> list[dict[str, Any]]:
    """The last ``limit`` images catalogued, newest first: ``id``, ``path`` (shown: bytes that are not UTF-8
    as ``\\xNN``, see ``store/paths.py``), ``plate``, ``well``, ``drop``,
    ``inspection``, ``version``, ``status``, ``catalogued_at`` (Unix s), ``imager`` (None before the site)."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return [{**dict(r), "path": shown(r["path"])} for r in fetch_rows(db, f"""
        SELECT i.id AS id, i.path AS path, p.barcode AS plate, w.name AS well, i.drop_no AS "drop",
               i.inspection AS inspection, i.version AS version, i.status AS status,
               i.catalogued_at AS catalogued_at, i.imager AS imager
        FROM images i JOIN plates p ON p.id = i.plate_id LEFT JOIN wells w ON w.id = i.well_id
        WHERE {_of_imager('i.imager')}
        ORDER BY i.id DESC LIMIT ?""", (imager, imager, limit))]


def recent_rejections(db: Db, limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` files most recently rejected: ``path``, ``reason``, ``detail``, ``last_seen`` (Unix s), ``attempts``."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return [{**dict(r), "path": shown(r["path"])} for r in fetch_rows(
        db, "SELECT path, reason, detail, last_seen, attempts FROM rejected ORDER BY last_seen DESC LIMIT ?", (limit,))]


def images_past_preprocessing(db: Db) -> int:
    """Images preprocessing is done with (preprocessed, flagged or failed)."""
    return int(fetch_value(db, "SELECT COUNT(*) FROM images WHERE status != 'catalogued'"))


def images_by_imager(db: Db) -> list[dict[str, Any]]:
    """Per imager of the site: ``imager`` (None: images from before the site), ``images`` and
    ``last_image_at`` (Unix s), sorted by name with None last."""
    rows = fetch_rows(db, "SELECT imager, COUNT(*) AS images, MAX(catalogued_at) AS last_image_at "
                          "FROM images GROUP BY imager")
    # Sorted here: SQLite and PostgreSQL put NULL at opposite ends.
    return sorted((dict(r) for r in rows), key=lambda r: (r["imager"] is None, r["imager"] or ""))
