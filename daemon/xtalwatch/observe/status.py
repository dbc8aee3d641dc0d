"""What the catalogue holds, for ``xtalwatch status`` and ``/api/status``; reads only."""

from __future__ import annotations

from typing import Any

from xtalwatch.alerts.events import CRYSTAL_HIT
from xtalwatch.config import Settings
from xtalwatch.learn.registry import current_path
from xtalwatch.store import report
from xtalwatch.store.catalogue import SCHEMA_VERSION, Catalogue, Db, schema_version
from xtalwatch.store.errors import CatalogueDamaged
from xtalwatch.store.events import count_events, encode_payload, event_rows
from xtalwatch.store.outcomes import wells_by_outcome
from xtalwatch.store.work import live_agents

__all__ = ["collect_status", "NO_IMAGER"]

NO_IMAGER = "-"  # how images from before the site (stored with no imager) are listed; no imager name can be "-"


def collect_status(settings: Settings, *, imager: str | None = None, newest: int = 10,
                   errors: int = 10) -> dict[str, Any]:
    """Counts, the newest images, the recent events and rejections, from a running or stopped service's catalogue.

    ``imager`` narrows the image, plate, well and prediction counts and the newest images to that
    imager's. Rejected files carry no imager and events are the site's, so ``rejected_*``,
    ``recent_errors``, ``recent_events`` and ``hits_total`` always cover the whole site. ``imagers`` is the site section, never narrowed: see :func:`_site`.
    ``newest`` images and ``errors`` events and rejections are listed. Raises ``FileNotFoundError``
    when the state folder holds no SQLite catalogue.
    """
    conn = Catalogue.readonly_for(settings)
    try:
        version = schema_version(conn)
        if version < SCHEMA_VERSION:  # read-only: the service, at its next start, moves it forward
            raise CatalogueDamaged(f"the catalogue is at schema version {version} and this xtalwatch reads "
                                   f"{SCHEMA_VERSION}: start the service once to move it forward")
        totals = report.totals(conn, imager)
        current = current_path(settings.state.dir)
        model = current.resolve().name if current.exists() else None
        return {
            "state_dir": str(settings.state.dir),
            "imager": imager,
            "model": model,
            "model_status": f"serving {model}" if model else "no model yet",
            "predictions_total": totals["predictions"],
            "hits_total": count_events(conn, CRYSTAL_HIT),
            "wells_by_outcome": wells_by_outcome(conn, imager),
            "recent_events": [{"kind": e["kind"], "created_at": e["created_at"], "payload": encode_payload(e["payload"])}
                              for e in event_rows(conn, limit=errors)],
            "schema_version": schema_version(conn),
            "images_total": totals["images"],
            "files_total": totals["files"],
            "rejected_total": totals["rejected"],
            "rejected_by_reason": report.rejected_by_reason(conn),
            "images_by_status": report.images_by_status(conn, imager),
            "flagged_by_flag": report.flagged_by_flag(conn, imager),
            "failed_by_reason": report.failed_by_reason(conn, imager),
            "plates": report.plate_barcodes(conn, imager),
            "wells_total": totals["wells"],
            "unassigned_total": totals["unassigned"],
            "newest_images": report.newest_images(conn, newest, imager),
            "recent_errors": report.recent_rejections(conn, errors),
            "imagers": _site(conn, settings.site.lease_seconds),
        }
    finally:
        conn.close()


def _site(db: Db, lease_seconds: float) -> dict[str, dict[str, Any]]:
    """Per imager of the site, by name: ``images``, ``last_image_at`` (Unix s, None before the first) and
    ``agents`` (each ``xtalwatch run`` registered for it: ``name``, ``host``, ``pid``, ``alive``,
    ``holding`` its unfinished images, ``started_at``, ``seen_at``). An imager with agents and no image
    yet is listed; images stored with no imager are listed under ``NO_IMAGER``."""
    site: dict[str, dict[str, Any]] = {}
    for row in report.images_by_imager(db):
        site[row["imager"] or NO_IMAGER] = {"images": row["images"], "last_image_at": row["last_image_at"],
                                            "agents": []}
    for agent in live_agents(db, lease_seconds=lease_seconds):
        name = str(agent.pop("imager"))
        site.setdefault(name, {"images": 0, "last_image_at": None, "agents": []})["agents"].append(agent)
    return dict(sorted(site.items(), key=lambda item: (item[0] == NO_IMAGER, item[0])))
