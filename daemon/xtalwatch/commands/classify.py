"""``xtalwatch classify PATH...``: class, probabilities, quality flags and model version per file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xtalwatch.commands._common import add_config_args, settings_from_args
from xtalwatch.learn.registry import current_path
from xtalwatch.store.paths import shown

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "classify", help="classify image files with the current model",
        description="Preprocess each file like the service does and classify the drop crop with the current "
                    "model (<state>/models/current) or --model DIR. Calibrated probabilities below "
                    "classify.uncertain_below add the flag 'uncertain'.")
    add_config_args(p, watch=False)
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--model", type=Path, metavar="DIR", help="a model bundle folder (default: <state>/models/current)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def _files(paths: list[Path]) -> list[Path]:
    from xtalwatch.learn.simclr.data import list_images

    out: list[Path] = []
    for p in paths:
        out += list_images(p) if p.is_dir() else [p]
    return out


def classify_files(bundle, files: list[Path], settings) -> list[dict]:
    """Preprocess each file like the service does, then classify all the crops in one batch."""
    import numpy as np

    from xtalwatch.learn.bundle import NoClassifier, calls
    from xtalwatch.preprocess import DecodeError, decode_bytes, preprocess_array

    classify_cfg = settings.classify
    cfg = settings.preprocess.model_copy(update={"image_size": bundle.image_size, "channels": 3})
    crops, done, out = [], [], []
    for f in files:
        try:
            image, _ = decode_bytes(f.read_bytes(), max_pixels=settings.ingest.max_pixels)
            pre = preprocess_array(image, cfg)
        except (OSError, DecodeError, ValueError) as exc:
            out.append({"path": str(f), "error": str(exc)})
            continue
        crops.append(pre.crop)
        done.append((f, pre.flags))
    probs = None
    reason = None
    if crops:
        try:
            probs = bundle.predict_proba(np.stack(crops))
        except NoClassifier as exc:
            reason = str(exc)
    for i, (f, flags) in enumerate(done):
        row = calls(bundle, probs[i:i + 1], classify_cfg.uncertain_below)[0] if probs is not None else \
            {"class": None, "confidence": None, "probabilities": None, "model_version": bundle.version,
             "uncertain": False, "note": reason}
        row["flags"] = list(flags) + (["uncertain"] if row.pop("uncertain") else [])
        out.append({"path": str(f), **row})
    order = {str(f): i for i, f in enumerate(files)}
    return sorted(out, key=lambda r: order.get(r["path"], 0))


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    model_dir = args.model or current_path(settings.state.dir)
    if not (model_dir / "bundle.json").is_file():
        print(f"xtalwatch classify: no model yet at {model_dir} (train one, or name a bundle with --model DIR)",
              file=sys.stderr)
        return 1
    from xtalwatch.learn.bundle import ModelBundle

    bundle = ModelBundle.load(model_dir)
    results = classify_files(bundle, _files(args.paths), settings)
    for r in results:
        if args.json:
            print(json.dumps(r))
        elif r.get("error"):
            print(f"{shown(r['path'])}: error: {r['error']}")
        else:
            probs = " ".join(f"{c}={p:.2f}" for c, p in (r["probabilities"] or {}).items())
            print(f"{shown(r['path'])}: {r['class'] or '-'} ({r['confidence'] or 0:.2f})  [{probs}]  "
                  f"flags: {','.join(r['flags']) or '-'}  model {r['model_version']}")
    return 1 if any(r.get("error") for r in results) else 0
