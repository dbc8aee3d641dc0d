"""Training metrics come from the outcome events every run records, whichever process ran it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import make_settings, wait_for
from retrain_helpers import make_state, tiny_settings
from xtalwatch import service as service_module
from xtalwatch.alerts import events as ev
from xtalwatch.alerts.dispatch import raise_event
from xtalwatch.learn.retrain import run_retrain
from xtalwatch.learn.training_metrics import TrainingMetrics, training_runs_since
from xtalwatch.observe.metrics import Metrics
from xtalwatch.store.catalogue import Catalogue

DAY = 86400.0


def figures(started_at: float, seconds: float, final_loss: float | None = 4.0) -> dict:
    return {"started_at": started_at, "seconds": seconds, "final_loss": final_loss, "steps": 3, "n_images": 45,
            "n_labels": 9}


def record(state: Path, event: ev.Event) -> None:
    """Record ``event`` as another process would: its own connection to the catalogue, no alert sinks."""
    other = Catalogue(state)
    try:
        raise_event(event, other, None)
    finally:
        other.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def test_runs_recorded_by_another_process_are_counted_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    catalogue = Catalogue(state)
    metrics = Metrics(process_collectors=False)
    try:
        training = TrainingMetrics(catalogue, metrics)
        training.restore()
        assert training.update() == 0
        record(state, ev.model_promoted("v1", training=figures(1000.0, 300.0, 3.5)))
        record(state, ev.training_failed("CUDA out of memory", run="v2", training=figures(2000.0, 60.0, None)))
        record(state, ev.disk_low("/state", 1, 100))  # not a training event
        record(state, ev.model_rejected("v3", "accuracy dropped", training=figures(3000.0, 900.0, 4.25)))
        assert training.update() == 3
        assert training.update() == 0  # seen once, counted once
        assert sample(metrics, "xtalwatch_training_runs_total", outcome="promoted") == 1
        assert sample(metrics, "xtalwatch_training_runs_total", outcome="rejected") == 1
        assert sample(metrics, "xtalwatch_training_runs_total", outcome="failed") == 1
        # The last run that finished without error: the rejected one (a failure moves neither gauge).
        assert sample(metrics, "xtalwatch_training_last_success_timestamp_seconds") == 3900.0
        assert sample(metrics, "xtalwatch_training_last_loss") == 4.25
        assert sample(metrics, "xtalwatch_training_duration_seconds_count") == 2
        assert sample(metrics, "xtalwatch_training_duration_seconds_sum") == 1200.0
    finally:
        catalogue.close()


def test_restore_sets_the_gauges_and_counts_nothing_old(tmp_path: Path) -> None:
    state = tmp_path / "state"
    record(state, ev.model_promoted("v1", training=figures(1000.0, 300.0, 3.5)))
    record(state, ev.training_failed("boom", training=figures(5000.0, 10.0)))
    catalogue = Catalogue(state)
    metrics = Metrics(process_collectors=False)
    try:
        training = TrainingMetrics(catalogue, metrics)
        training.restore()
        assert sample(metrics, "xtalwatch_training_last_success_timestamp_seconds") == 1300.0
        assert sample(metrics, "xtalwatch_training_last_loss") == 3.5
        assert training.update() == 0
        assert sample(metrics, "xtalwatch_training_runs_total", outcome="promoted") is None
        assert sample(metrics, "xtalwatch_training_duration_seconds_count") == 0
    finally:
        catalogue.close()


def test_an_event_without_figures_counts_from_when_it_was_recorded(tmp_path: Path) -> None:
    state = tmp_path / "state"
    record(state, ev.Event(ev.MODEL_PROMOTED, {"version": "old"}, created_at=1234.0))
    catalogue = Catalogue(state)
    metrics = Metrics(process_collectors=False)
    try:
        TrainingMetrics(catalogue, metrics).restore()
        assert sample(metrics, "xtalwatch_training_last_success_timestamp_seconds") == 1234.0
        assert math.isnan(sample(metrics, "xtalwatch_training_last_loss"))
        assert [r.outcome for r in training_runs_since(catalogue)] == ["promoted"]
    finally:
        catalogue.close()


def test_an_in_process_run_shows_up_in_the_metrics(tmp_path: Path) -> None:
    """``xtalwatch train --now`` calls run_retrain in its own process; the service counts it from the event."""
    state = tmp_path / "state"
    make_state(state, 45, labelled_per_class=8)
    catalogue = Catalogue(state)
    metrics = Metrics(process_collectors=False)
    try:
        training = TrainingMetrics(catalogue, metrics)
        training.restore()
        outcome = run_retrain(tiny_settings(state), now=True)
        assert outcome.status in ("promoted", "rejected"), outcome.summary()
        assert training.update() == 1
        assert sample(metrics, "xtalwatch_training_runs_total", outcome=outcome.status) == 1
        assert sample(metrics, "xtalwatch_training_last_success_timestamp_seconds") == pytest.approx(
            outcome.started_at + outcome.seconds)
        assert sample(metrics, "xtalwatch_training_duration_seconds_count") == 1
    finally:
        catalogue.close()


def test_the_service_restores_after_a_restart_and_counts_runs_of_other_processes(
        folders: tuple[Path, Path], start_service, monkeypatch: pytest.MonkeyPatch) -> None:
    watch, state = folders
    monkeypatch.setattr(service_module, "PERIODIC_CHECK_SECONDS", 0.2)  # the 30 s checks, sooner
    settings = make_settings(watch, state, **{"retrain.enabled": False, "retrain.auto_first_training": False})
    yesterday = 1.7e9 - DAY
    record(state, ev.model_promoted("v1", training=figures(yesterday, 600.0, 3.25)))

    first = start_service(settings)
    assert first.metric("xtalwatch_training_last_success_timestamp_seconds") == yesterday + 600.0
    assert first.metric("xtalwatch_training_last_loss") == 3.25
    assert first.metric("xtalwatch_training_runs_total", outcome="promoted") == 0  # history is not replayed
    record(state, ev.model_rejected("v2", "no better", training=figures(yesterday + 3600.0, 60.0, 3.0)))
    wait_for(lambda: first.metric("xtalwatch_training_runs_total", outcome="rejected") == 1)
    assert first.metric("xtalwatch_training_last_success_timestamp_seconds") == yesterday + 3660.0
    first.stop()

    record(state, ev.training_failed("killed", training=figures(yesterday + 7200.0, 5.0)))  # while it was down
    second = start_service(settings)
    assert second.metric("xtalwatch_training_last_success_timestamp_seconds") == yesterday + 3660.0
    assert second.metric("xtalwatch_training_last_loss") == 3.0
    assert second.metric("xtalwatch_training_runs_total", outcome="failed") == 0
    record(state, ev.training_failed("boom", training=figures(yesterday + 9000.0, 5.0)))
    wait_for(lambda: second.metric("xtalwatch_training_runs_total", outcome="failed") == 1)
    assert second.metric("xtalwatch_training_runs_total", outcome="rejected") == 0
