"""kNN on cosine similarity, with temperature-weighted votes (Wu et al. 2018, arXiv:1805.01978).

Each of the k nearest labelled neighbours votes for its class with weight exp(s / τ); the
"logits" are the log of the normalised votes, so the head plugs into the same calibration and
softmax as the linear probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xtalwatch.learn.features import l2_normalise

__all__ = ["KnnHead", "fit_knn"]


@dataclass
class KnnHead:
    """A bank of normalised features (M, D) with their labels (M,)."""

    bank: np.ndarray
    labels: np.ndarray
    n_classes: int
    k: int = 20
    temperature: float = 0.07

    kind = "knn"

    def __post_init__(self) -> None:
        if self.k < 1 or self.temperature <= 0:
            raise ValueError(f"k must be >= 1 and temperature > 0, got k={self.k}, temperature={self.temperature}")

    def logits(self, features: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """(N, D) raw features → (N, K) log vote shares (a log of 1e-6 for a class with no vote)."""
        q = l2_normalise(features)
        k = min(self.k, len(self.bank))
        out = np.empty((len(q), self.n_classes), np.float32)
        for i in range(0, len(q), chunk):
            sims = q[i:i + chunk] @ self.bank.T
            idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(sims, idx, axis=1)
            w = np.exp((top - top.max(axis=1, keepdims=True)) / self.temperature)
            votes = np.zeros((len(top), self.n_classes), np.float64)
            np.add.at(votes, (np.arange(len(top))[:, None], self.labels[idx]), w)
            votes /= votes.sum(axis=1, keepdims=True)
            out[i:i + chunk] = np.log(votes + 1e-6)
        return out

    def state(self) -> dict:
        return {"kind": self.kind, "bank": torch.from_numpy(self.bank), "labels": torch.from_numpy(self.labels),
                "n_classes": self.n_classes, "k": self.k, "temperature": self.temperature}

    @classmethod
    def from_state(cls, state: dict) -> KnnHead:
        return cls(state["bank"].numpy(), state["labels"].numpy(), int(state["n_classes"]), int(state["k"]),
                   float(state["temperature"]))


def fit_knn(features: np.ndarray, labels: np.ndarray, n_classes: int, k: int = 20,
            temperature: float = 0.07) -> KnnHead:
    """Store the labelled features (normalised) as the bank."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(features) != len(labels) or len(labels) == 0:
        raise ValueError(f"features and labels must match and be non-empty, got {len(features)} and {len(labels)}")
    return KnnHead(l2_normalise(features), labels, n_classes, k, temperature)
