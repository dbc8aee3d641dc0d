"""CPU inference cost of a model bundle: crops/s for embed alone and for predict_proba (embed + head + T).

    .venv/bin/python bench/eval_inference.py BUNDLE_DIR [--batch 64] [--repeats 5]

The ratio predict_proba / embed is measured in the same run: it is what the head and calibration
add on top of the encoder (should be ~1.0: the encoder is the cost).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from xtalwatch.learn.bundle import ModelBundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    b = ModelBundle.load(a.bundle)
    crops = np.random.default_rng(0).integers(0, 255, (a.batch, b.image_size, b.image_size, 3), dtype=np.uint8)
    b.predict_proba(crops)  # warm-up
    for name, fn in (("embed", b.embed), ("predict_proba", b.predict_proba)):
        t = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            fn(crops)
            t.append(time.perf_counter() - t0)
        best = min(t)
        print(f"{name:14s} {b.image_size} px batch {a.batch}: {a.batch / best:7.1f} crops/s "
              f"({1000 * best / a.batch:.2f} ms/crop, best of {a.repeats}), torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
