"""The promotion gate: may a freshly trained model replace the serving one?

Two questions, each answered on the code path the service runs:

* **Collapse** (always): SimCLR can fall into a trivial solution where every image maps to the
  same point. The symptom is a vanishing spread of the L2-normalised features across images
  (the check of Chen & He, "Exploring Simple Siamese Representation Learning", 2021, sec. 4.1).
  :func:`feature_std` is that spread; a collapsed encoder measures ~0, a random-init ResNet-18
  about 0.003, a perfectly spread 512-d representation 1/sqrt(512) ~ 0.044.
* **Accuracy** (with labels): the head each model serves (linear, kNN or fine-tuned, whichever
  ``learn/heads/select.py`` chose for it, on its own features) is scored on the labelled hold-out.
  The candidate's head was chosen and fitted on the labels outside the hold-out only; the serving
  model's own head is scored on the same hold-out, *measured now* (not the numbers it had when it
  was promoted, which were measured on other data). A model without a head (trained before the
  first label) gets one fitted here on the labels outside the hold-out: the forced linear or kNN
  kind, else linear (:func:`~xtalwatch.learn.heads.fit_head`). The candidate may not fall more
  than ``gate_margin`` below the serving model.

The hold-out is chosen by content hash, so an image stays on its side while the labels grow; the
hold-out grows with them, so a few images the serving head was fitted on may be held out now.
That can only flatter the serving model: the gate then errs towards keeping it.

:func:`gate` is a pure function of the two models' metrics; :func:`measure` is pure too (arrays
and a head in, numbers out); :func:`measure_model` embeds a bundle's crops and calls it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from xtalwatch.config import ClassifyConfig, RetrainConfig
from xtalwatch.learn.features import l2_normalise
from xtalwatch.learn.heads.serving import Head, fit_head

__all__ = [
    "Decision", "GateMetrics", "Measurable", "gate", "feature_std", "holdout_accuracy", "holdout_mask", "measure",
    "measure_model",
]


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


@dataclass(frozen=True)
class GateMetrics:
    """What the gate compares. ``accuracy`` is a fraction in [0, 1]; None when there are too few labels."""

    feature_std: float
    accuracy: float | None = None  # hold-out accuracy of the head the model serves
    head: str | None = None  # that head's kind (linear, knn or finetuned)
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
    new, old = candidate.accuracy, serving.accuracy
    if new is None or old is None:
        return Decision(True, f"not collapsed (feature std {std:.4f}); too few labels to compare accuracy")
    heads = f"{candidate.head} vs {serving.head} head"
    if not math.isfinite(new) or new < old - cfg.gate_margin:
        return Decision(False, f"worse than the serving model: accuracy {new:.3f} < serving {old:.3f} "
                               f"- margin {cfg.gate_margin:g} ({heads})")
    return Decision(True, f"not worse than serving (accuracy {new:.3f} vs {old:.3f}, {heads}; "
                          f"margin {cfg.gate_margin:g}), feature std {std:.4f}")


# -- the measurements -------------------------------------------------------------------------
def feature_std(features: np.ndarray) -> float:
    """Mean over dimensions of the std across images of L2-normalised (N, D) features; 0 = collapsed."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {features.shape}")
    return float(l2_normalise(features, np.float64).std(axis=0).mean())


def holdout_accuracy(head: Head, classes: Sequence[str], features: np.ndarray, labels: Sequence[str]) -> float:
    """Fraction of (N, D) features whose top class under ``head`` (columns in ``classes`` order) is their label.

    A label the head has no column for counts as wrong: the model cannot call it.
    """
    if len(features) != len(labels) or len(labels) == 0:
        raise ValueError(f"features and labels must match and be non-empty, got {len(features)} and {len(labels)}")
    predicted = np.asarray(classes)[head.logits(features).argmax(axis=1)]
    return float(np.mean(predicted == np.asarray(labels)))


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
            holdout: np.ndarray | None = None, *, cfg: ClassifyConfig, head: Head | None = None,
            classes: Sequence[str] = ()) -> GateMetrics:
    """Gate metrics of one model.

    Args:
        features: (N, D) features of the usable images, for the spread.
        labelled: (M, D) features of the labelled images (None: no labels).
        labels: M class names. holdout: M booleans, True for the hold-out.
        cfg: the ``classify`` section: the head kind (and kNN k and temperature) fitted when
            ``head`` is None (``fit_head``: the forced linear or knn, else linear).
        head, classes: the model's own head and its column names; None: fit one on the labels
            outside the hold-out.
    """
    std = feature_std(features)
    if labelled is None or labels is None or holdout is None or len(labels) == 0:
        return GateMetrics(std, n_images=len(features))
    labels_arr = np.asarray(labels)
    train_y, test_y = labels_arr[~holdout], labels_arr[holdout]
    n_train, n_test = int((~holdout).sum()), int(holdout.sum())
    if n_test == 0 or len(set(train_y)) < 2:
        return GateMetrics(std, n_images=len(features), n_train_labels=n_train, n_holdout=n_test)
    if head is None:
        classes = sorted(set(train_y))
        head = fit_head(labelled[~holdout], np.searchsorted(classes, train_y), len(classes), cfg)
    return GateMetrics(std, holdout_accuracy(head, classes, labelled[holdout], test_y), head.kind, len(features),
                       n_train, n_test)


class Measurable(Protocol):
    """What :func:`measure_model` needs of a model bundle: its crops' features, its head and classes."""

    head: Head | None
    classes: list[str]

    def embed(self, crops: np.ndarray) -> np.ndarray: ...


def measure_model(model: Measurable, sample: np.ndarray, labelled: np.ndarray | None, labels: Sequence[str],
                  holdout: np.ndarray, cfg: ClassifyConfig) -> GateMetrics:
    """Gate metrics of a bundle on service-layout crops: the spread on ``sample``, its own head on the hold-out.

    Args:
        sample: (N, S, S[, C]) uint8 crops of usable images, for the spread.
        labelled: (M, S, S[, C]) uint8 crops of the labelled images, or None; labels: their M
            classes; holdout: M booleans, True for the hold-out.
        cfg: the ``classify`` section (a bundle without a head gets one fitted, as :func:`measure` says).
    """
    features = model.embed(sample)
    if labelled is None:
        return measure(features, cfg=cfg)
    return measure(features, model.embed(labelled), labels, holdout, cfg=cfg, head=model.head,
                   classes=model.classes)
