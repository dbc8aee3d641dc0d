"""Synthetic imager throughput: images/s for a batch run, against plain cv2.imwrite.

The baseline writes the same number of constant images of the same size with ``cv2.imwrite``
in one process, in the same run, so the ratio says what rendering costs on top of writing.

    .venv/bin/python bench/bench_synth.py --images 2016 --size 512x512 --workers 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from xtalwatch.tools.synth import generate_plates


def _baseline(folder: Path, count: int, width: int, height: int) -> float:
    img = np.full((height, width, 3), 128, np.uint8)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.jpg"), img)
    return count / (time.perf_counter() - start)


def _cpu_ms_per_image(count: int, width: int, height: int) -> float:
    """CPU time to render and encode one frame in this process: immune to other load on the box."""
    from xtalwatch.tools.synth.generate import _encoded, plan_jobs

    cv2.setNumThreads(1)
    jobs = plan_jobs(plates=1, layout="export", wells=96, drops=3, size=(width, height), seed=1, balance="even")[:count]
    _encoded(jobs[0])
    start = time.process_time()
    for job in jobs:
        _encoded(job)
    return (time.process_time() - start) / len(jobs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2016, help="rounded up to whole 96-well, 3-drop plates")
    parser.add_argument("--size", default="512x512", help="WxH")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--layout", default="rockmaker")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    plates = -(-args.images // 288)
    root = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        start = time.perf_counter()
        rows = generate_plates(root / "synth", plates=plates, layout=args.layout, wells=96, drops=3,
                               inspections=1, size=(width, height), seed=0, workers=args.workers,
                               balance="even")  # every class, as the recorded figures had
        synth_rate = len(rows) / (time.perf_counter() - start)
        base_rate = _baseline(root / "baseline", len(rows), width, height)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OpenCV {cv2.__version__}, Python {platform.python_version()}")
    print(f"images: {len(rows)} of {width}x{height}, layout {args.layout}, workers {args.workers}")
    print(f"synth: {synth_rate:.1f} images/s  ({10_000 / synth_rate / 60:.1f} min per 10,000)")
    print(f"baseline cv2.imwrite of a constant image, 1 process: {base_rate:.1f} images/s")
    print(f"ratio synth / baseline: {synth_rate / base_rate:.3f}")
    cpu_ms = _cpu_ms_per_image(200, width, height)
    print(f"CPU per frame (render + encode, 1 thread): {cpu_ms:.1f} ms -> "
          f"{1000 / cpu_ms * args.workers:.0f} images/s on {args.workers} idle cores")
    try:
        print(f"load average during the run: {os.getloadavg()[0]:.2f}")
    except OSError:
        pass


if __name__ == "__main__":
    main()
