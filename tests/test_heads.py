"""Heads on the frozen encoder: linear probe, kNN, calibration, SimCLRv2 fine-tune and distillation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from xtalwatch.learn.features import l2_normalise
from xtalwatch.learn.heads import fit_knn, fit_linear, fit_temperature, nll, softmax
from xtalwatch.learn.heads.finetune import Classifier, FitConfig, distil, fit_classifier, predict_logits
from xtalwatch.learn.heads.linear import class_weights
from xtalwatch.learn.simclr.encoder import build_encoder
from xtalwatch.learn.simclr.heads import build_head


def _blobs(n_per: list[int], dim: int = 32, spread: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(n_per), dim)) * 3
    x = np.concatenate([c + spread * rng.normal(size=(n, dim)) for c, n in zip(centres, n_per, strict=True)])
    y = np.concatenate([np.full(n, i) for i, n in enumerate(n_per)])
    return x.astype(np.float32), y


def test_linear_probe_separates_and_is_scale_invariant() -> None:
    x, y = _blobs([60, 40, 20])
    head = fit_linear(x, y, 3)
    assert (head.logits(x).argmax(1) == y).mean() == 1.0
    # features are L2-normalised first, so scaling them changes nothing
    np.testing.assert_allclose(head.logits(x * 7), head.logits(x), rtol=1e-4, atol=1e-4)
    xt, yt = _blobs([30, 30, 30], seed=0)
    assert (head.logits(xt).argmax(1) == yt).mean() > 0.95


def test_class_balance_weights_rare_classes() -> None:
    w = class_weights(np.array([0] * 90 + [1] * 10), 3)
    assert w[1] == pytest.approx(9 * w[0]) and w[2] == 0


def test_knn_votes_and_respects_k() -> None:
    x, y = _blobs([50, 50, 50])
    head = fit_knn(x, y, 3, k=5, temperature=0.1)
    xt, yt = _blobs([20, 20, 20], seed=0)
    logits = head.logits(xt)
    assert logits.shape == (60, 3) and (logits.argmax(1) == yt).mean() > 0.95
    assert np.allclose(np.exp(logits).sum(1), 1, atol=1e-4)
    with pytest.raises(ValueError):
        fit_knn(x, y, 3, k=0)


def test_temperature_scaling_lowers_heldout_nll() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    # overconfident logits: right 70 % of the time but always ~certain
    pred = np.where(rng.random(600) < 0.7, y, rng.integers(0, 4, 600))
    logits = np.eye(4)[pred] * 12 + rng.normal(size=(600, 4))
    t = fit_temperature(logits[:300], y[:300])
    assert t > 1.5
    assert nll(logits[300:], y[300:], t) < 0.5 * nll(logits[300:], y[300:])
    assert (softmax(logits, t).argmax(1) == logits.argmax(1)).all()  # calibration changes no prediction


def test_l2_normalise_keeps_zero_rows() -> None:
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0]])


def _tiny_images(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes a network learns in a few steps: dark and bright crops."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    base = np.where(y[:, None, None, None] == 1, 200, 40)
    return np.clip(base + rng.normal(0, 10, (n, size, size, 3)), 0, 255).astype(np.uint8), y


def test_simclrv2_finetune_from_first_projection_layer_then_distil() -> None:
    torch.manual_seed(0)
    images, y = _tiny_images(16)
    head = build_head("simclr")
    model = Classifier(build_encoder(16, small_stem=False), 2, head.layers[0])
    assert model.fc.in_features == 512 and model.proj is head.layers[0]
    losses = fit_classifier(model, images, y, FitConfig(steps=4, batch_size=12, lr=1e-3), progress=False)
    assert len(losses) == 4 and all(np.isfinite(losses))
    logits = predict_logits(model, images)
    assert logits.shape == (16, 2)
    student, d_losses = distil(model, images, FitConfig(steps=2, batch_size=12), progress=False)
    assert student is not model and len(d_losses) == 2 and all(np.isfinite(d_losses))
    assert predict_logits(student, images).shape == (16, 2)
