"""Active learning: k-centre greedy spreads its picks, and the review order prefers low margins."""

from __future__ import annotations

import numpy as np
import pytest
from xtalwatch.learn.active import k_center_greedy, review_order


def _clusters(n_clusters: int = 5, per: int = 40, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tight clusters around random unit directions: (N, d) features and (N,) cluster ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    ids = np.repeat(np.arange(n_clusters), per)
    return centres[ids] + rng.normal(0, 0.05, (len(ids), d)), ids


def _slow_k_center(features: np.ndarray, n: int, seed_mask: np.ndarray) -> list[int]:
    """The definition, one point at a time: the farthest (cosine) from everything covered."""
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    covered = list(np.flatnonzero(seed_mask))
    picks: list[int] = []
    for _ in range(n):
        best, best_d = -1, -1.0
        for i in range(len(x)):
            if seed_mask[i] or i in picks:
                continue
            d = min((1 - float(x[i] @ x[j]) for j in covered + picks), default=np.inf)
            if d > best_d:
                best, best_d = i, d
        picks.append(best)
    return picks


def test_picks_hit_every_cluster_before_any_cluster_twice() -> None:
    features, cluster = _clusters()
    picks = k_center_greedy(features, 5, np.zeros(len(features), bool))
    assert sorted(cluster[picks]) == [0, 1, 2, 3, 4]


def test_labelled_clusters_are_skipped() -> None:
    features, cluster = _clusters()
    seeds = np.isin(cluster, [0, 1, 2])  # three clusters already labelled
    picks = k_center_greedy(features, 2, seeds)
    assert sorted(cluster[picks]) == [3, 4] and not seeds[picks].any()


def test_near_duplicates_are_not_picked_twice() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 16))
    features = np.concatenate([base, base + 1e-6])  # each image twice
    picks = k_center_greedy(features, 6, np.zeros(12, bool))
    assert len({int(p) % 6 for p in picks}) == 6


def test_matches_the_slow_definition_and_is_deterministic() -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(60, 8))
    seeds = np.zeros(60, bool)
    seeds[[3, 17]] = True
    fast = k_center_greedy(features, 10, seeds)
    assert fast.tolist() == _slow_k_center(features, 10, seeds)
    assert k_center_greedy(features, 10, seeds).tolist() == fast.tolist()


def test_asks_for_no_more_than_there_is() -> None:
    features, _ = _clusters(2, 3)
    seeds = np.zeros(6, bool)
    seeds[:4] = True
    assert sorted(k_center_greedy(features, 10, seeds).tolist()) == [4, 5]
    with pytest.raises(ValueError, match="seed mask"):
        k_center_greedy(features, 1, np.zeros(5, bool))


def test_review_order_prefers_low_margins() -> None:
    features, _ = _clusters(4, 50)
    margins = np.linspace(0.0, 1.0, len(features))
    rng = np.random.default_rng(3)
    margins = margins[rng.permutation(len(features))]
    picks = review_order(features, margins, np.zeros(len(features), bool), 5, pool_factor=4)
    pool = set(np.argsort(margins)[:20].tolist())
    assert set(picks.tolist()) <= pool  # only from the 20 least certain
    assert picks[0] == int(np.argmin(margins))  # nothing labelled: the least certain first


def test_review_order_spreads_within_the_uncertain_pool() -> None:
    features, cluster = _clusters(5, 40)
    margins = np.full(len(features), 0.9)
    margins[cluster == 0] = 0.01  # one cluster is very uncertain, but it alone should not fill the page
    margins[cluster != 0] = np.linspace(0.1, 0.2, int((cluster != 0).sum()))
    labelled = np.zeros(len(features), bool)
    labelled[cluster == 4] = True  # cluster 4 is labelled already
    picks = review_order(features, margins, labelled, 4, pool_factor=50)
    assert sorted(cluster[picks]) == [0, 1, 2, 3]
    assert not labelled[picks].any()


def test_review_order_excludes_labelled_and_handles_empty() -> None:
    features, _ = _clusters(2, 5)
    labelled = np.ones(10, bool)
    assert review_order(features, np.zeros(10), labelled, 3).tolist() == []
