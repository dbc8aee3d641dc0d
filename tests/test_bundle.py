"""The model bundle: build, save atomically, load, identical probabilities, no head before labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from xtalwatch.config import ClassifyConfig
from xtalwatch.learn.bundle import ModelBundle, NoClassifier, build_bundle
from xtalwatch.learn.features import to_model_rgb
from xtalwatch.learn.simclr.encoder import build_encoder


def _crops(n: int = 24, size: int = 16) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    names = ["clear", "precipitate", "needles"]
    labels = [names[i % 3] for i in range(n)]
    levels = {"clear": 30, "precipitate": 120, "needles": 220}
    crops = np.stack([np.clip(levels[lab] + rng.normal(0, 8, (size, size, 3)), 0, 255) for lab in labels])
    return crops.astype(np.uint8), labels


@pytest.mark.parametrize("head", ["linear", "knn"])
def test_round_trip_gives_identical_probabilities(tmp_path: Path, head: str) -> None:
    torch.manual_seed(0)
    crops, labels = _crops()
    cfg = ClassifyConfig(head=head, knn_k=5)
    bundle = build_bundle(build_encoder(16, small_stem=False), crops, labels, cfg, "v1", data_fingerprint="fp")
    assert bundle.classes == ["clear", "precipitate", "crystals"]  # needles folded onto crystals
    assert bundle.temperature > 0 and "holdout_accuracy_linear" in bundle.metrics
    p = bundle.predict_proba(crops)
    assert p.shape == (24, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    bundle.save(tmp_path / "v1")
    assert sorted(f.name for f in (tmp_path / "v1").iterdir()) == ["bundle.json", "encoder.pt", "head.pt"]
    assert not (tmp_path / "v1.tmp").exists()
    loaded = ModelBundle.load(tmp_path / "v1")
    np.testing.assert_allclose(loaded.predict_proba(crops), p, atol=1e-6)
    assert (loaded.version, loaded.classes, loaded.data_fingerprint) == ("v1", bundle.classes, "fp")
    with pytest.raises(FileExistsError):
        bundle.save(tmp_path / "v1")


def test_bundle_without_labels_embeds_but_refuses_to_classify(tmp_path: Path) -> None:
    crops, _ = _crops(8)
    bundle = build_bundle(build_encoder(16, small_stem=False), crops, None, ClassifyConfig(), "v0")
    assert bundle.classes == [] and bundle.embed(crops).shape == (8, 512)
    bundle.save(tmp_path / "v0")
    loaded = ModelBundle.load(tmp_path / "v0")
    with pytest.raises(NoClassifier, match="no labels yet"):
        loaded.predict_proba(crops)


def test_crops_in_service_layout_are_resized_and_turned_rgb() -> None:
    bgr = np.zeros((2, 20, 20, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    rgb = to_model_rgb(bgr, 10)
    assert rgb.shape == (2, 10, 10, 3) and (rgb[..., 2] == 255).all() and (rgb[..., 0] == 0).all()
    assert to_model_rgb(np.zeros((1, 10, 10), np.uint8), 10).shape == (1, 10, 10, 3)
