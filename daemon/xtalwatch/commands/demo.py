"""``xtalwatch demo``: the whole service on the embedded synthetic imager, no instrument needed."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the service on the synthetic imager (the README's main command)",
        description="Write synthetic plates into DIR/imager over time, the way an imager does, while the real "
                    "service watches, catalogues, preprocesses, trains a first model, classifies and raises hit "
                    "alerts; then print a plate map per plate (and write it as a PNG under DIR/plate_maps/).")
    parser.add_argument("--out", type=Path, default=Path("demo"), metavar="DIR",
                        help="demo folder: imager/, state/ and labels.csv go here (default ./demo)")
    parser.add_argument("--plates", type=int, default=2, help="plates to image (default 2)")
    parser.add_argument("--wells", type=int, default=96, choices=[24, 48, 96, 384], help="wells per plate")
    parser.add_argument("--drops", type=int, default=1, help="drops per well")
    parser.add_argument("--inspections", type=int, default=3, help="inspections per drop (default 3)")
    parser.add_argument("--layout", default="rockmaker", choices=["rockmaker", "export", "minstrel"])
    parser.add_argument("--image-size", default="480x360", metavar="WxH", help="frame size (default 480x360)")
    parser.add_argument("--rate", type=float, default=12.0, metavar="N", help="images per second (default 12)")
    parser.add_argument("--label-fraction", type=float, default=0.1, metavar="F",
                        help="fraction of the images in, at random, that the 'lab' labels for the first training, "
                             "which starts at the first inspection showing crystals (0.1)")
    parser.add_argument("--train-steps", type=int, default=120, metavar="N",
                        help="SimCLR steps of the first training (default 120: under a minute on 2 idle cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics-port", type=int, default=9108, metavar="N", help="0 picks a free port")
    parser.add_argument("--fresh", action="store_true", help="delete DIR first")
    parser.add_argument("--serve", action="store_true",
                        help="keep the service and its review app running after the demo, until Ctrl-C")
    parser.add_argument("--no-browser", action="store_true",
                        help="do not open the review app in a web browser (it is only opened where there is a display)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtalwatch.tools.demo import DemoOptions, run_demo

    width, height = (int(v) for v in args.image_size.lower().split("x"))
    options = DemoOptions(out=args.out, plates=args.plates, wells=args.wells, drops=args.drops,
                          inspections=args.inspections, layout=args.layout, size=(width, height), rate=args.rate,
                          seed=args.seed, metrics_port=args.metrics_port, fresh=args.fresh,
                          label_fraction=args.label_fraction, train_steps=args.train_steps, serve=args.serve,
                          open_browser=not args.no_browser)
    return run_demo(options)
