"""Preprocessing throughput on ONE core, against decoding alone (cv2.imread) in the same run.

    .venv/bin/python bench/bench_preprocess.py [--frames 40] [--real /work/shared/real-images]

Rows: generated 1280x960 colour JPEGs and 2532x2028 greyscale JPEGs (and, with --real, the
real photographs). Columns: frames/s for cv2.imread alone; for ``preprocess_array`` after
decoding (decode + locate + crop + normalise + quality, no disk writes); and for
``preprocess_file`` with a cold cache (read, sha256, decode, all the above, crop PNGs and
JSON written). The ratio is total time / imread time: the goal is <= 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from xtalwatch.config import PreprocessConfig
from xtalwatch.preprocess import decode_bytes, preprocess_array, preprocess_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from preprocess_helpers import make_frame  # noqa: E402


def _generate(folder: Path, n: int, size: tuple[int, int], grey: bool) -> list[Path]:
    paths = []
    for i in range(n):
        frame, _ = make_frame(size=size, seed=i, drop_centre=(0.4 + 0.02 * (i % 8), 0.5))
        if grey:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        path = folder / f"{size[1]}x{size[0]}_{'grey' if grey else 'colour'}_{i:03d}.jpg"
        cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(path)
    return paths


def _time(fn, paths: list[Path], repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for p in paths:
            fn(p)
        best = min(best, time.perf_counter() - start)
    return best / len(paths)


def bench(name: str, paths: list[Path], cfg: PreprocessConfig, max_pixels: int) -> None:
    imread = _time(lambda p: cv2.imread(str(p), cv2.IMREAD_ANYCOLOR), paths)
    in_memory = _time(lambda p: preprocess_array(decode_bytes(p.read_bytes(), max_pixels=max_pixels)[0], cfg), paths)

    def cold(p: Path) -> None:
        with tempfile.TemporaryDirectory() as cache:
            preprocess_file(p, cfg, Path(cache), max_pixels=max_pixels)

    full = _time(cold, paths)
    print(
        f"| {name} | {len(paths)} | {1 / imread:.1f} | {1 / in_memory:.1f} | {in_memory / imread:.2f} "
        f"| {1 / full:.1f} | {full / imread:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40, help="generated frames per size")
    parser.add_argument("--real", type=Path, help="also time the real photographs in this folder")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core: the service runs one frame per worker process
    cfg = PreprocessConfig()
    max_pixels = 120_000_000
    print(f"OpenCV {cv2.__version__}, numpy {np.__version__}, cv2.setNumThreads(1)")
    print("| frames | n | imread fps | decode+preprocess fps | ratio | preprocess_file fps (writes) | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench("1280x960 colour JPEG (generated)", _generate(folder, args.frames, (960, 1280), grey=False), cfg, max_pixels)
        bench("2532x2028 grey JPEG (generated)", _generate(folder, args.frames, (2028, 2532), grey=True), cfg, max_pixels)
    if args.real:
        by_source: dict[str, list[Path]] = {}
        for p in sorted(args.real.rglob("*")):
            if p.suffix.lower() in {".jpg", ".jpeg"}:
                by_source.setdefault(p.relative_to(args.real).parts[0], []).append(p)
        for source, paths in by_source.items():
            bench(f"{source} (real)", paths, cfg, max_pixels)


if __name__ == "__main__":
    main()
