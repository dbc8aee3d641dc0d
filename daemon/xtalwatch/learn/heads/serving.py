"""The serving head: the kind ``classify.head`` names, fitted and restored one way for everyone.

A bundle fits it on its labels, the promotion gate fits it for a model that has none and scores
it on the hold-out, and a bundle folder restores it from ``head.pt``: all through these two
functions, so the head the gate measures is built exactly as the head the service serves.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from xtalwatch.config import ClassifyConfig
from xtalwatch.learn.heads.knn import KnnHead, fit_knn
from xtalwatch.learn.heads.linear import LinearHead, fit_linear

__all__ = ["Head", "fit_head", "head_from_state"]

Head = LinearHead | KnnHead


def fit_head(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: ClassifyConfig,
             kind: Literal["linear", "knn"] | None = None) -> Head:
    """Fit a head on (N, D) raw encoder features and (N,) int labels in [0, n_classes).

    Args:
        cfg: the ``classify`` section: ``head`` (the kind, unless ``kind`` is given), ``knn_k`` and
            ``knn_temperature`` for the kNN head.
        kind: fit this kind instead of ``cfg.head`` (the bundle scores both on its own hold-out).
    """
    kind = kind or cfg.head
    if kind == "knn":
        return fit_knn(features, labels, n_classes, cfg.knn_k, cfg.knn_temperature)
    if kind == "linear":
        return fit_linear(features, labels, n_classes)
    raise ValueError(f"unknown head kind {kind!r} (linear or knn)")


def head_from_state(state: dict) -> Head:
    """The head whose ``state()`` this is (``state["kind"]`` says which)."""
    if state.get("kind") == "linear":
        return LinearHead.from_state(state)
    if state.get("kind") == "knn":
        return KnnHead.from_state(state)
    raise ValueError(f"unknown head kind {state.get('kind')!r} in a head state")
