"""File complete → result stored: latency of the whole service at a steady arrival rate.

    .venv/bin/python bench/bench_latency.py --rate 10 --seconds 60 --size 1280x960

A first model is trained on a small synthetic plate (as the demo does), then the real service
watches a folder into which 1280x960 colour JPEGs arrive at a steady rate, each written in two
parts the way an imager does. For every image the latency is measured from the moment the writer
closed the file to the moment its prediction row was committed (``predictions.created_at``),
so it includes the settle wait, ingest, preprocessing in the worker pool, and classification.
Also printed, from the same run: preprocessing alone (the service's histogram) and, as the
baseline ratio, how much of the arrival interval the whole pipeline uses.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from xtalwatch.config import load_settings
from xtalwatch.learn.retrain import run_retrain
from xtalwatch.observe.metrics import Metrics
from xtalwatch.service import Service
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import import_labels
from xtalwatch.tools.synth import generate_plates

SUBCLASSES = ["needles:crystals", "plates:crystals", "prisms:crystals", "microcrystals:crystals", "dark:other"]


def train_first_model(root: Path, size: tuple[int, int]) -> Path:
    imager, state = root / "train-imager", root / "state"
    rows = generate_plates(imager, plates=1, layout="export", wells=96, drops=1, inspections=1, size=size, seed=1,
                           labels=root / "train_labels.csv", balance="even")
    settings = load_settings(None, {"state.dir": state, "watch.dir": imager, "train.image_size": 32,
                                    "train.small_stem": False, "train.batch_size": 32, "train.max_steps": 30,
                                    "train.min_images": 20, "classify.subclasses": SUBCLASSES})
    from xtalwatch.commands.ingest import run as ingest_run

    args = argparse.Namespace(paths=[imager], config=None, state=state, log_level="WARNING", root=None,
                              no_preprocess=False)
    ingest_run(args)
    labelled = root / "labelled.csv"
    labelled.write_text("path,class\n" + "".join(f"{imager / r.path},{r.label}\n" for r in rows))
    catalogue = Catalogue(state)
    try:
        result = import_labels(catalogue, labelled, settings.classify, labeller="bench")
        assert not result.errors, result.errors[:3]
    finally:
        catalogue.close()
    outcome = run_retrain(settings, now=True)
    assert outcome.status == "promoted", outcome.summary()
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=10.0, help="images per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long images arrive")
    parser.add_argument("--size", default="1280x960")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    n = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory(prefix="xtalwatch-latency-") as tmp:
        root = Path(tmp)
        print("training a first model ...", file=sys.stderr)
        state = train_first_model(root, size)
        print(f"rendering {n} frames of {size[0]}x{size[1]} ...", file=sys.stderr)
        frames = root / "frames"
        rows = generate_plates(frames, plates=max(1, n // 96 + 1), layout="export", wells=96, drops=1,
                               inspections=1, size=size, seed=2, write_labels=False, balance="even")[:n]
        watch = root / "watch"
        watch.mkdir()
        settings = load_settings(None, {"watch.dir": watch, "state.dir": state, "metrics.port": 0,
                                        "classify.subclasses": SUBCLASSES, "logging.level": "WARNING"})
        metrics = Metrics()
        service = Service(settings, metrics)
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        while not service.ready.is_set() or service.classify is None or service.classify.version is None:
            time.sleep(0.05)
        closed_at: dict[str, float] = {}
        start = time.monotonic()
        for k, row in enumerate(rows):  # a steady rate: file k is due at start + k / rate
            time.sleep(max(0.0, start + k / args.rate - time.monotonic()))
            data = (frames / row.path).read_bytes()
            target = watch / row.path
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as handle:  # written in two parts, as an imager does
                handle.write(data[: len(data) // 2])
                handle.flush()
                time.sleep(0.02)
                handle.write(data[len(data) // 2:])
            closed_at[os.path.abspath(target)] = time.time()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = service.catalogue.query(
                "SELECT COUNT(*) FROM images i WHERE i.status != 'preprocessed' OR EXISTS "
                "(SELECT 1 FROM predictions p WHERE p.image_id = i.id)")[0][0]
            if done >= len(rows):
                break
            time.sleep(0.2)
        result = service.catalogue.query(
            "SELECT i.path, p.created_at FROM images i JOIN predictions p ON p.image_id = i.id")
        flagged = sum(1 for (path,) in service.catalogue.query("SELECT path FROM images WHERE status != 'preprocessed'")
                      if path in closed_at)
        pre_sum = metrics.registry.get_sample_value("xtalwatch_preprocess_duration_seconds_sum") or 0.0
        pre_n = metrics.registry.get_sample_value("xtalwatch_preprocess_duration_seconds_count") or 1.0
        service.request_stop()
        thread.join()
        lat = np.array([created - closed_at[path] for path, created in result if path in closed_at])
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"arrivals: {len(rows)} JPEG {size[0]}x{size[1]} at {args.rate:g}/s for {args.seconds:g} s; "
              f"classified {len(lat)}, flagged or failed (not classified) {flagged}")
        print(f"file closed -> result stored: p50 {np.percentile(lat, 50):.3f} s, p95 {np.percentile(lat, 95):.3f} s, "
              f"p99 {np.percentile(lat, 99):.3f} s, max {lat.max():.3f} s")
        print(f"preprocessing in the pool: mean {pre_sum / pre_n * 1000:.1f} ms per image")
        print(f"p95 as a fraction of the 1 s goal: {np.percentile(lat, 95) / 1.0:.2f}; "
              f"mean latency / arrival interval: {lat.mean() * args.rate:.2f}")
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
