"""From stored predictions to well outcomes, events and alerts; and the periodic health checks.

``HitTracker.on_predictions`` runs after each classified batch: for every well touched it
recomputes the well's outcome with the per-well rule (``outcome.py``), compares it with the
outcome stored last time, and a move into a crystal class becomes a ``crystal_hit`` event,
stored and alerted. The last outcome of each well is kept in the catalogue, so a restart
neither forgets a hit nor announces it again.

``HealthChecks.run`` is called from the service loop about once a minute: imager stalled,
disk low. Each raises its event once per episode, not once a minute.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from xtalwatch import detectors
from xtalwatch import events as ev
from xtalwatch.alerts import AlertDispatcher, alert_for
from xtalwatch.catalogue import Catalogue
from xtalwatch.classify_stage import Prediction
from xtalwatch.config import AlertsConfig
from xtalwatch.metrics import Metrics
from xtalwatch.outcome import Outcome, calls_for_well, transition, well_outcome

__all__ = ["DriftMonitor", "HitTracker", "HealthChecks", "raise_event"]

log = logging.getLogger(__name__)


def raise_event(event: ev.Event, catalogue: Catalogue, alerts: AlertDispatcher | None) -> None:
    """Store an event and hand its alert to the sinks (which never block the caller)."""
    ev.record_event(catalogue, event)
    if alerts is not None:
        alerts.publish(alert_for(event))


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


class DriftMonitor:
    """Compares the newest images' features with the serving model's training images; alarms once per episode."""

    def __init__(self, catalogue: Catalogue, alerts: AlertDispatcher | None, config: AlertsConfig):
        self.catalogue = catalogue
        self.alerts = alerts
        self.config = config
        self._window: list[np.ndarray] = []
        self._version: str | None = None
        self._drifting = False

    def on_features(self, bundle: Any, features: np.ndarray) -> ev.Event | None:
        train_mean = bundle.metrics.get("feature_mean") if isinstance(bundle.metrics, dict) else None
        if train_mean is None:
            return None  # a model trained before drift was measured: nothing to compare with
        if bundle.version != self._version:
            self._window, self._version, self._drifting = [], bundle.version, False
        self._window.extend(features)
        self._window = self._window[-self.config.drift_window_images:]
        if len(self._window) < self.config.drift_window_images:
            return None
        distance = detectors.drift_distance(np.asarray(train_mean, np.float32), np.stack(self._window))
        drifting = distance > self.config.drift_threshold
        event = None
        if drifting and not self._drifting:
            event = ev.drift(round(distance, 4), self.config.drift_threshold, len(self._window),
                             model_version=bundle.version)
            log.warning("%s", alert_for(event).text)
            raise_event(event, self.catalogue, self.alerts)
        self._drifting = drifting
        return event


class HealthChecks:
    """Imager stalled and disk low, each announced once per episode."""

    def __init__(self, state_dir: Path, catalogue: Catalogue, metrics: Metrics, alerts: AlertDispatcher | None,
                 config: AlertsConfig, started_at: float | None = None):
        self.state_dir = state_dir
        self.catalogue = catalogue
        self.metrics = metrics
        self.alerts = alerts
        self.config = config
        self.started_at = started_at if started_at is not None else time.time()
        self._stalled = False
        self._disk_low = False

    def run(self, now: float | None = None) -> list[ev.Event]:
        now = time.time() if now is None else now
        raised = []
        last = self.catalogue.query("SELECT MAX(catalogued_at) FROM images")[0][0]
        # A fresh install has no image yet: the silence counts from the service's start.
        stalled = detectors.imager_stalled(last if last is not None else self.started_at, now, self.config)
        if stalled and not self._stalled:
            silent = detectors.expected_seconds_between(last if last is not None else self.started_at, now,
                                                        self.config.expected_hours, self.config.weekdays)
            raised.append(ev.imager_stalled(last, now, silent))
        self._stalled = stalled
        try:
            usage = shutil.disk_usage(self.state_dir)
        except OSError:
            usage = None
        if usage is not None:
            low = detectors.disk_low(usage.free, usage.total, self.config)
            if low and not self._disk_low:
                raised.append(ev.disk_low(str(self.state_dir), usage.free, usage.total))
            self._disk_low = low
        for event in raised:
            log.warning("%s", alert_for(event).text)
            raise_event(event, self.catalogue, self.alerts)
        return raised
