"""Accuracy gained per 10 labels: the review queue's order (``review_order``) against random picks.

    nice -n 10 .venv/bin/python bench/bench_active_learning.py --plates 6 --steps 150 --seeds 5 --budget 100

The synthetic imager writes a run as an ImageFolder with its ground truth; every frame is
preprocessed as the service does it (``preprocess_array``: locate, crop, normalise); a short
SimCLR run (``learn.simclr.train``) on those crops makes a real encoder, and its features are the
cached features the service would hold. Then labelling is simulated: 30 % of the images are a test
set, the rest the unlabelled pool. Both arms start from the same 10 random labels; each round adds
10 labels, picked either by :func:`~xtalwatch.learn.active.review_order` (margins from the current
``classify.head`` head, spread by k-centre greedy) or at random, re-fits that head
(``learn.heads.serving.fit_head``, as a re-fit does) and scores it on the test set. Repeated over
seeds (the split, the start and the random picks change; the encoder does not). Writes
``docs/img/active_learning.png`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from xtalwatch.config import load_settings
from xtalwatch.figures import pyplot, save_figure
from xtalwatch.learn.active import review_order
from xtalwatch.learn.features import embed, to_model_rgb
from xtalwatch.learn.heads.calibrate import softmax
from xtalwatch.learn.heads.serving import fit_head
from xtalwatch.learn.review_queue import margin_of
from xtalwatch.learn.simclr import from_arrays, load_encoder, train
from xtalwatch.preprocess.pipeline import preprocess_array
from xtalwatch.tools.synth import generate_plates

SUBCLASSES = ["needles:crystals", "plates:crystals", "prisms:crystals", "microcrystals:crystals", "dark:other"]
ROUND = 10  # labels per round: the unit the issue asks the gain for


# -- data: synthetic frames → service crops → SimCLR encoder → features ------------------------------
def make_features(root: Path, args: argparse.Namespace) -> tuple[np.ndarray, list[str]]:
    settings = load_settings(None, {"state.dir": root / "state", "classify.subclasses": SUBCLASSES,
                                    "train.image_size": args.image_size, "train.small_stem": False,
                                    "train.batch_size": args.batch, "train.max_steps": args.steps,
                                    "train.device": "cpu", "train.workers": 1, "train.min_images": 50,
                                    "classify.head": args.head})
    t = time.perf_counter()
    rows = generate_plates(root / "imager", plates=args.plates, wells=96, drops=1, size=(args.frame, args.frame),
                           seed=0, imagefolder=True, labels=root / "truth.csv", workers=2)
    crops, truth = [], []
    for row in rows:
        frame = cv2.imread(str(root / "imager" / row.path), cv2.IMREAD_COLOR)
        crops.append(preprocess_array(frame, settings.preprocess).crop)
        truth.append(settings.classify.class_of(row.label))
    crops_arr = np.stack(crops)
    print(f"{len(rows)} frames generated and preprocessed ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    t = time.perf_counter()
    images = to_model_rgb(crops_arr, args.image_size)
    result = train(settings.train, from_arrays(images), root / "simclr", resume=False, progress=False)
    encoder = load_encoder(result.checkpoint)
    features = embed(encoder, images)
    print(f"SimCLR {result.steps} steps ({result.views_per_second:.0f} views/s), final loss {result.losses[-1]:.3f}, embedded "
          f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    return features, truth


# -- the labelling simulation ---------------------------------------------------------------------
def accuracy(x: np.ndarray, y: np.ndarray, picked: np.ndarray, test: np.ndarray, settings) -> tuple[float, np.ndarray]:  # noqa: ANN001
    """Test accuracy of the head fitted on ``picked``, and its (N,) margins on every image."""
    present = np.unique(y[picked])
    if len(present) == 1:
        return float(np.mean(y[test] == present[0])), np.zeros(len(x))
    head = fit_head(x[picked], np.searchsorted(present, y[picked]), len(present), settings.classify)
    logits = head.logits(x)
    predicted = present[logits.argmax(1)]
    return float(np.mean(predicted[test] == y[test])), margin_of(softmax(logits))


def simulate(x: np.ndarray, y: np.ndarray, seed: int, budget: int, settings) -> dict[str, list[float]]:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    test = order[:int(0.3 * len(x))]
    pool = order[int(0.3 * len(x)):]
    start = pool[:ROUND]
    curves: dict[str, list[float]] = {}
    for arm in ("active", "random"):
        picked = start.copy()
        arm_rng = np.random.default_rng(seed + 1000)
        curve = []
        while True:
            acc, margins = accuracy(x, y, picked, test, settings)
            curve.append(acc)
            if len(picked) >= budget:
                break
            labelled = np.zeros(len(pool), bool)
            labelled[np.isin(pool, picked)] = True
            if arm == "active":
                new = pool[review_order(x[pool], margins[pool], labelled, ROUND)]
            else:
                new = arm_rng.choice(pool[~labelled], ROUND, replace=False)
            picked = np.concatenate([picked, new])
        curves[arm] = curve
    return curves


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plates", type=int, default=6, help="96-well plates of one drop each")
    ap.add_argument("--frame", type=int, default=256, help="synthetic frame side, px")
    ap.add_argument("--image-size", type=int, default=32, help="encoder input side, px")
    ap.add_argument("--steps", type=int, default=150, help="SimCLR steps")
    ap.add_argument("--batch", type=int, default=64, help="SimCLR batch")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=100, help="labels at the end of the simulation")
    ap.add_argument("--head", choices=["linear", "knn"], default="linear")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/img/active_learning.png")
    args = ap.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench-al-") as tmp:
        x, truth = make_features(Path(tmp), args)
    classes = sorted(set(truth))
    y = np.array([classes.index(c) for c in truth])
    settings = load_settings(None, {"classify.head": args.head, "classify.subclasses": SUBCLASSES})
    runs = [simulate(x, y, seed, args.budget, settings) for seed in range(args.seeds)]
    labels = np.arange(ROUND, args.budget + 1, ROUND)
    active = np.array([r["active"] for r in runs])
    rand = np.array([r["random"] for r in runs])

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, data, colour in (("review queue (low margin + k-centre)", active, "tab:blue"),
                               ("random picks", rand, "tab:grey")):
        mean, std = data.mean(0), data.std(0)
        ax.plot(labels, mean, marker="o", color=colour, label=name)
        ax.fill_between(labels, mean - std, mean + std, color=colour, alpha=0.2)
    ax.set_xlabel("labels given")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{args.head} head on SimCLR features, synthetic imager\n"
                 f"{len(y)} images, {args.seeds} seeds, mean ± std", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, args.out)

    counts = ", ".join(f"{c} {int((y == i).sum())}" for i, c in enumerate(classes))
    print(f"\n{len(y)} synthetic images ({counts}); {args.head} head; SimCLR {args.steps} steps at "
          f"{args.image_size} px; {args.seeds} seeds; mean ± std test accuracy; {os.cpu_count()} CPUs; "
          f"{time.perf_counter() - started:.0f} s in all\n")
    print("| labels | review queue | random | difference |")
    print("|---:|---:|---:|---:|")
    for k, n in enumerate(labels):
        print(f"| {n} | {active[:, k].mean():.3f} ± {active[:, k].std():.3f} | {rand[:, k].mean():.3f} ± "
              f"{rand[:, k].std():.3f} | {active[:, k].mean() - rand[:, k].mean():+.3f} |")
    span = (len(labels) - 1) or 1
    print(f"\nmean gain per 10 labels from {labels[0]} to {labels[-1]}: review queue "
          f"{(active[:, -1] - active[:, 0]).mean() / span:+.3f}, random {(rand[:, -1] - rand[:, 0]).mean() / span:+.3f}")
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
