"""The promotion gate: pure decisions, and the measurements behind them, through the serving heads."""

from __future__ import annotations

import numpy as np
import pytest
from xtalwatch.config import ClassifyConfig, RetrainConfig
from xtalwatch.learn.gate import (
    GateMetrics,
    feature_std,
    gate,
    holdout_accuracy,
    holdout_mask,
    measure,
    measure_model,
)
from xtalwatch.learn.heads import fit_head

CFG = RetrainConfig(gate_margin=0.02, collapse_std_min=0.001)


def test_first_model_needs_only_to_not_collapse() -> None:
    assert gate(GateMetrics(0.01), None, CFG).promote
    decision = gate(GateMetrics(0.0), None, CFG)
    assert not decision.promote and decision.reason.startswith("collapsed: feature std 0.000000")
    assert not gate(GateMetrics(float("nan")), None, CFG).promote


@pytest.mark.parametrize(("accuracy", "promote"), [
    (0.80, True),    # equal
    (0.785, True),   # within the margin
    (0.77, False),   # dropped by more than the margin
    (0.70, False),   # dropped a lot
    (float("nan"), False),
    (0.95, True),    # better
])
def test_accuracy_may_drop_by_at_most_the_margin(accuracy: float, promote: bool) -> None:
    serving = GateMetrics(0.01, 0.80, "linear")
    decision = gate(GateMetrics(0.01, accuracy, "linear"), serving, CFG)
    assert decision.promote is promote
    if not promote:
        assert "worse than the serving model" in decision.reason and "margin 0.02" in decision.reason


def test_collapse_rejects_even_with_better_accuracy() -> None:
    decision = gate(GateMetrics(0.0001, 0.99, "linear"), GateMetrics(0.01, 0.5, "linear"), CFG)
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


@pytest.mark.parametrize("kind", ["linear", "knn"])
def test_serving_heads_separate_clusters_and_fail_on_noise(kind: str) -> None:
    x, y = _clusters(30, 0)
    tx, ty = _clusters(10, 1)
    classes = sorted(set(y))
    head = fit_head(x, np.searchsorted(classes, y), len(classes), ClassifyConfig(head=kind, knn_k=5))
    assert head.kind == kind
    assert holdout_accuracy(head, classes, tx, ty) == 1.0
    noise = np.random.default_rng(2).normal(size=tx.shape)
    assert holdout_accuracy(head, classes, noise, ty) < 0.7
    assert holdout_accuracy(head, classes[::-1], tx, ty) < 1.0  # columns are read in the head's class order


def test_holdout_is_stable_stratified_and_leaves_training_examples() -> None:
    keys = [f"sha{i}" for i in range(40)]
    labels = ["a"] * 20 + ["b"] * 18 + ["c"] * 2
    mask = holdout_mask(keys, labels, 0.25)
    assert mask[:20].sum() == 5 and mask[20:38].sum() == 4 and mask[38:].sum() == 1
    assert (holdout_mask(keys, labels, 0.25) == mask).all()
    assert not holdout_mask(["x"], ["a"], 0.5).any()


@pytest.mark.parametrize("kind", ["linear", "knn"])
def test_measure_with_and_without_labels(kind: str) -> None:
    cfg = ClassifyConfig(head=kind, knn_k=5)
    x, y = _clusters(20, 3)
    mask = holdout_mask([str(i) for i in range(len(y))], y, 0.3)
    m = measure(x, x, y, mask, cfg=cfg)  # no head of its own: the configured kind is fitted outside the hold-out
    assert m.accuracy == 1.0 and m.head == kind and m.n_holdout == mask.sum() and m.n_images == 60
    assert measure(x, cfg=cfg).accuracy is None
    one_class = measure(x, x, ["a"] * 60, mask, cfg=cfg)
    assert one_class.accuracy is None and one_class.n_holdout > 0
    assert GateMetrics.from_dict(m.to_dict()) == m


def test_measure_scores_the_models_own_head_on_the_holdout() -> None:
    x, y = _clusters(20, 3)
    mask = holdout_mask([str(i) for i in range(len(y))], y, 0.3)
    classes = ["a", "b", "c"]
    # The head that serves was fitted on labels shifted by one class: the gate must score it, and see it fail,
    # rather than fit a fresh (perfect) one of the configured kind.
    shifted = (np.searchsorted(classes, np.asarray(y)[~mask]) + 1) % 3
    head = fit_head(x[~mask], shifted, 3, ClassifyConfig(head="linear"))
    own = measure(x, x, y, mask, cfg=ClassifyConfig(head="knn"), head=head, classes=classes)
    assert own.head == "linear" and own.accuracy == 0.0


class _Model:
    """A stand-in bundle whose crops are already features: what measure_model needs, no more."""

    def __init__(self, head=None, classes=()):
        self.head, self.classes = head, list(classes)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return crops


def test_measure_model_uses_its_own_head_or_fits_the_configured_one() -> None:
    cfg = ClassifyConfig(head="knn", knn_k=5)
    x, y = _clusters(20, 3)
    mask = holdout_mask([str(i) for i in range(len(y))], y, 0.3)
    fitted = measure_model(_Model(), x, x, y, mask, cfg)
    assert fitted.head == "knn" and fitted.accuracy == 1.0
    head = fit_head(x[~mask], np.searchsorted(["a", "b", "c"], np.asarray(y)[~mask]), 3, ClassifyConfig(head="linear"))
    own = measure_model(_Model(head, ["a", "b", "c"]), x, x, y, mask, cfg)
    assert own.head == "linear" and own.accuracy == 1.0
    assert measure_model(_Model(), x, None, [], np.zeros(0, bool), cfg).accuracy is None
