"""Temperature scaling (Guo et al. 2017, arXiv:1706.04599): one scalar T fitted on held-out labels.

Dividing the logits by T changes no prediction, only the confidence, so that "0.9" means right
about nine times in ten and ``classify.uncertain_below`` is a meaningful threshold.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["fit_temperature", "nll", "softmax"]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, float32."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    return float(F.cross_entropy(torch.as_tensor(np.asarray(logits, np.float64) / temperature),
                                 torch.as_tensor(np.asarray(labels, np.int64))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T in ``bounds`` minimising held-out NLL (golden-section search on log T; NLL is unimodal in it)."""
    if len(logits) == 0:
        return 1.0
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, np.exp(b))
    t = float(np.exp((lo + hi) / 2))
    return t if nll(logits, labels, t) <= nll(logits, labels, 1.0) else 1.0
