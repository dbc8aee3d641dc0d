"""A tiny state folder for retraining tests: real PNG crops, recorded through the real Catalogue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from xtalwatch.config import Settings, load_settings
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import Probe
from xtalwatch.store.catalogue import Catalogue

CLASSES = ("clear", "crystals", "precipitate")
CROP_PX = 24


def crop(kind: str, rng: np.random.Generator, size: int = CROP_PX) -> np.ndarray:
    """A BGR crop that looks like its class at toy scale: a smooth drop, sharp bright shapes, or speckle."""
    tint = rng.uniform(90, 170, 3)
    image = np.ones((size, size, 3)) * tint
    yy, xx = np.mgrid[:size, :size]
    image *= (1 - 0.3 * (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size / 2) ** 2)).clip(0, 1)[..., None]
    if kind == "crystals":
        for _ in range(rng.integers(2, 4)):
            y, x = rng.integers(2, size - 6, 2)
            image[y:y + 4, x:x + rng.integers(2, 5)] = 250
    elif kind == "precipitate":
        image += rng.normal(0, 40, (size, size, 1))
    image += rng.normal(0, 3, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def make_state(state: Path, n_images: int, *, labelled_per_class: int = 0, flagged: int = 2, failed: int = 1,
               seed: int = 0, start: int = 0) -> dict[str, Any]:
    """Record ``n_images`` usable images (plus some flagged and failed ones) with crops on disk.

    The first ``labelled_per_class`` images of each class get a label. Returns ids by kind.
    """
    rng = np.random.default_rng(seed)
    cat = Catalogue(state)
    crops = state / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    usable, bad, per_class = [], [], dict.fromkeys(CLASSES, 0)
    try:
        for i in range(start, start + n_images + flagged + failed):
            kind = CLASSES[i % len(CLASSES)]
            image = crop(kind, rng)
            ok, png = cv2.imencode(".png", image)
            assert ok
            sha = f"{seed:04d}{i:060d}"
            path = crops / f"{sha}.png"
            path.write_bytes(png.tobytes())
            new = cat.record_image(f"plate1/A{i}.jpg", len(png), i, sha, Probe("png", CROP_PX, CROP_PX, 3),
                                   ImageIdentity("plate1", f"A{i}", 1, 1), completed_at=float(i))
            k = i - start
            status = "preprocessed" if k < n_images else "flagged" if k < n_images + flagged else "failed"
            cat.record_preprocess(new.image_id, "hough", ["too_dark"] if status == "flagged" else [],
                                  None if status == "failed" else str(path),
                                  "boom" if status == "failed" else None, json.dumps({}), status)
            (usable if status == "preprocessed" else bad).append(new.image_id)
            if status == "preprocessed" and per_class[kind] < labelled_per_class:
                per_class[kind] += 1
                with cat.transaction() as conn:
                    conn.execute("INSERT INTO labels (image_id, label, labeller, created_at) VALUES (?, ?, 'test', ?)",
                                 (new.image_id, kind, float(i)))
    finally:
        cat.close()
    return {"usable": usable, "bad": bad}


def tiny_settings(state: Path, **overrides: Any) -> Settings:
    """Settings for a few-second training: 16 px, small batch, a handful of steps, CPU."""
    base = {"state.dir": state, "preprocess.image_size": CROP_PX, "train.image_size": 16, "train.batch_size": 16, "train.small_stem": False,
            "train.max_steps": 3, "train.min_images": 30, "train.device": "cpu", "train.checkpoint_every_steps": 100,
            "train.log_every_steps": 1, "train.workers": 1, "classify.knn_k": 5, "logging.level": "INFO"}
    base.update(overrides)
    return load_settings(None, base)
