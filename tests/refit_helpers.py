"""A state folder with a serving model: real crops in a real catalogue, a tiny real bundle promoted in a real registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from retrain_helpers import CLASSES, make_state, tiny_settings
from xtalwatch.config import Settings
from xtalwatch.learn.bundle import build_bundle
from xtalwatch.learn.features import read_crops
from xtalwatch.learn.registry import ModelRegistry
from xtalwatch.learn.simclr.encoder import build_encoder
from xtalwatch.store.catalogue import Catalogue, usable_images


def true_class(image_id: int) -> str:
    """The class ``make_state`` drew image ``image_id`` (1-based, started at 0) as."""
    return CLASSES[(image_id - 1) % len(CLASSES)]


def served_state(tmp_path: Path, n_images: int = 36, *, head_labels: dict[int, str] | None = None,
                 **overrides: Any) -> tuple[Settings, dict[str, list[int]]]:
    """``n_images`` usable images and a promoted model ``v1`` (16 px encoder); its head is fitted on
    ``head_labels`` (image id → class), or it has none when that is None."""
    state = tmp_path / "state"
    ids = make_state(state, n_images)
    settings = tiny_settings(state, **overrides)
    cat = Catalogue(state)
    try:
        crops_of = {i: p for i, _, p in usable_images(cat)}
        torch.manual_seed(0)
        encoder = build_encoder(16, small_stem=False)
        chosen = sorted(head_labels) if head_labels else list(crops_of)[:8]
        crops = read_crops([crops_of[i] for i in chosen], 3)
        labels = [head_labels[i] for i in chosen] if head_labels else None
        bundle = build_bundle(encoder, crops, labels, settings.classify, "v1", image_size=16)
        registry = ModelRegistry(state, cat)
        registry.add(bundle, version="v1", metrics={"gate": {"feature_std": 0.01}})
        registry.promote("v1")
    finally:
        cat.close()
    return settings, ids


def cluster_features(n: int, n_clusters: int, seed: int = 0, d: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) features in tight clusters, and each row's cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    which = np.arange(n) % n_clusters
    return (centres[which] + rng.normal(0, 0.01, (n, d))).astype(np.float32), which
