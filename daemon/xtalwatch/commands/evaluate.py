"""``xtalwatch evaluate DIR``: the results table on an ImageFolder, every method at every label fraction."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from xtalwatch.commands._common import add_config_args, settings_from_args

__all__ = ["register", "run"]


def _fractions(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from exc
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"label fractions must be in (0, 1], got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="accuracy and macro-F1 of every method on a labelled ImageFolder",
        description="Preprocess every image of DIR/<class>/* like the service does, split train/test "
                    "(stratified; no test image is seen by any training), train SimCLR on the train images "
                    "without labels, then score raw pixels, a random encoder, supervised ResNet-18, and "
                    "SimCLR with linear, kNN, SimCLRv2 fine-tune and distillation heads at each label fraction.")
    add_config_args(p, watch=False)
    p.add_argument("dir", type=Path, metavar="DIR", help="ImageFolder: one subfolder of images per class")
    p.add_argument("--label-fraction", type=_fractions, default=[0.1], metavar="F[,F...]",
                   help="fraction(s) of the training images whose labels the heads get, e.g. 0.05,0.1,1 (default 0.1)")
    p.add_argument("--epochs", type=int, metavar="N", help="SimCLR epochs (overrides train.epochs)")
    p.add_argument("--image-size", type=int, metavar="PX", help="crop side (overrides train.image_size)")
    p.add_argument("--batch-size", type=int, metavar="N", help="SimCLR images per step (overrides train.batch_size)")
    p.add_argument("--small-stem", choices=["auto", "on", "off"], help="overrides train.small_stem")
    p.add_argument("--seed", type=int, metavar="S", help="split, subsets and training seed (overrides train.seed)")
    p.add_argument("--preprocess", choices=["drop", "none"], default="drop",
                   help="drop: the service's drop finder, crop and normalise (default); none: images are crops")
    p.add_argument("--test-fraction", type=float, default=0.2, metavar="F", help="held-out share (default 0.2)")
    p.add_argument("--supervised-epochs", type=int, default=10, metavar="N",
                   help="passes over the labelled images for supervised and fine-tuned rows (default 10)")
    p.add_argument("--min-steps", type=int, default=60, metavar="N",
                   help="at least this many steps for each supervised/fine-tune/distil fit (default 60)")
    p.add_argument("--distill-epochs", type=int, default=2, metavar="N",
                   help="passes over all training images for the distilled student (default 2)")
    p.add_argument("--probe-every", type=int, default=0, metavar="N",
                   help="every N SimCLR epochs, a linear probe at each label fraction: the epoch curve (default off)")
    p.add_argument("--temperature", type=float, metavar="T", help="NT-Xent temperature (overrides train.temperature)")
    p.add_argument("--max-memory-gb", type=float, metavar="GB",
                   help="on CPU, SimCLR steps that would not fit run in micro-batches with the same loss "
                        "(overrides train.max_memory_gb)")
    p.add_argument("--methods", metavar="M[,M...]", help="only these methods (default: all)")
    p.add_argument("--imagenet-weights", type=Path, metavar="FILE",
                   help="local torchvision ResNet-18 state dict for the supervised_imagenet row")
    p.add_argument("--out", type=Path, metavar="DIR", help="work folder: crop cache, SimCLR run, confusion PNGs "
                                                             "(default: beside --json)")
    p.add_argument("--json", type=Path, metavar="OUT", required=True, help="write the table here")
    p.add_argument("--report", type=Path, metavar="OUT.html", help="also write a self-contained HTML report")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stem = {"on": True, "off": False, "auto": "auto", None: None}[args.small_stem]
    settings = settings_from_args(args, **{"train.epochs": args.epochs, "train.image_size": args.image_size,
                                           "train.batch_size": args.batch_size, "train.seed": args.seed,
                                           "train.small_stem": stem, "train.temperature": args.temperature,
                                           "train.max_memory_gb": args.max_memory_gb})
    from xtalwatch.learn.allocator import keep_to_memory_budget
    from xtalwatch.learn.evaluate import METHODS, EvalConfig, run_evaluation
    from xtalwatch.learn.evaluate.report import write_html

    keep_to_memory_budget(settings.train.max_memory_gb)

    methods = args.methods.split(",") if args.methods else list(METHODS)
    out = args.out or args.json.with_suffix("")
    cfg = EvalConfig(data_dir=args.dir, out_dir=out, label_fractions=args.label_fraction, train=settings.train,
                     preprocess=settings.preprocess if args.preprocess == "drop" else None,
                     test_fraction=args.test_fraction, supervised_epochs=args.supervised_epochs,
                     min_supervised_steps=args.min_steps, distill_epochs=args.distill_epochs,
                     knn_k=settings.classify.knn_k, knn_temperature=settings.classify.knn_temperature,
                     imagenet_weights=args.imagenet_weights, methods=methods, progress=not args.no_progress,
                     probe_every=args.probe_every)
    t0 = time.perf_counter()
    try:
        result = run_evaluation(cfg, on_row=lambda r: print(
            f"{r.method:24s} {r.label_fraction:5g}  acc {'—' if r.accuracy is None else f'{r.accuracy:.4f}'}  "
            f"F1 {'—' if r.macro_f1 is None else f'{r.macro_f1:.4f}'}  {r.seconds:7.1f} s"
            + (f"  ({r.absent_reason})" if r.absent_reason else ""), flush=True))
    except (FileNotFoundError, ValueError) as exc:
        print(f"xtalwatch evaluate: {exc}", file=sys.stderr)
        return 2
    payload = result.to_json()
    payload["seconds_total"] = round(time.perf_counter() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=1))
    print(f"table: {args.json}\nconfusion matrices: {out}/confusion_*.png")
    if args.report is not None:
        write_html(payload, out, args.report)
        print(f"report: {args.report}")
    return 0
