"""Stratified splits: a test set no training sees, and the labelled fraction of the training set."""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_split", "labelled_subset"]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx), disjoint and sorted; each class keeps ``test_fraction`` of its images
    in the test set (at least one when it has two or more)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x7E57])
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        n_test = min(max(n_test, 1 if len(idx) >= 2 else 0), len(idx) - 1) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def labelled_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions (into ``labels``) of a stratified ``fraction`` of them, at least one per class.

    Nested by construction: the 5 % subset is inside the 10 % one for the same seed, so rows at
    different fractions differ only in how many labels they got.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x1AB])
    keep = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        keep.append(idx[:max(1, int(round(len(idx) * fraction)))])
    return np.sort(np.concatenate(keep))
