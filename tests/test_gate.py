"""The promotion gate: pure decisions, and the measurements behind them."""

from __future__ import annotations

import numpy as np
import pytest
from xtalwatch.config import RetrainConfig
from xtalwatch.learn.gate import (
    GateMetrics,
    feature_std,
    gate,
    holdout_mask,
    knn_accuracy,
    linear_accuracy,
    measure,
)

CFG = RetrainConfig(gate_margin=0.02, collapse_std_min=0.001)


def test_first_model_needs_only_to_not_collapse() -> None:
    assert gate(GateMetrics(0.01), None, CFG).promote
    decision = gate(GateMetrics(0.0), None, CFG)
    assert not decision.promote and decision.reason.startswith("collapsed: feature std 0.000000")
    assert not gate(GateMetrics(float("nan")), None, CFG).promote


@pytest.mark.parametrize(("knn", "linear", "promote"), [
    (0.80, 0.80, True),    # equal
    (0.79, 0.785, True),   # within the margin
    (0.77, 0.80, False),   # kNN dropped by more than the margin
    (0.80, 0.70, False),   # linear dropped
    (0.95, 0.95, True),    # better
])
def test_accuracy_may_drop_by_at_most_the_margin(knn: float, linear: float, promote: bool) -> None:
    serving = GateMetrics(0.01, 0.80, 0.80)
    decision = gate(GateMetrics(0.01, knn, linear), serving, CFG)
    assert decision.promote is promote
    if not promote:
        assert "worse than the serving model" in decision.reason and "margin 0.02" in decision.reason


def test_collapse_rejects_even_with_better_accuracy() -> None:
    decision = gate(GateMetrics(0.0001, 0.99, 0.99), GateMetrics(0.01, 0.5, 0.5), CFG)
    assert not decision.promote and "collapsed" in decision.reason


def test_without_labels_only_collapse_counts() -> None:
    decision = gate(GateMetrics(0.01), GateMetrics(0.02), CFG)
    assert decision.promote and "too few labels" in decision.reason


def test_feature_std_is_zero_for_identical_and_scale_free() -> None:
    rng = np.random.default_rng(0)
    same = np.tile(rng.normal(size=(1, 512)), (10, 1))
    assert feature_std(same) == pytest.approx(0.0, abs=1e-12)
    spread = rng.normal(size=(4000, 512))
    assert feature_std(spread) == pytest.approx(1 / np.sqrt(512), rel=0.02)
    assert feature_std(spread * 1000) == pytest.approx(feature_std(spread))
    with pytest.raises(ValueError):
        feature_std(spread[:1])


def _clusters(n_per: int, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16) * 5
    x = np.concatenate([c + rng.normal(size=(n_per, 16)) for c in centres])
    return x, [c for c in "abc" for _ in range(n_per)]


def test_probes_separate_clusters_and_fail_on_noise() -> None:
    x, y = _clusters(30, 0)
    tx, ty = _clusters(10, 1)
    assert knn_accuracy(x, y, tx, ty, k=5) == 1.0
    assert linear_accuracy(x, y, tx, ty) == 1.0
    noise = np.random.default_rng(2).normal(size=tx.shape)
    assert knn_accuracy(x, y, noise, ty, k=5) < 0.7


def test_holdout_is_stable_stratified_and_leaves_training_examples() -> None:
    keys = [f"sha{i}" for i in range(40)]
    labels = ["a"] * 20 + ["b"] * 18 + ["c"] * 2
    mask = holdout_mask(keys, labels, 0.25)
    assert mask[:20].sum() == 5 and mask[20:38].sum() == 4 and mask[38:].sum() == 1
    assert (holdout_mask(keys, labels, 0.25) == mask).all()
    assert not holdout_mask(["x"], ["a"], 0.5).any()


def test_measure_with_and_without_labels() -> None:
    x, y = _clusters(20, 3)
    mask = holdout_mask([str(i) for i in range(len(y))], y, 0.3)
    m = measure(x, x, y, mask, k=5)
    assert m.knn_accuracy == 1.0 and m.linear_accuracy == 1.0 and m.n_holdout == mask.sum() and m.n_images == 60
    assert measure(x).knn_accuracy is None
    one_class = measure(x, x, ["a"] * 60, mask)
    assert one_class.knn_accuracy is None and one_class.n_holdout > 0
    assert GateMetrics.from_dict(m.to_dict()) == m
