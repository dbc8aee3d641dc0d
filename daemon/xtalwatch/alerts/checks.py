"""The periodic and streaming checks that raise events: model drift, imager stalled, disk low.

``DriftMonitor.on_features`` sees each classified batch's features; ``HealthChecks.run`` is called
from the service loop every 30 s. Each raises its event once per episode, not on every call.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from xtalwatch.alerts import detectors
from xtalwatch.alerts import events as ev
from xtalwatch.alerts.dispatch import AlertDispatcher, raise_event
from xtalwatch.config import AlertsConfig
from xtalwatch.observe.metrics import Metrics
from xtalwatch.store.catalogue import Catalogue, last_catalogued_at
from xtalwatch.store.maintenance import ROOM_BYTES, is_disk_full

__all__ = ["DriftMonitor", "HealthChecks"]

log = logging.getLogger(__name__)


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
            log.warning("%s", ev.alert_for(event).text)
            raise_event(event, self.catalogue, self.alerts)
        self._drifting = drifting
        return event


class HealthChecks:
    """Imager stalled and disk low, each announced once per episode.

    ``disk_full()`` is the other way into a ``disk_low`` episode: a write that found the state
    disk full. Its alert goes out at once; the event is stored when the disk has room again
    (``store_held()``, also tried on every ``run``).
    """

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
        self._held: list[ev.Event] = []  # raised while the disk was full, stored once it has room
        self._lock = threading.Lock()  # disk_full() runs on an ingest thread

    def disk_full(self, reason: str) -> ev.Event:
        """The state disk is full (``reason``: what failed): alert now, store the event when there is room."""
        try:
            usage = shutil.disk_usage(self.state_dir)
            free, total = usage.free, usage.total
        except OSError:
            free = total = 0
        event = ev.disk_low(str(self.state_dir), free, total)
        event.payload["reason"] = reason
        with self._lock:
            self._disk_low = True
        self._raise(event)
        return event

    def store_held(self) -> int:
        """Store the events raised while the disk was full; returns how many are still held."""
        with self._lock:
            held, self._held = self._held, []
        for i, event in enumerate(held):
            try:
                ev.record_event(self.catalogue, event)
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                with self._lock:
                    self._held[:0] = held[i:]
                break
        with self._lock:
            return len(self._held)

    def _raise(self, event: ev.Event) -> None:
        if not raise_event(event, self.catalogue, self.alerts):
            with self._lock:
                self._held.append(event)

    def run(self, now: float | None = None) -> list[ev.Event]:
        now = time.time() if now is None else now
        if self._held:
            self.store_held()
        raised = []
        last = last_catalogued_at(self.catalogue)
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
            low = detectors.disk_low(usage.free, usage.total, self.config) or usage.free < ROOM_BYTES
            with self._lock:
                if low and not self._disk_low:
                    raised.append(ev.disk_low(str(self.state_dir), usage.free, usage.total))
                self._disk_low = low
        for event in raised:
            log.warning("%s", ev.alert_for(event).text)
            self._raise(event)
        return raised
