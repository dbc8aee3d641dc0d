"""The service's training metrics, derived from the outcome events that every training run records.

A run records its outcome itself (``model_promoted``, ``model_rejected`` or ``training_failed``,
with the run's figures in ``payload["training"]``), whether the scheduler's child, ``xtalwatch
train --now`` or the systemd timer ran it. The service therefore counts runs from the catalogue's
``events`` table, not from its own children, so every run counts, once:

* at start, :meth:`TrainingMetrics.restore` sets the gauges from the newest events (so that
  ``XtalwatchNoSuccessfulTraining`` reads the real last success after a restart, not "never")
  and remembers the newest event id; counters and the histogram start at zero, as Prometheus
  expects of a restarted process (replaying history into them would read as a burst of runs);
* on the service's periodic checks, :meth:`TrainingMetrics.update` counts the events recorded
  since, by any process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from xtalwatch.alerts import events as ev
from xtalwatch.observe.metrics import Metrics
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.events import events_after

__all__ = ["TrainingMetrics", "TrainingRun", "training_runs_since"]

log = logging.getLogger(__name__)

# Event kind → the ``outcome`` label of xtalwatch_training_runs_total.
OUTCOME_OF_KIND = {ev.MODEL_PROMOTED: "promoted", ev.MODEL_REJECTED: "rejected", ev.TRAINING_FAILED: "failed"}
# Outcomes of a run that finished without error (it trained; the gate decided).
FINISHED = ("promoted", "rejected")


@dataclass(frozen=True)
class TrainingRun:
    """One recorded training outcome; times in Unix seconds, None where the event does not say."""

    event_id: int
    outcome: str  # promoted, rejected or failed
    recorded_at: float
    started_at: float | None = None
    seconds: float | None = None
    final_loss: float | None = None

    @property
    def finished_at(self) -> float:
        """When the run ended: start + duration when the event carries them, else when it was recorded."""
        if self.started_at is not None and self.seconds is not None:
            return self.started_at + self.seconds
        return self.recorded_at


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def training_runs_since(catalogue: Catalogue, after_id: int = 0) -> list[TrainingRun]:
    """Training outcome events with an id above ``after_id``, oldest first."""
    runs = []
    for row in events_after(catalogue, after_id, kinds=tuple(OUTCOME_OF_KIND)):
        payload = row["payload"] if isinstance(row["payload"], dict) else {}
        figures = payload.get("training")
        figures = figures if isinstance(figures, dict) else {}  # events recorded before runs carried figures
        runs.append(TrainingRun(int(row["id"]), OUTCOME_OF_KIND[row["kind"]], float(row["created_at"]),
                                _number(figures.get("started_at")), _number(figures.get("seconds")),
                                _number(figures.get("final_loss"))))
    return runs


class TrainingMetrics:
    """Keeps the training metrics in step with the training events in the catalogue."""

    def __init__(self, catalogue: Catalogue, metrics: Metrics):
        self.catalogue = catalogue
        self.metrics = metrics
        self.last_event_id = 0

    def restore(self) -> None:
        """Set the gauges from the newest finished run; later :meth:`update` calls count only newer events."""
        runs = training_runs_since(self.catalogue)
        finished = [r for r in runs if r.outcome in FINISHED]
        if finished:
            self._set_gauges(finished[-1])
        if runs:
            self.last_event_id = runs[-1].event_id

    def update(self) -> int:
        """Count the training events recorded since the last call; returns how many there were."""
        runs = training_runs_since(self.catalogue, self.last_event_id)
        for run in runs:
            self.metrics.training_runs.labels(outcome=run.outcome).inc()
            if run.outcome in FINISHED:
                self._set_gauges(run)
                if run.seconds is not None:
                    self.metrics.training_duration_seconds.observe(run.seconds)
            self.last_event_id = run.event_id
        return len(runs)

    def _set_gauges(self, run: TrainingRun) -> None:
        self.metrics.training_last_success.set(run.finished_at)
        if run.final_loss is not None:
            self.metrics.training_last_loss.set(run.final_loss)
