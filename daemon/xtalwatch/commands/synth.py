"""``xtalwatch synth OUT_DIR``: write synthetic imager output and its ground truth."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from pathlib import Path

from xtalwatch.tools.synth.layouts import LAYOUTS


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match or min(int(match[1]), int(match[2])) < 16:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT of at least 16x16, e.g. 512x512, got {text!r}")
    return int(match[1]), int(match[2])


def _rate(text: str) -> float:
    value = text.strip().removesuffix("/s")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected images per second like 5 or 5/s, got {text!r}") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"rate must be > 0, got {text!r}")
    return rate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth", help="write synthetic crystallisation-plate images in an imager's folder layout",
        description="Render synthetic drop photographs (clear, precipitate, needles, plates, prisms, "
                    "microcrystals, dark) in an instrument's folder layout, with a ground-truth labels CSV "
                    "written beside the image tree (OUT_DIR/../<name>_labels.csv unless --labels says otherwise).")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="root of the image tree to write")
    parser.add_argument("--plates", type=int, default=1, metavar="N", help="number of plates (default 1)")
    parser.add_argument("--layout", choices=LAYOUTS, default="rockmaker", help="instrument folder layout")
    parser.add_argument("--wells", type=int, default=96, choices=[24, 48, 96, 384, 1536], help="wells per plate")
    parser.add_argument("--drops", type=int, default=3, metavar="N", help="drops per well (default 3)")
    parser.add_argument("--inspections", type=int, default=1, metavar="K", help="inspections per drop (default 1)")
    parser.add_argument("--image-size", type=_size, default=(512, 512), metavar="WxH", help="frame size in pixels")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed; same seed, same bytes")
    parser.add_argument("--class-balance", default=None, metavar="SPEC",
                        help="class weights, e.g. clear=1,needles=2,dark=0.2 (unnamed classes weigh 1), or a "
                             "mix: 'screen' (default: about 7%% of drops crystallise, from the second "
                             "inspection on), 'even' (default with --imagefolder), 'screen,dark=0.1'")
    parser.add_argument("--imagefolder", action="store_true",
                        help="write OUT_DIR/<class>/*.png for evaluation instead of an instrument layout")
    parser.add_argument("--rate", type=_rate, default=None, metavar="N/s",
                        help="write N images per second, each partially then completed, like an imager")
    parser.add_argument("--labels", type=Path, default=None, metavar="FILE",
                        help="ground-truth CSV path (default OUT_DIR/../<name>_labels.csv)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="render processes (default: cores)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtalwatch.tools.synth.generate import default_labels_path, generate_plates
    from xtalwatch.tools.synth.timeline import parse_balance

    try:
        parse_balance(args.class_balance)
    except ValueError as exc:
        print(f"xtalwatch synth: --class-balance: {exc}", file=sys.stderr)
        return 2
    for name in ("plates", "drops", "inspections"):
        if getattr(args, name) < 1:
            print(f"xtalwatch synth: --{name} must be >= 1", file=sys.stderr)
            return 2
    stop = threading.Event()
    previous = None
    if args.rate is not None:
        # First Ctrl-C: finish the file being written and stop; a second one interrupts at once.
        def _on_sigint(signum: int, frame: object) -> None:
            stop.set()
            signal.signal(signal.SIGINT, signal.default_int_handler)

        previous = signal.signal(signal.SIGINT, _on_sigint)
    started = time.monotonic()
    try:
        rows = generate_plates(
            args.out_dir, plates=args.plates, layout=args.layout, wells=args.wells, drops=args.drops,
            inspections=args.inspections, size=args.image_size, seed=args.seed, balance=args.class_balance,
            imagefolder=args.imagefolder, labels=args.labels, workers=args.workers, rate=args.rate, stop=stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    labels = args.labels if args.labels is not None else default_labels_path(args.out_dir)
    elapsed = time.monotonic() - started
    note = " (stopped)" if stop.is_set() else ""
    print(f"wrote {len(rows)} images to {args.out_dir} in {elapsed:.1f} s{note}; labels: {labels}")
    return 0
