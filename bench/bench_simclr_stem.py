"""Which stem earns its CPU time: linear-probe accuracy of each stem after the same wall time.

For each stem (torchvision's standard 7x7/2 + max-pool, and the 3x3/1 small stem), on the same
ImageFolder crops: time one training step, set ``train.max_steps`` so that the run fills
``--seconds`` of wall time, train with ``xtalwatch.learn.simclr.train`` (the path ``xtalwatch
train`` runs), embed every crop with ``learn.features.embed``, and fit the serving linear probe
(``learn.heads.linear.fit_linear``) on half the images of each class, scored on the other half.
A random-init encoder (0 s of training) of each stem is the floor.

    .venv/bin/python bench/bench_simclr_stem.py --images DIR --size 32 --batch 128 --seconds 90
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from xtalwatch.config import TrainConfig
from xtalwatch.learn.features import embed
from xtalwatch.learn.heads.linear import fit_linear
from xtalwatch.learn.simclr import build_encoder, load_encoder, load_folder, train
from xtalwatch.learn.simclr.data import CropDataset


def probe_accuracy(encoder: torch.nn.Module, data: CropDataset, labels: np.ndarray, seed: int) -> float:
    """Linear probe on half of each class, accuracy on the other half."""
    feats = embed(encoder, np.asarray(data.images))
    rng = np.random.default_rng(seed)
    fit = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fit[idx[: len(idx) // 2]] = True
    k = int(labels.max()) + 1
    head = fit_linear(feats[fit], labels[fit], k)
    return float((head.logits(feats[~fit]).argmax(1) == labels[~fit]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="ImageFolder: DIR/<class>/*.png")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=90, help="training wall time per stem")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="bench-stem-") as tmp:
        data = load_folder(a.images, a.size, Path(tmp) / "cache", preprocess=None)
        names = sorted({p.split("/")[0] for p in data.paths})
        labels = np.array([names.index(p.split("/")[0]) for p in data.paths])
        print(f"{len(data)} crops at {a.size} px, {len(names)} classes, batch {a.batch}, "
              f"{a.seconds:.0f} s per stem, {a.threads} threads\n")
        print("| stem | s/step | steps in budget | train s | probe accuracy | random-init probe |")
        print("| --- | --: | --: | --: | --: | --: |", flush=True)
        for small in (False, True):
            base = dict(image_size=a.size, batch_size=a.batch, device="cpu", seed=a.seed, min_images=2,
                        small_stem=small, checkpoint_every_steps=10_000, log_every_steps=10_000)
            t = time.perf_counter()
            train(TrainConfig(**base, max_steps=1), data, Path(tmp) / f"cal-{small}", resume=False, progress=False)
            per_step = time.perf_counter() - t
            steps = max(1, int(a.seconds / per_step))
            t = time.perf_counter()
            r = train(TrainConfig(**base, max_steps=steps), data, Path(tmp) / f"run-{small}", resume=False,
                      progress=False)
            spent = time.perf_counter() - t
            acc = probe_accuracy(load_encoder(r.checkpoint), data, labels, a.seed)
            torch.manual_seed(a.seed)
            floor = probe_accuracy(build_encoder(a.size, small), data, labels, a.seed)
            print(f"| {'small 3x3/1' if small else 'standard 7x7/2'} | {per_step:.1f} | {steps} | {spent:.0f} "
                  f"| {acc:.3f} | {floor:.3f} |", flush=True)


if __name__ == "__main__":
    main()
