"""The promotion gate: may a freshly trained model replace the serving one?

Two questions, both answered from features alone so the gate needs no classifier head:

* **Collapse** (always): SimCLR can fall into a trivial solution where every image maps to the
  same point. The symptom is a vanishing spread of the L2-normalised features across images
  (the check of Chen & He, "Exploring Simple Siamese Representation Learning", 2021, sec. 4.1).
  :func:`feature_std` is that spread; a collapsed encoder measures ~0, a random-init ResNet-18
  about 0.003, a perfectly spread 512-d representation 1/sqrt(512) ~ 0.044.
* **Accuracy** (with labels): cosine kNN and a linear probe, fitted on the labelled training
  split and scored on the labelled hold-out, must not fall more than ``gate_margin`` below the
  serving model's scores *on the same hold-out, measured now* (not the numbers it had when it
  was promoted, which were measured on other data).

:func:`gate` is a pure function of the two models' metrics; the measuring is done by
:func:`measure` and friends, also pure (arrays in, numbers out).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from xtalwatch.config import RetrainConfig
from xtalwatch.learn.features import l2_normalise

__all__ = [
    "Decision", "GateMetrics", "gate", "feature_std", "knn_accuracy", "linear_accuracy", "holdout_mask", "measure",
]


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


@dataclass(frozen=True)
class GateMetrics:
    """What the gate compares. Accuracies are fractions in [0, 1]; None when there are too few labels."""

    feature_std: float
    knn_accuracy: float | None = None
    linear_accuracy: float | None = None
    n_images: int = 0  # images the feature spread was measured on
    n_train_labels: int = 0
    n_holdout: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateMetrics:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


# -- the decision -----------------------------------------------------------------------------
def gate(candidate: GateMetrics, serving: GateMetrics | None, cfg: RetrainConfig) -> Decision:
    """Promote ``candidate`` over ``serving`` (None: nothing serves yet)? Returns the decision and why."""
    std = candidate.feature_std
    if not math.isfinite(std) or std < cfg.collapse_std_min:
        return Decision(False, f"collapsed: feature std {std:.6f} < collapse_std_min {cfg.collapse_std_min:g}")
    if serving is None:
        return Decision(True, f"first model (feature std {std:.4f}, not collapsed)")
    drops = []
    compared = []
    for name in ("knn_accuracy", "linear_accuracy"):
        new, old = getattr(candidate, name), getattr(serving, name)
        if new is None or old is None:
            continue
        label = name.removesuffix("_accuracy")
        compared.append(f"{label} {new:.3f} vs {old:.3f}")
        if not math.isfinite(new) or new < old - cfg.gate_margin:
            drops.append(f"{label} accuracy {new:.3f} < serving {old:.3f} - margin {cfg.gate_margin:g}")
    if drops:
        return Decision(False, "worse than the serving model: " + "; ".join(drops))
    if not compared:
        return Decision(True, f"not collapsed (feature std {std:.4f}); too few labels to compare accuracy")
    return Decision(True, f"not worse than serving ({', '.join(compared)}; margin {cfg.gate_margin:g}), "
                          f"feature std {std:.4f}")


# -- the measurements -------------------------------------------------------------------------
def feature_std(features: np.ndarray) -> float:
    """Mean over dimensions of the std across images of L2-normalised (N, D) features; 0 = collapsed."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {features.shape}")
    return float(l2_normalise(features, np.float64).std(axis=0).mean())


def knn_accuracy(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray, test_y: Sequence[str],
                 k: int = 20, temperature: float = 0.07) -> float:
    """Accuracy of a cosine kNN with similarity-weighted votes, exp(s/T) (Wu et al. 2018, as in SimCLR evals)."""
    a, b = l2_normalise(train_x, np.float64), l2_normalise(test_x, np.float64)
    classes = sorted(set(train_y))
    y = np.searchsorted(classes, np.asarray(train_y))
    sims = b @ a.T  # (n_test, n_train)
    k = min(k, len(a))
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(sims, idx, axis=1) / temperature)
    votes = np.zeros((len(b), len(classes)))
    np.add.at(votes, (np.arange(len(b))[:, None], y[idx]), weights)
    predicted = np.asarray(classes)[votes.argmax(axis=1)]
    return float(np.mean(predicted == np.asarray(test_y)))


def linear_accuracy(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray, test_y: Sequence[str],
                    seed: int = 0) -> float:
    """Accuracy of a class-balanced multinomial logistic regression on L2-normalised features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced", random_state=seed)
    with warnings.catch_warnings():
        # A probe that has not fully converged still gives a fair score; not worth failing a nightly run.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(l2_normalise(train_x), np.asarray(train_y))
    return float(np.mean(model.predict(l2_normalise(test_x)) == np.asarray(test_y)))


def holdout_mask(keys: Sequence[str], labels: Sequence[str], fraction: float) -> np.ndarray:
    """Which labelled images are held out: a stable choice by content hash, so an image stays on its side.

    ``keys`` are stable image identities (sha256). Within each class the images are ordered by a
    hash of their key and the first ``round(fraction * n)`` are held out (at least one, and at
    least one left for training, when a class has two or more images).
    """
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} keys but {len(labels)} labels")
    mask = np.zeros(len(keys), dtype=bool)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for members in by_class.values():
        if len(members) < 2:
            continue
        ranked = sorted(members, key=lambda i: hashlib.sha256(f"holdout:{keys[i]}".encode()).hexdigest())
        n = min(len(members) - 1, max(1, round(fraction * len(members))))
        mask[ranked[:n]] = True
    return mask


def measure(features: np.ndarray, labelled: np.ndarray | None = None, labels: Sequence[str] | None = None,
            holdout: np.ndarray | None = None, k: int = 20) -> GateMetrics:
    """Gate metrics of one model.

    Args:
        features: (N, D) features of the usable images, for the spread.
        labelled: (M, D) features of the labelled images (None: no labels).
        labels: M class names. holdout: M booleans, True for the hold-out.
    """
    std = feature_std(features)
    if labelled is None or labels is None or holdout is None or len(labels) == 0:
        return GateMetrics(std, n_images=len(features))
    labels_arr = np.asarray(labels)
    train_y, test_y = labels_arr[~holdout], labels_arr[holdout]
    n_train, n_test = int((~holdout).sum()), int(holdout.sum())
    if n_test == 0 or len(set(train_y)) < 2:
        return GateMetrics(std, n_images=len(features), n_train_labels=n_train, n_holdout=n_test)
    train_x, test_x = labelled[~holdout], labelled[holdout]
    return GateMetrics(std, knn_accuracy(train_x, train_y, test_x, test_y, k),
                       linear_accuracy(train_x, train_y, test_x, test_y), len(features), n_train, n_test)
