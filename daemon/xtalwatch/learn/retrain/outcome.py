"""What one run did, as a record (``result.json``) and as the event every run leaves in the catalogue.

A run that trained ends ``promoted`` or ``rejected`` (the gate's word), one that broke ends
``failed``; those three become an event (``model_promoted``, ``model_rejected``,
``training_failed``) carrying the run's figures, wherever the run happened. A ``skipped`` run
(busy, too few images, nothing new) trained nothing and leaves no event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from xtalwatch.alerts import events as ev

__all__ = ["RetrainOutcome", "outcome_event"]


@dataclass
class RetrainOutcome:
    """What one run did. ``status``: promoted, rejected, failed, or skipped (refused, nothing new, busy)."""

    status: Literal["promoted", "rejected", "failed", "skipped"]
    reason: str
    version: str | None = None
    serving_version: str | None = None  # the model serving when the run started
    started_at: float = 0.0  # Unix seconds
    seconds: float = 0.0
    final_loss: float | None = None
    steps: int = 0
    n_images: int = 0
    n_labels: int = 0
    warm_start: bool = False
    candidate: dict[str, Any] | None = None  # GateMetrics of the new model
    serving: dict[str, Any] | None = None  # GateMetrics of the serving model, measured now
    log_path: str | None = None
    niceness: int | None = None  # the process's niceness while it ran
    data_fingerprint: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrainOutcome:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def summary(self) -> str:
        if self.status == "skipped":
            return f"skipped: {self.reason}"
        head = f"{self.status}: {self.version or 'no model'}"
        loss = f", final loss {self.final_loss:.4f}" if self.final_loss is not None else ""
        return f"{head} ({self.n_images} images, {self.n_labels} labels{loss}, {self.seconds:.0f} s): {self.reason}"

    def figures(self) -> dict[str, Any]:
        """The run's figures that its event carries (``training=``): times in Unix seconds."""
        return {"started_at": self.started_at, "seconds": self.seconds, "final_loss": self.final_loss,
                "steps": self.steps, "n_images": self.n_images, "n_labels": self.n_labels}


def outcome_event(outcome: RetrainOutcome) -> ev.Event | None:
    """The event that records ``outcome``; None for a skipped run."""
    figures = outcome.figures()
    if outcome.status == "promoted" and outcome.version:
        return ev.model_promoted(outcome.version, outcome.candidate, previous=outcome.serving_version,
                                 training=figures)
    if outcome.status == "rejected" and outcome.version:
        return ev.model_rejected(outcome.version, outcome.reason, outcome.candidate, training=figures)
    if outcome.status == "failed":
        return ev.training_failed(outcome.reason, run=outcome.version, training=figures)
    return None
