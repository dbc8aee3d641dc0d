"""From stored predictions to well outcomes and crystal-hit events: the last stage of the flow.

``HitTracker.on_predictions`` runs after each classified batch: for every well touched it
recomputes the well's outcome with the per-well rule (``well_outcome.py``), compares it with the
outcome stored last time, and a move into a crystal class becomes a ``crystal_hit`` event,
stored and alerted. The last outcome of each well is kept in the catalogue, so a restart
neither forgets a hit nor announces it again.
"""

from __future__ import annotations

import logging
import time

from xtalwatch.alerts import events as ev
from xtalwatch.alerts.dispatch import AlertDispatcher, alert_for, raise_event
from xtalwatch.observe.metrics import Metrics
from xtalwatch.stages.classify import Prediction
from xtalwatch.stages.well_outcome import Outcome, calls_for_well, transition, well_outcome
from xtalwatch.store.catalogue import Catalogue

__all__ = ["HitTracker"]

log = logging.getLogger(__name__)


class HitTracker:
    """Keeps each well's outcome current and turns crystal transitions into hit events."""

    def __init__(self, catalogue: Catalogue, metrics: Metrics, alerts: AlertDispatcher | None,
                 min_confidence: float):
        self.catalogue = catalogue
        self.metrics = metrics
        self.alerts = alerts
        self.min_confidence = min_confidence

    def _previous(self, well_id: int) -> Outcome | None:
        rows = self.catalogue.query("SELECT label FROM well_outcomes WHERE well_id=?", (well_id,))
        return Outcome(rows[0]["label"]) if rows else None

    def on_predictions(self, predictions: list[Prediction]) -> list[ev.Event]:
        ids = sorted({p.image_id for p in predictions})
        if not ids:
            return []
        version = predictions[0].model_version
        wells = {r[0] for r in self.catalogue.query(
            f"SELECT DISTINCT well_id FROM images WHERE well_id IS NOT NULL AND id IN ({','.join('?' * len(ids))})",
            tuple(ids))}
        hits = []
        for well_id in sorted(wells):
            with self.catalogue.transaction() as conn:
                calls = calls_for_well(conn, well_id, model_version=version)
                current = well_outcome(calls, self.min_confidence)
                previous = self._previous(well_id)
                conn.execute(
                    """INSERT INTO well_outcomes (well_id, label, confidence, image_id, model_version, updated_at)
                       VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(well_id) DO UPDATE SET label=excluded.label,
                       confidence=excluded.confidence, image_id=excluded.image_id,
                       model_version=excluded.model_version, updated_at=excluded.updated_at""",
                    (well_id, current.label, current.call.confidence if current.call else None,
                     current.call.image_id if current.call else None, version, time.time()))
            event = transition(previous, current)
            if event is not None:
                self.metrics.hits.inc()
                log.warning("HIT %s", alert_for(event).text)
                raise_event(event, self.catalogue, self.alerts)
                hits.append(event)
        return hits
