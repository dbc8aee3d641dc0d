"""``xtalwatch preprocess PATH... --out DIR``: see what the service sees.

For each image (folders are recursed) writes, under ``--out``: the model-size crop, the
full-resolution crop, ``<name>.overlay.png`` (well and drop outlined on the frame) and
``<name>.quality.json``; prints one summary line per file. Exits 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from xtalwatch.commands._common import add_config_args, settings_from_args
from xtalwatch.store.paths import shown

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="locate the drop, crop and measure images; write crops, debug overlays and quality JSON",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders (recursed)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    add_config_args(parser, watch=False)
    parser.set_defaults(func=run)


def _images(paths: list[Path], extensions: set[str]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in extensions)
        else:
            yield path


def _unique_stem(path: Path, used: set[str]) -> str:
    stem = path.stem
    n = 1
    while stem in used:
        n += 1
        stem = f"{path.stem}-{n}"
    used.add(stem)
    return stem


def run(args: argparse.Namespace) -> int:
    from xtalwatch.preprocess import Location, decode_bytes, draw_overlay, preprocess_file

    settings = settings_from_args(args)
    cfg = settings.preprocess
    out: Path = args.out
    cache = out / ".cache"
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    used: set[str] = set()
    for path in _images(args.paths, set(settings.watch.extensions)):
        stem = _unique_stem(path, used)
        result = preprocess_file(path, cfg, cache, max_pixels=settings.ingest.max_pixels)
        (out / f"{stem}.quality.json").write_text(json.dumps(result.to_dict(), indent=1, sort_keys=True))
        if not result.ok:
            failures += 1
            print(f"{shown(str(path))}: ERROR {result.error}: {result.error_detail}")
            continue
        shutil.copyfile(result.crop_path, out / f"{stem}.crop.png")
        if result.full_crop_path:
            shutil.copyfile(result.full_crop_path, out / f"{stem}.full.jpg")
        image, _ = decode_bytes(path.read_bytes(), max_pixels=settings.ingest.max_pixels)
        location = Location(tuple(result.well_box), result.well_shape, tuple(result.drop_box), result.method)  # type: ignore[arg-type]
        overlay: np.ndarray = draw_overlay(image, location, result.flags)
        cv2.imwrite(str(out / f"{stem}.overlay.png"), overlay)
        q = result.quality
        x, y, w, h = result.drop_box
        print(
            f"{shown(str(path))}: {result.width}x{result.height} well={result.well_shape} {result.method} box={x},{y},{w},{h}"
            f" focus={q['focus']:.0f} mean={q['mean_brightness']:.0f} contrast={q['contrast']:.1f}"
            f" flags={','.join(result.flags) or '-'}"
        )
    sys.stdout.flush()
    return 1 if failures else 0
