"""Cataloguing throughput for a burst of JPEG files, against a plain scandir + sha256 loop.

    .venv/bin/python bench/bench_ingest.py --files 2000 --size 1280x960

Three figures from the same run over the same files (all in the page cache, as they are just
after an imager writes them):
  baseline  os.scandir + read + sha256 of every file, single thread;
  ingest    `xtalwatch ingest` logic (stat, read, hash, probe, adapters, SQLite), single thread;
  service   the running service: files renamed into the watched folder in one burst, timed
            until the catalogue holds them all (includes the settle wait, reported separately).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from xtalwatch.config import load_settings
from xtalwatch.observe.metrics import Metrics
from xtalwatch.service import Service
from xtalwatch.stages.pipeline import build_pipeline
from xtalwatch.stages.watch import scan_folder
from xtalwatch.store.report import totals


def make_frames(folder: Path, count: int, width: int, height: int) -> None:
    """Distinct JPEGs of drop-like content (smooth background, noise) at a realistic file size."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (120 + 60 * np.sin(xx / 97.0) * np.cos(yy / 83.0)).astype(np.float32)
    for i in range(count):
        plate = f"bench{i // 96:03d}"
        row, col = "ABCDEFGH"[(i % 96) // 12], i % 12 + 1
        noise = rng.normal(0, 6, (height, width)).astype(np.float32)
        grey = np.clip(base + noise + (i % 50), 0, 255).astype(np.uint8)
        frame = cv2.merge([grey, np.roll(grey, i, axis=1), grey])
        target = folder / plate / "inspection_01"
        target.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target / f"{plate}_{col:02d}{row}_1.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])


def baseline(folder: Path) -> float:
    start = time.perf_counter()
    n = 0
    for path in scan_folder(folder, []):
        with open(path, "rb") as handle:
            hashlib.sha256(handle.read()).hexdigest()
        os.stat(path)
        n += 1
    return time.perf_counter() - start


def one_shot_ingest(folder: Path, state: Path) -> float:
    settings = load_settings(None, {"state.dir": state})
    # `xtalwatch ingest --no-preprocess`: the service's own chain, built by the same builder.
    pipeline = build_pipeline(settings, Metrics(), through="catalogue")
    ingestor = pipeline.ingestor_for(folder)
    start = time.perf_counter()
    for path in scan_folder(folder, settings.watch.ignore_globs):
        ingestor.ingest(path)
    elapsed = time.perf_counter() - start
    pipeline.catalogue.close()
    return elapsed


def service_burst(staging: Path, watch: Path, state: Path, count: int, settle: float) -> float:
    settings = load_settings(None, {"watch.dir": watch, "state.dir": state, "watch.settle_seconds": settle,
                                    "metrics.port": 0, "logging.level": "WARNING"})
    service = Service(settings, Metrics())
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    while not service.ready.is_set():
        time.sleep(0.05)
    start = time.perf_counter()
    for plate in sorted(staging.iterdir()):
        os.rename(plate, watch / plate.name)  # whole plates appear at once, as complete files
    while totals(service.catalogue)["images"] < count:
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    service.request_stop()
    thread.join()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", default="1280x960")
    parser.add_argument("--settle", type=float, default=0.5, help="watch.settle_seconds for the service run")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="xtalwatch-bench-") as tmp:
        root = Path(tmp)
        frames = root / "frames"
        frames.mkdir()
        print(f"writing {args.files} JPEGs of {width}x{height} ...", file=sys.stderr)
        make_frames(frames, args.files, width, height)
        mb = sum(p.stat().st_size for p in frames.rglob("*.jpg")) / 1e6
        baseline(frames)  # warm the page cache for everyone
        t_base = baseline(frames)
        t_ingest = one_shot_ingest(frames, root / "state-ingest")
        watch = root / "watch"
        watch.mkdir()
        t_service = service_burst(frames, watch, root / "state-service", args.files, args.settle)
        n = args.files
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"files: {n} JPEG {width}x{height}, {mb:.0f} MB in all")
        print(f"baseline scandir+sha256  : {n / t_base:8.0f} files/s  ({t_base:.2f} s)")
        print(f"one-shot ingest          : {n / t_ingest:8.0f} files/s  ({t_ingest:.2f} s)  ratio to baseline {t_base / t_ingest:.2f}")
        print(f"service burst (settle {args.settle}s): {n / t_service:8.0f} files/s  ({t_service:.2f} s)  "
              f"ratio to baseline {t_base / t_service:.2f}; without the settle wait {n / max(t_service - args.settle, 1e-9):.0f} files/s")
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
