"""From stored predictions to well outcomes and crystal-hit events: the last stage of the flow.

``HitTracker.on_predictions`` runs after each classified batch: for every well touched it
recomputes the well's outcome with the per-well rule (``well_outcome.py``), compares it with the
outcome stored last time, and a move into a crystal class becomes a ``crystal_hit`` event. The
last outcome of each well is kept in the catalogue, so a restart neither forgets a hit nor
announces it again.

A hit on an image that just arrived is alerted at once. A hit found while classifying a backlog
(the first model, re-classification after a swap, images that waited through a restart) is
stored without an alert; when the classify queue runs dry (``flush``, on the stage's ``on_idle``)
each plate's gathered hits become one ``plate_hits`` alert with a link to the plate's page, so a
backlog sends one message per plate instead of one per well.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from urllib.parse import quote

from xtalwatch.alerts import events as ev
from xtalwatch.alerts.dispatch import AlertDispatcher, raise_event
from xtalwatch.observe.metrics import Metrics
from xtalwatch.plate import well_position
from xtalwatch.stages.classify import Prediction
from xtalwatch.stages.well_outcome import Outcome, OutcomeRule, calls_for_well, transition, well_outcome
from xtalwatch.store import outcomes as stored
from xtalwatch.store.catalogue import Catalogue

__all__ = ["HitTracker"]

log = logging.getLogger(__name__)


def _plate_order(well: str) -> tuple[int, int, str]:
    try:
        row, column = well_position(well)
    except ValueError:  # an adapter's own well naming: after the named ones, alphabetically
        return (1 << 30, 0, well)
    return (row, column, well)


class HitTracker:
    """Keeps each well's outcome current and turns crystal transitions into hit events.

    ``link_base`` (``http://host:port``, set once the web app serves) makes plate summaries link
    to the plate's page; None leaves the link out.
    """

    def __init__(self, catalogue: Catalogue, metrics: Metrics, alerts: AlertDispatcher | None, rule: OutcomeRule,
                 min_confidence: float, *, link_base: str | None = None):
        self.catalogue = catalogue
        self.metrics = metrics
        self.alerts = alerts
        self.rule = rule
        self.min_confidence = min_confidence
        self.link_base = link_base
        self._pending: dict[int | None, list[ev.Event]] = {}  # plate id → its backlog hits not yet summarised
        self._pending_lock = threading.Lock()

    def on_predictions(self, predictions: list[Prediction]) -> list[ev.Event]:
        ids = sorted({p.image_id for p in predictions})
        if not ids:
            return []
        live = {p.image_id for p in predictions if not p.backlog}
        version = predictions[0].model_version
        hits = []
        for well_id in stored.wells_of_images(self.catalogue, ids):
            # Read the calls and the last outcome, and save the new one, as one unit.
            with self.catalogue.transaction() as conn:
                calls = calls_for_well(conn, well_id, model_version=version)
                current = well_outcome(calls, self.rule, self.min_confidence)
                label = stored.stored_outcome(conn, well_id)
                previous = Outcome(label) if label is not None else None  # saved without a reliable call: no outcome
                stored.save_outcome(conn, well_id, current.label, current.call.confidence if current.call else None,
                                    current.call.image_id if current.call else None, version)
            backlog = current.call is not None and current.call.image_id not in live
            event = transition(previous, current, self.rule, backlog=backlog)
            if event is None:
                continue
            self.metrics.hits.inc()
            if backlog:
                log.info("HIT (backlog, in the plate's summary) %s", ev.alert_for(event).text)
                raise_event(event, self.catalogue, None)
                with self._pending_lock:
                    self._pending.setdefault(event.plate_id, []).append(event)
            else:
                log.warning("HIT %s", ev.alert_for(event).text)
                raise_event(event, self.catalogue, self.alerts)
            hits.append(event)
        return hits

    def flush(self) -> list[ev.Event]:
        """Raise one ``plate_hits`` event (stored and alerted) per plate with backlog hits gathered; returns them."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        summaries = []
        for plate_id, hits in pending.items():
            plate = hits[0].payload.get("plate")
            class_of_well = {str(h.payload.get("well")): str(h.payload.get("class")) for h in hits}  # the latest hit's
            wells = sorted(class_of_well, key=_plate_order)
            classes = Counter(class_of_well.values())
            link = f"{self.link_base.rstrip('/')}/plates/{quote(str(plate), safe='')}" if self.link_base else None
            batch = f"{int(min(h.created_at for h in hits) * 1000)}"
            event = ev.plate_hits(plate, wells, dict(classes), link=link, batch=batch, plate_id=plate_id)
            log.warning("HITS %s", ev.alert_for(event).text)
            raise_event(event, self.catalogue, self.alerts)
            summaries.append(event)
        return summaries

    def pending(self) -> int:
        """Backlog hits gathered and not yet summarised."""
        with self._pending_lock:
            return sum(len(h) for h in self._pending.values())
