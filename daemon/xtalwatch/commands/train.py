"""``xtalwatch train``: the service's retraining now (the catalogue), or SimCLR on a folder of images.

Without ``--images`` (or with ``--now``) it runs :func:`xtalwatch.learn.retrain.run_retrain` in the
foreground: the catalogue's usable images, the gate, the registry, and the outcome event with its
alert, exactly as the scheduled child does. With ``--images DIR`` it only trains an encoder, alone
or under ``torchrun --nproc_per_node=G $(which xtalwatch) train ...`` (DDP). Torch is imported only
when the command runs, so other commands start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from xtalwatch.commands._common import add_config_args, settings_from_args

__all__ = ["register", "run"]

_OVERRIDES = {  # flag attribute → config key
    "image_size": "train.image_size", "batch_size": "train.batch_size", "epochs": "train.epochs",
    "steps": "train.max_steps", "lr": "train.lr", "device": "train.device", "seed": "train.seed",
    "min_images": "train.min_images", "checkpoint_every": "train.checkpoint_every_steps",
    "max_memory_gb": "train.max_memory_gb",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the SimCLR encoder on unlabelled drop images",
        description="Train a SimCLR ResNet-18 encoder. Without --images: the service's retraining, on every "
                    "usable (preprocessed, not flagged) image of the catalogue in <state>, gated and registered "
                    "(the same as --now). With --images DIR, on every image under DIR (recursively); each is "
                    "decoded once into a crop cache, and the run resumes from its folder's checkpoint.")
    add_config_args(p, watch=False)
    p.add_argument("--images", type=Path, metavar="DIR", help="train on every image under DIR")
    p.add_argument("--now", action="store_true",
                   help="(the default without --images) run the service's retraining now, in the foreground: the catalogue's usable images, "
                        "warm start as configured, the promotion gate, the model registry (see docs/models.md)")
    p.add_argument("--out", type=Path, metavar="DIR", help="run folder (default: <state>/training/run-<time>)")
    p.add_argument("--cache", type=Path, metavar="DIR", help="crop cache folder (default: <state>/cache/crops)")
    p.add_argument("--preprocess", choices=["drop", "none"], default="drop",
                   help="drop: crop each frame to its drop like the service does (default); "
                        "none: centre square, for images that are already drop crops")
    p.add_argument("--image-size", type=int, metavar="PX", help="overrides train.image_size")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per step, all processes (train.batch_size)")
    p.add_argument("--epochs", type=int, metavar="N", help="overrides train.epochs")
    p.add_argument("--steps", type=int, metavar="N", help="optimiser steps; overrides epochs (train.max_steps)")
    p.add_argument("--lr", type=float, help="overrides train.lr")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides train.device")
    p.add_argument("--seed", type=int, help="overrides train.seed")
    p.add_argument("--min-images", type=int, metavar="N", help="overrides train.min_images")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="overrides train.checkpoint_every_steps")
    p.add_argument("--max-memory-gb", type=float, metavar="GB",
                   help="on CPU, split steps that would not fit into micro-batches with the same loss "
                        "(overrides train.max_memory_gb)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if the run folder has a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, **{key: getattr(args, attr) for attr, key in _OVERRIDES.items()})
    from xtalwatch.learn.allocator import keep_to_memory_budget

    keep_to_memory_budget(settings.train.max_memory_gb)
    if args.now and args.images is not None:
        print("xtalwatch train: --now trains on the catalogue; it cannot be combined with --images", file=sys.stderr)
        return 2
    if args.images is None:  # the catalogue: every usable image of <state>, as the scheduler would
        from xtalwatch.learn.retrain import run_retrain

        outcome = run_retrain(settings, now=True, progress=not args.no_progress)
        print(outcome.summary())
        if outcome.log_path:
            print(f"log: {outcome.log_path}")
        if args.json is not None:
            args.json.write_text(json.dumps(outcome.to_dict(), indent=1))
        return {"promoted": 0, "rejected": 0, "skipped": 1}.get(outcome.status, 1)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and args.out is None:
        print("xtalwatch train: under torchrun, name the run folder with --out so every rank uses the same one",
              file=sys.stderr)
        return 2
    out = args.out or settings.state.dir / "training" / time.strftime("run-%Y%m%d-%H%M%S")
    cache = args.cache or settings.state.dir / "cache" / "crops"

    from xtalwatch.learn.simclr import DatasetTooSmall, TrainingDiverged, load_folder, train

    cfg = settings.train
    try:
        preprocess = settings.preprocess if args.preprocess == "drop" else None
        dataset = load_folder(args.images, cfg.image_size, cache, cfg.workers, preprocess)
        if dataset.skipped:
            print(f"xtalwatch train: skipped {len(dataset.skipped)} unreadable file(s), "
                  f"e.g. {dataset.skipped[0][0]}: {dataset.skipped[0][1]}", file=sys.stderr)
        result = train(cfg, dataset, out, resume=not args.no_resume, progress=not args.no_progress)
    except FileNotFoundError as exc:
        print(f"xtalwatch train: {exc}", file=sys.stderr)
        return 2
    except DatasetTooSmall as exc:
        print(f"xtalwatch train: dataset too small: {exc} (in {args.images})", file=sys.stderr)
        return 1
    except TrainingDiverged as exc:
        print(f"xtalwatch train: training diverged: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        final = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
        print(f"trained {result.steps}/{result.total_steps} steps on {len(dataset)} images "
              f"(batch {result.batch_size}), final loss {final}, {result.views_per_second:.1f} views/s, "
              f"{result.seconds:.1f} s\ncheckpoint: {result.checkpoint}\naugmented pairs: {result.pairs_png}\n"
              f"loss curve: {result.loss_png}")
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if args.json is not None:
            payload = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
            args.json.write_text(json.dumps(payload, indent=1))
    return 0
