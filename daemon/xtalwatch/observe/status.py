"""What the catalogue holds, for ``xtalwatch status`` and ``/api/status``; reads only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xtalwatch.learn.registry import current_path
from xtalwatch.store.catalogue import Catalogue

__all__ = ["collect_status"]


def collect_status(state_dir: Path, newest: int = 10, errors: int = 10) -> dict[str, Any]:
    """Counts, the newest images and the most recent rejections, from a running or stopped service's state."""
    conn = Catalogue.open_readonly(state_dir)
    try:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        by_reason = {r["reason"]: r["n"] for r in conn.execute(
            "SELECT reason, COUNT(*) AS n FROM rejected GROUP BY reason ORDER BY n DESC")}
        by_status = {r["status"]: r["n"] for r in conn.execute(
            "SELECT status, COUNT(*) AS n FROM images GROUP BY status")}
        flags: dict[str, int] = {}
        for row in conn.execute("SELECT flags FROM preprocess WHERE flags != ''"):
            for flag in row["flags"].split(","):
                flags[flag] = flags.get(flag, 0) + 1
        failed = {r["error"]: r["n"] for r in conn.execute(
            "SELECT error, COUNT(*) AS n FROM preprocess WHERE error IS NOT NULL GROUP BY error")}
        newest_rows = conn.execute(
            """SELECT i.id, i.path, p.barcode AS plate, w.name AS well, i.drop_no AS drop_, i.inspection,
                      i.version, i.status, i.catalogued_at
               FROM images i JOIN plates p ON p.id = i.plate_id LEFT JOIN wells w ON w.id = i.well_id
               ORDER BY i.id DESC LIMIT ?""", (newest,)).fetchall()
        error_rows = conn.execute(
            "SELECT path, reason, detail, last_seen, attempts FROM rejected ORDER BY last_seen DESC LIMIT ?",
            (errors,)).fetchall()
        current = current_path(state_dir)
        model = current.resolve().name if current.exists() else None
        hits = one("SELECT COUNT(*) FROM events WHERE kind = 'crystal_hit'")
        by_class = {r["label"]: r["n"] for r in conn.execute(
            "SELECT label, COUNT(*) AS n FROM well_outcomes WHERE label IS NOT NULL GROUP BY label ORDER BY n DESC")}
        events = [dict(r) for r in conn.execute(
            "SELECT kind, created_at, payload FROM events ORDER BY id DESC LIMIT ?", (errors,))]
        return {
            "state_dir": str(state_dir),
            "model": model,
            "model_status": f"serving {model}" if model else "no model yet",
            "predictions_total": one("SELECT COUNT(*) FROM predictions"),
            "hits_total": hits,
            "wells_by_outcome": by_class,
            "recent_events": events,
            "schema_version": one("PRAGMA user_version"),
            "images_total": one("SELECT COUNT(*) FROM images"),
            "files_total": one("SELECT COUNT(*) FROM files"),
            "rejected_total": one("SELECT COUNT(*) FROM rejected"),
            "rejected_by_reason": by_reason,
            "images_by_status": by_status,
            "flagged_by_flag": flags,
            "failed_by_reason": failed,
            "plates": [r[0] for r in conn.execute("SELECT barcode FROM plates ORDER BY barcode")],
            "wells_total": one("SELECT COUNT(*) FROM wells"),
            "unassigned_total": one(
                "SELECT COUNT(*) FROM images i JOIN plates p ON p.id=i.plate_id WHERE p.barcode='unassigned'"),
            "newest_images": [
                {"id": r["id"], "path": r["path"], "plate": r["plate"], "well": r["well"], "drop": r["drop_"],
                 "inspection": r["inspection"], "version": r["version"], "status": r["status"],
                 "catalogued_at": r["catalogued_at"]} for r in newest_rows],
            "recent_errors": [dict(r) for r in error_rows],
        }
    finally:
        conn.close()
