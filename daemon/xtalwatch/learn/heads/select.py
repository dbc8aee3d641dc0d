"""Which head serves: the candidates ``classify.head`` allows, scored on held-out labels, the best one wins.

``auto`` lets linear, kNN and (with ``classify.finetune_min_labels`` labels or more) a SimCLRv2
fine-tune compete; ``linear``, ``knn`` or ``finetuned`` forces one. Every candidate is fitted on
the same fit split and scored on the same stratified hold-out; the highest accuracy wins and a tie
goes to the cheaper kind (:data:`KINDS` is in cost order), so a fine-tune serves only when it is
measurably better. The :class:`HeadSelection` is recorded in the bundle: who won, by how much, on
how many labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from xtalwatch.config import ClassifyConfig

__all__ = ["KINDS", "FEATURE_KINDS", "HeadSelection", "candidate_kinds", "feature_kind", "accuracy", "choose",
           "selection_split"]

KINDS = ("linear", "knn", "finetuned")  # cheapest first: a tie goes to the earlier one
FEATURE_KINDS = ("linear", "knn")  # fitted on frozen features alone (a fine-tune needs crops and minutes)


@dataclass(frozen=True)
class HeadSelection:
    """The outcome of one choice. ``accuracies``: hold-out accuracy (fraction) of each candidate scored;
    ``skipped``: candidates not tried, with why; ``n_holdout``: labels scored on (0: nothing held out)."""

    winner: str
    accuracies: dict[str, float] = field(default_factory=dict)
    n_holdout: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def margin(self) -> float | None:
        """The winner's accuracy minus the best other scored kind's (negative when a forced kind loses);
        None with fewer than two scored."""
        others = [a for k, a in self.accuracies.items() if k != self.winner]
        if self.winner not in self.accuracies or not others:
            return None
        return self.accuracies[self.winner] - max(others)

    def to_dict(self) -> dict[str, Any]:
        margin = self.margin
        return {**asdict(self), "margin": None if margin is None else round(margin, 6)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadSelection:
        return cls(data["winner"], dict(data.get("accuracies", {})), int(data.get("n_holdout", 0)),
                   dict(data.get("skipped", {})))


def candidate_kinds(cfg: ClassifyConfig) -> tuple[str, ...]:
    """The kinds that compete under ``cfg.head``: all of :data:`KINDS` for ``auto``, else the one forced."""
    return KINDS if cfg.head == "auto" else (cfg.head,)


def feature_kind(cfg: ClassifyConfig) -> str:
    """The kind fitted where nothing is held out to choose on and only features are at hand: the forced
    linear or knn, else the cheapest, linear (``auto``, or ``finetuned``, which needs the crops)."""
    return cfg.head if cfg.head in FEATURE_KINDS else "linear"


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows of (N, K) ``logits`` whose arg-max is their (N,) int label."""
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())


def choose(accuracies: Mapping[str, float], n_holdout: int, skipped: Mapping[str, str] | None = None,
           allowed: tuple[str, ...] = KINDS) -> HeadSelection:
    """The best scored kind among ``allowed``; ties go to the cheaper kind (order of :data:`KINDS`).

    Kinds scored but not allowed (a forced ``classify.head`` still has the cheap ones scored) stay in
    the record, so the margin shows what forcing costs: it is negative when another kind would win.
    """
    unknown = set(accuracies) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown head kinds {sorted(unknown)} (known: {', '.join(KINDS)})")
    if not any(k in accuracies for k in allowed):
        raise ValueError(f"none of {allowed} was scored (scored: {sorted(accuracies)})")
    best = max(accuracies[k] for k in allowed if k in accuracies)
    winner = next(k for k in KINDS if k in allowed and k in accuracies and accuracies[k] >= best)
    return HeadSelection(winner, {k: round(float(accuracies[k]), 6) for k in KINDS if k in accuracies},
                         int(n_holdout), dict(skipped or {}))


def selection_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A stratified (fit, hold-out) split of (N,) int labels when there are 10 or more and every class has
    at least 2, else None (too few to hold any out)."""
    y = np.asarray(y)
    counts = np.bincount(y) if len(y) else np.zeros(0, np.int64)
    if len(y) < 10 or (counts[counts > 0] < 2).any():
        return None
    from xtalwatch.learn.evaluate.split import stratified_split

    return stratified_split(y, fraction, seed)
