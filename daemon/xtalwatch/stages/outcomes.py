"""From stored predictions to well outcomes and crystal-hit events: the last stage of the flow.

``HitTracker.on_predictions`` runs after each classified batch: for every well touched it
recomputes the well's outcome with the per-well rule (``well_outcome.py``), compares it with the
outcome stored last time, and a move into a crystal class becomes a ``crystal_hit`` event,
stored and alerted. The last outcome of each well is kept in the catalogue, so a restart
neither forgets a hit nor announces it again.
"""

from __future__ import annotations

import logging

from xtalwatch.alerts import events as ev
from xtalwatch.alerts.dispatch import AlertDispatcher, raise_event
from xtalwatch.observe.metrics import Metrics
from xtalwatch.stages.classify import Prediction
from xtalwatch.stages.well_outcome import Outcome, calls_for_well, transition, well_outcome
from xtalwatch.store import outcomes as stored
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

    def on_predictions(self, predictions: list[Prediction]) -> list[ev.Event]:
        ids = sorted({p.image_id for p in predictions})
        if not ids:
            return []
        version = predictions[0].model_version
        hits = []
        for well_id in stored.wells_of_images(self.catalogue, ids):
            # Read the calls and the last outcome, and save the new one, as one unit.
            with self.catalogue.transaction() as conn:
                calls = calls_for_well(conn, well_id, model_version=version)
                current = well_outcome(calls, self.min_confidence)
                label = stored.stored_outcome(conn, well_id)
                previous = Outcome(label) if label is not None else None  # saved without a reliable call: no outcome
                stored.save_outcome(conn, well_id, current.label, current.call.confidence if current.call else None,
                                    current.call.image_id if current.call else None, version)
            event = transition(previous, current)
            if event is not None:
                self.metrics.hits.inc()
                log.warning("HIT %s", ev.alert_for(event).text)
                raise_event(event, self.catalogue, self.alerts)
                hits.append(event)
        return hits
