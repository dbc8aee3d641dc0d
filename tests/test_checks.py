"""Drift, stalled imager and low disk: each check raises its event once per episode."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from xtalwatch.alerts.checks import DriftMonitor, HealthChecks
from xtalwatch.config import AlertsConfig
from xtalwatch.observe.metrics import Metrics
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import Probe
from xtalwatch.store.catalogue import Catalogue


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_drift_is_raised_once_when_new_images_move_away(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path)
    rng = np.random.default_rng(0)
    direction = unit(rng.normal(size=(1, 64)))[0]
    # The bundle's own record of its training data: version and the mean training feature.
    bundle = SimpleNamespace(version="v1", metrics={"feature_mean": direction.tolist()})
    monitor = DriftMonitor(catalogue, None, AlertsConfig(drift_threshold=0.3, drift_window_images=50))
    try:
        alike = unit(direction + 0.2 * rng.normal(size=(60, 64)))
        assert monitor.on_features(bundle, alike) is None
        away = unit(-direction + 0.2 * rng.normal(size=(60, 64)))
        event = monitor.on_features(bundle, away)
        assert event is not None and event.payload["distance"] > 0.3
        assert monitor.on_features(bundle, away) is None  # same episode: no second alarm
        assert catalogue.query("SELECT COUNT(*) FROM events WHERE kind='drift'")[0][0] == 1
        monitor.on_features(bundle, alike)  # back to normal, then away again: a new episode
        assert monitor.on_features(bundle, away) is not None
        assert monitor.on_features(SimpleNamespace(version="v0", metrics={}), away) is None  # nothing to compare
    finally:
        catalogue.close()


def test_stalled_imager_and_low_disk_are_raised_once(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path)
    config = AlertsConfig(stalled_after_seconds=3600, expected_hours="00:00-24:00",
                          weekdays=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], disk_low_fraction=1.0)
    try:
        identity = ImageIdentity("P", "A1", 1, 1)
        catalogue.record_image("/x/a.jpg", 1, 1, "s", Probe("jpeg", 10, 10, 3), identity)
        checks = HealthChecks(tmp_path, catalogue, Metrics(), None, config)
        now = time.time()
        first = checks.run(now + 600)
        assert [e.kind for e in first] == ["disk_low"]  # a fraction of 1.0: always low
        later = checks.run(now + 2 * 3600)
        assert [e.kind for e in later] == ["imager_stalled"]
        assert checks.run(now + 3 * 3600) == []
        kinds = sorted(r[0] for r in catalogue.query("SELECT kind FROM events"))
        assert kinds == ["disk_low", "imager_stalled"]
    finally:
        catalogue.close()
