"""Which images to ask a person about next: the least certain ones, spread over the embedding space.

Lowest margin first (top-1 minus top-2 probability: where the serving head hesitates), but not
50 near-copies of the same hesitant drop: within a pool of the ``pool_factor * n`` lowest-margin
images, k-centre greedy (Sener & Savarese, "Active Learning for Convolutional Neural Networks: A
Core-Set Approach", ICLR 2018) picks each next image as the one farthest from everything labelled
or already picked. Pure numpy: features in, indices out.
"""

from __future__ import annotations

import numpy as np

from xtalwatch.learn.features import l2_normalise

__all__ = ["k_center_greedy", "review_order"]

_CHUNK = 4096  # seed rows compared at a time (bounds the (N, chunk) distance block in memory)


def k_center_greedy(features: np.ndarray, n: int, seed_mask: np.ndarray) -> np.ndarray:
    """Indices of ``n`` rows, each the farthest (cosine distance) from the seeds and the rows picked before it.

    Args:
        features: (N, D) encoder features (L2-normalised here).
        n: how many to pick; fewer come back when fewer rows are not seeds.
        seed_mask: (N,) bool, True for rows already covered (the labelled images); never picked.

    Returns (min(n, N - seeds),) int64 indices in the order picked. Deterministic: ties go to
    the lowest index, and with no seeds the first pick is row 0 (callers put their best first).
    """
    features = np.asarray(features)
    seed_mask = np.asarray(seed_mask, dtype=bool)
    if features.ndim != 2 or seed_mask.shape != (len(features),):
        raise ValueError(f"need (N, D) features and an (N,) seed mask, got {features.shape} and {seed_mask.shape}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    x = l2_normalise(features)
    n = min(n, int((~seed_mask).sum()))
    distance = np.full(len(x), np.inf, np.float32)  # cosine distance to the nearest seed or pick
    seeds = x[seed_mask]
    for start in range(0, len(seeds), _CHUNK):
        nearest = (x @ seeds[start:start + _CHUNK].T).max(axis=1)
        distance = np.minimum(distance, 1.0 - nearest)
    distance[seed_mask] = -np.inf
    picks = np.empty(n, np.int64)
    for k in range(n):
        i = int(np.argmax(distance))
        picks[k] = i
        distance = np.minimum(distance, 1.0 - x @ x[i])
        distance[i] = -np.inf
    return picks


def review_order(features: np.ndarray, margins: np.ndarray, labelled_mask: np.ndarray, n: int, *,
                 pool_factor: int = 10) -> np.ndarray:
    """The ``n`` unlabelled rows to review next: low margin, spread over the embedding space.

    Args:
        features: (N, D) encoder features of every image (labelled ones included: they seed the spread).
        margins: (N,) top-1 minus top-2 probability of each image's call; lower is less certain.
        labelled_mask: (N,) bool, True for labelled images (never returned).
        n: how many to return.
        pool_factor: the candidates are the ``pool_factor * n`` lowest-margin unlabelled images.

    Returns up to ``n`` int64 indices in k-centre greedy order: the first is the least certain
    image far from every label, and any prefix of the list is itself spread out.
    """
    margins = np.asarray(margins, dtype=np.float64)
    labelled_mask = np.asarray(labelled_mask, dtype=bool)
    if margins.shape != (len(features),) or labelled_mask.shape != (len(features),):
        raise ValueError(f"need (N,) margins and labelled mask for N={len(features)} features, "
                         f"got {margins.shape} and {labelled_mask.shape}")
    if pool_factor < 1:
        raise ValueError(f"pool_factor must be >= 1, got {pool_factor}")
    unlabelled = np.flatnonzero(~labelled_mask)
    pool = unlabelled[np.argsort(margins[unlabelled], kind="stable")][:pool_factor * n]
    if len(pool) == 0:
        return np.zeros(0, np.int64)
    seeds = np.flatnonzero(labelled_mask)
    rows = np.concatenate([pool, seeds])
    mask = np.zeros(len(rows), bool)
    mask[len(pool):] = True
    # Pool first, in margin order: with nothing labelled the first pick is the least certain image,
    # and ties in distance go to the lower margin (argmax takes the lowest index).
    return rows[k_center_greedy(features[rows], n, mask)]
