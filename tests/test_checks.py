"""Drift, stalled imager and low disk: each check raises its event once per episode."""

from __future__ import annotations

import errno
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import wait_for
from xtalwatch.alerts import events as ev
from xtalwatch.alerts.checks import DriftMonitor, HealthChecks
from xtalwatch.alerts.dispatch import AlertDispatcher, raise_event
from xtalwatch.config import AlertsConfig
from xtalwatch.observe.metrics import Metrics
from xtalwatch.plate import ImageIdentity
from xtalwatch.plugins import PluginRegistry
from xtalwatch.preprocess.probe import Probe
from xtalwatch.store import events as stored_events
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.maintenance import is_disk_full


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


def test_a_full_disk_alerts_first_and_stores_the_event_when_there_is_room(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue = Catalogue(tmp_path)
    config = AlertsConfig.model_validate({"sinks": [{"type": "alert_helpers:ListSink", "name": "list"}],
                                          "disk_low_bytes": 0, "disk_low_fraction": 0})
    alerts = AlertDispatcher(config, PluginRegistry.discover(), Metrics(process_collectors=False))
    real_insert = stored_events.insert_event

    def disk_full(*args: Any, **kwargs: Any) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    try:
        checks = HealthChecks(tmp_path, catalogue, Metrics(process_collectors=False), alerts, config)
        monkeypatch.setattr(stored_events, "insert_event", disk_full)
        event = checks.disk_full("catalogue insert: database or disk is full")
        sink = alerts.sinks["list"]
        wait_for(lambda: len(sink.sent) == 1)  # sent although the event could not be stored
        assert sink.sent[0].kind == "disk_low" and event.payload["reason"].startswith("catalogue insert")
        assert checks.store_held() == 1  # still full: held, nothing raised
        assert checks.run() == []  # the same episode: no second alert, no error
        monkeypatch.setattr(stored_events, "insert_event", real_insert)
        assert checks.store_held() == 0
        assert [r[0] for r in catalogue.query("SELECT kind FROM events")] == ["disk_low"]
        assert len(sink.sent) == 1
    finally:
        alerts.close(timeout=10)
        catalogue.close()


def test_raise_event_still_raises_what_is_not_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue = Catalogue(tmp_path)

    def broken(*args: Any, **kwargs: Any) -> int:
        raise sqlite3.OperationalError("no such table: events")

    monkeypatch.setattr(stored_events, "insert_event", broken)
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            raise_event(ev.disk_low("/s", 0, 1), catalogue, None)
    finally:
        catalogue.close()


@pytest.mark.parametrize(("error", "full"), [
    (sqlite3.OperationalError("database or disk is full"), True),
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (sqlite3.OperationalError("database is locked"), False),
    (ValueError("database or disk is full"), False),
])
def test_is_disk_full(error: BaseException, full: bool) -> None:
    assert is_disk_full(error) is full
    # A failed ROLLBACK after SQLITE_FULL raises its own error, raised during the first one.
    try:
        try:
            raise error
        except BaseException:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active") from None
    except sqlite3.OperationalError as chained:
        chained.__context__ = error
        assert is_disk_full(chained) is full
