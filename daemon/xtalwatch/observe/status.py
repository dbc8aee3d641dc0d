"""What the catalogue holds, for ``xtalwatch status`` and ``/api/status``; reads only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xtalwatch.alerts.events import CRYSTAL_HIT
from xtalwatch.learn.registry import current_path
from xtalwatch.store import report
from xtalwatch.store.catalogue import Catalogue, schema_version
from xtalwatch.store.events import count_events, encode_payload, event_rows
from xtalwatch.store.outcomes import wells_by_outcome

__all__ = ["collect_status"]


def collect_status(state_dir: Path, newest: int = 10, errors: int = 10) -> dict[str, Any]:
    """Counts, the newest images, the recent events and rejections, from a running or stopped service's state.

    ``newest`` images and ``errors`` events and rejections are listed. Raises ``FileNotFoundError``
    when ``state_dir`` holds no catalogue.
    """
    conn = Catalogue.open_readonly(state_dir)
    try:
        totals = report.totals(conn)
        current = current_path(state_dir)
        model = current.resolve().name if current.exists() else None
        return {
            "state_dir": str(state_dir),
            "model": model,
            "model_status": f"serving {model}" if model else "no model yet",
            "predictions_total": totals["predictions"],
            "hits_total": count_events(conn, CRYSTAL_HIT),
            "wells_by_outcome": wells_by_outcome(conn),
            "recent_events": [{"kind": e["kind"], "created_at": e["created_at"], "payload": encode_payload(e["payload"])}
                              for e in event_rows(conn, limit=errors)],
            "schema_version": schema_version(conn),
            "images_total": totals["images"],
            "files_total": totals["files"],
            "rejected_total": totals["rejected"],
            "rejected_by_reason": report.rejected_by_reason(conn),
            "images_by_status": report.images_by_status(conn),
            "flagged_by_flag": report.flagged_by_flag(conn),
            "failed_by_reason": report.failed_by_reason(conn),
            "plates": report.plate_barcodes(conn),
            "wells_total": totals["wells"],
            "unassigned_total": totals["unassigned"],
            "newest_images": report.newest_images(conn, newest),
            "recent_errors": report.recent_rejections(conn, errors),
        }
    finally:
        conn.close()
