"""Label → new head serving: the seconds from a label in the review app to the classify stage serving a re-fit head.

    nice -n 10 .venv/bin/python bench/bench_label_to_serve.py --labels 10000 --runs 5

A real catalogue holds ``--labels`` images, each labelled; a real :class:`FeatureCache` holds their
512-d features under the serving encoder. The features are **synthetic** (4 classes, each a few
clusters in 512-d with noise and 10 % wrong labels): the timing of a head re-fit does not depend
on where the features came from, and embedding 10,000 real crops would only time the encoder.
The serving model is a real bundle (a ResNet-18 encoder at 64 px, a ``classify.head`` head) in a
real registry. Each run changes 10 labels, calls :meth:`HeadRefitter.request` (as the label
handler does) and waits for the promotion; then a real :class:`ClassifyStage` ``refresh_model()``
loads the new version, which is the moment it serves. Reported: median and max over runs of the
whole path and of each step (the debounce wait, features, fit, gate, save + promote, load).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from xtalwatch.config import load_settings
from xtalwatch.learn.bundle import ModelBundle
from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.learn.heads.serving import fit_head
from xtalwatch.learn.refit import HeadRefitter
from xtalwatch.learn.registry import ModelRegistry
from xtalwatch.learn.simclr.encoder import build_encoder
from xtalwatch.observe.metrics import Metrics
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import Probe
from xtalwatch.stages.classify import ClassifyStage
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import LabelRow, apply, set_label

CLASSES = ["clear", "precipitate", "crystals", "other"]


def synthetic_features(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """(n, 512) features: each class a few clusters, noisy; 10 % of the labels wrong, as people's are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASSES), 3, 512))
    y = rng.integers(0, len(CLASSES), n)
    x = centres[y, rng.integers(0, 3, n)] + rng.normal(0, 1.5, (n, 512))
    wrong = rng.random(n) < 0.1
    y[wrong] = rng.integers(0, len(CLASSES), int(wrong.sum()))
    return x.astype(np.float32), [CLASSES[i] for i in y]


def build_state(state: Path, n: int, head: str) -> tuple[list[int], list[str]]:
    """The catalogue with ``n`` labelled images, their cached features, and a promoted model v1."""
    cat = Catalogue(state)
    ids = []
    for i in range(n):
        new = cat.record_image(f"/imager/plate{i // 96}/w{i % 96}.png", 1000, i, f"{i:064x}", Probe("png", 64, 64, 3),
                               ImageIdentity(f"plate{i // 96}", f"A{i % 96 + 1}", 1, 1), completed_at=float(i))
        cat.record_preprocess(new.image_id, "hough", [], f"/crops/{i}.png", None, "{}", "preprocessed")
        ids.append(new.image_id)
    features, labels = synthetic_features(n, seed=0)
    apply(cat, [(LabelRow(k, str(i), lab, "bench"), i) for k, (i, lab) in enumerate(zip(ids, labels, strict=True))])
    cache = FeatureCache(state)
    cache.put("v1", ids, features)
    cache.save()
    settings = load_settings(None, {"state.dir": state, "classify.head": head})
    y = np.array([CLASSES.index(c) for c in labels[:500]])
    bundle = ModelBundle(version="v1", encoder=build_encoder(64, small_stem=False), image_size=64, classes=CLASSES,
                         head=fit_head(features[:500], y, len(CLASSES), settings.classify))
    registry = ModelRegistry(state, cat)
    registry.add(bundle, version="v1", metrics={"gate": {"feature_std": 0.01}})
    registry.promote("v1")
    cat.close()
    return ids, labels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=10000, help="labelled images (each with cached features)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--head", choices=["linear", "knn"], default="linear")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the goal is for 2 cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-l2s-") as tmp:
        state = Path(tmp) / "state"
        t = time.perf_counter()
        ids, labels = build_state(state, args.labels, args.head)
        print(f"setup: {args.labels} labelled images, features cached, model v1 serving "
              f"({time.perf_counter() - t:.1f} s)", file=sys.stderr)
        settings = load_settings(None, {"state.dir": state, "classify.head": args.head})
        cat = Catalogue(state)
        stage = ClassifyStage(state, cat, Metrics(process_collectors=False))
        stage.refresh_model()
        promoted = threading.Event()
        refitter = HeadRefitter(settings, cat, FeatureCache(state), on_new_model=lambda v: promoted.set())
        refitter.start()
        rng = np.random.default_rng(1)
        rows = []
        try:
            for run in range(args.runs):
                for i in rng.choice(len(ids), 10, replace=False):  # 10 labels changed, as a reviewer would
                    set_label(cat, ids[i], CLASSES[rng.integers(len(CLASSES))], "bench", time.time())
                promoted.clear()
                before = refitter.refits
                t0 = time.monotonic()
                refitter.request()
                while refitter.refits == before:
                    if promoted.wait(0.01):
                        break
                while refitter.refits == before:  # on_new_model runs just before the count goes up
                    time.sleep(0.001)
                result = refitter.last
                t_load = time.monotonic()
                swapped = stage.refresh_model()
                load = time.monotonic() - t_load
                total = time.monotonic() - t0
                steps = result.steps
                wait = result.seconds - sum(steps.values())
                rows.append({"total": total, "debounce+wait": wait, "features": steps.get("features", 0.0),
                             "fit": steps.get("fit", 0.0), "gate": steps.get("gate", 0.0),
                             "save+promote": steps.get("save", 0.0), "load": load,
                             "promoted": result.promoted and swapped, "accuracy": result.accuracy})
                print(f"run {run + 1}: {total:.2f} s, promoted={result.promoted}, serving {stage.version}, "
                      f"accuracy {result.accuracy}", file=sys.stderr)
        finally:
            refitter.stop()
            cat.close()

    cols = ["total", "debounce+wait", "features", "fit", "gate", "save+promote", "load"]
    print(f"\nLabel → re-fit head serving, {args.labels} labelled images, {args.head} head, "
          f"debounce {settings.web.refit_debounce_seconds} s, {args.runs} runs, torch threads {args.threads}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, synthetic 512-d features\n")
    print("| seconds | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, fn in (("median", np.median), ("max", np.max)):
        print(f"| {name} | " + " | ".join(f"{fn([r[c] for r in rows]):.3f}" for c in cols) + " |")
    print(f"\npromoted and swapped in: {sum(r['promoted'] for r in rows)}/{len(rows)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
