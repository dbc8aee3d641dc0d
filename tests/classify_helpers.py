"""A tiny real model serving from a state folder's registry, for the classify stage's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from retrain_helpers import CLASSES, make_state
from xtalwatch.config import ClassifyConfig
from xtalwatch.learn.bundle import ModelBundle, build_bundle
from xtalwatch.learn.features import read_crop
from xtalwatch.learn.registry import ModelRegistry
from xtalwatch.learn.simclr.encoder import build_encoder
from xtalwatch.store.catalogue import Catalogue

# Every class a crystal: each well with a reliable call is a hit, whatever the untrained model says.
ALL_CRYSTAL = ClassifyConfig(classes=list(CLASSES), subclasses=[], outcome_order=list(CLASSES),
                             crystal_classes=list(CLASSES))


def usable_crops(state: Path) -> dict[int, str]:
    """image id → crop path of the state's preprocessed images."""
    cat = Catalogue(state)
    try:
        rows = cat.query("SELECT image_id, crop_path FROM preprocess WHERE crop_path IS NOT NULL "
                         "AND image_id IN (SELECT id FROM images WHERE status = 'preprocessed') ORDER BY image_id")
    finally:
        cat.close()
    return {int(r[0]): r[1] for r in rows}


def serve(state: Path, version: str, *, encoder_of: ModelBundle | None = None, head: str = "linear") -> ModelBundle:
    """Build a bundle on the state's crops (labels by position, as ``make_state`` made them), add it to
    the registry and promote it. ``encoder_of``: share that bundle's encoder (a head-only change)."""
    torch.manual_seed(0)
    paths = list(usable_crops(state).values())
    crops = np.stack([read_crop(p, 3) for p in paths])
    labels = [CLASSES[i % len(CLASSES)] for i in range(len(paths))]
    encoder = encoder_of.encoder if encoder_of is not None else build_encoder(16, small_stem=False)
    cfg = ALL_CRYSTAL.model_copy(update={"head": head, "knn_k": 3})
    bundle = build_bundle(encoder, crops, labels, cfg, version)
    if encoder_of is not None:
        bundle.encoder_version = encoder_of.encoder_version
    registry = ModelRegistry(state)
    registry.add(bundle, version=version)
    registry.promote(version)
    return bundle


__all__ = ["ALL_CRYSTAL", "make_state", "serve", "usable_crops"]
