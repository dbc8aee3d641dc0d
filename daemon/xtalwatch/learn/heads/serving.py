"""The serving head: fitted and restored one way for everyone.

A bundle fits the head on its labels, the promotion gate fits one for a model that has none and
scores it on the hold-out, the head refitter fits one on cached features, and a bundle folder
restores it from ``head.pt``: all through these functions, so the head the gate measures is built
exactly as the head the service serves. Which kind serves is chosen in ``select.py``.
"""

from __future__ import annotations

import numpy as np

from xtalwatch.config import ClassifyConfig
from xtalwatch.learn.heads.finetuned import FinetunedHead
from xtalwatch.learn.heads.knn import KnnHead, fit_knn
from xtalwatch.learn.heads.linear import LinearHead, fit_linear
from xtalwatch.learn.heads.select import (
    FEATURE_KINDS,
    HeadSelection,
    accuracy,
    candidate_kinds,
    choose,
    feature_kind,
    selection_split,
)

__all__ = ["Head", "fit_head", "head_from_state", "choose_feature_head", "holdout_logits"]

Head = LinearHead | KnnHead | FinetunedHead


def fit_head(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: ClassifyConfig,
             kind: str | None = None) -> Head:
    """Fit a linear or kNN head on (N, D) raw encoder features and (N,) int labels in [0, n_classes).

    Args:
        cfg: the ``classify`` section: ``knn_k`` and ``knn_temperature`` for the kNN head, and
            ``head``, the kind fitted when ``kind`` is None (``auto`` and ``finetuned`` fit linear
            here: with features alone there is nothing to choose on and no encoder to fine-tune).
        kind: fit this kind instead (``linear`` or ``knn``; the bundle scores each candidate).
    """
    kind = kind or feature_kind(cfg)
    if kind == "knn":
        return fit_knn(features, labels, n_classes, cfg.knn_k, cfg.knn_temperature)
    if kind == "linear":
        return fit_linear(features, labels, n_classes)
    raise ValueError(f"fit_head fits linear or knn heads, not {kind!r} "
                     "(a fine-tuned head needs crops: learn.heads.finetuned.finetune)")


def holdout_logits(features: np.ndarray, labels: np.ndarray, fit_rows: np.ndarray, holdout_rows: np.ndarray,
                   n_classes: int, cfg: ClassifyConfig) -> dict[str, np.ndarray]:
    """Each feature kind (linear, kNN) fitted on ``fit_rows`` of (N, D) ``features`` and (N,) int ``labels``,
    as its (H, K) logits on ``holdout_rows``: what the bundle and the refitter score candidates on."""
    return {kind: fit_head(features[fit_rows], labels[fit_rows], n_classes, cfg, kind).logits(features[holdout_rows])
            for kind in FEATURE_KINDS}


def choose_feature_head(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: ClassifyConfig, *,
                        holdout_fraction: float = 0.2, seed: int = 0) -> tuple[Head, HeadSelection]:
    """The linear or kNN head ``cfg.head`` allows that scores best on a hold-out of these labels, refitted on all.

    For ``auto`` both compete on a stratified ``holdout_fraction`` of (N, D) ``features`` and (N,)
    int ``labels`` (ties: linear); a forced kind wins, with both scored. Returns the head and the choice.
    Raises ValueError when ``cfg.head`` allows no kind that frozen features can fit (``finetuned``).
    """
    kinds = tuple(kind for kind in candidate_kinds(cfg) if kind in FEATURE_KINDS)
    if not kinds:
        raise ValueError(f"classify.head {cfg.head!r} has no kind fitted on features alone (linear or knn)")
    labels = np.asarray(labels)
    split = selection_split(labels, holdout_fraction, seed)
    if split is None:
        winner = feature_kind(cfg)
        selection = HeadSelection(winner, skipped={k: "too few labels to hold any out" for k in kinds if k != winner})
    else:  # both are scored (a forced kind's record shows what forcing costs); the allowed best wins
        fi, ho = split
        logits = holdout_logits(features, labels, fi, ho, n_classes, cfg)
        selection = choose({kind: accuracy(lg, labels[ho]) for kind, lg in logits.items()}, len(ho), allowed=kinds)
    return fit_head(features, labels, n_classes, cfg, selection.winner), selection


def head_from_state(state: dict) -> Head:
    """The head whose ``state()`` this is (``state["kind"]`` says which)."""
    kinds = {"linear": LinearHead, "knn": KnnHead, "finetuned": FinetunedHead}
    if state.get("kind") not in kinds:
        raise ValueError(f"unknown head kind {state.get('kind')!r} in a head state")
    return kinds[state["kind"]].from_state(state)
