"""``xtalwatch export --plate B --format csv|json``: a plate's per-well outcomes for a LIMS.

The same rows as the plate page's export links (``review/export.py``): one per well, with the
score, class, confidence, model version and image ids. Reads a read-only connection, so it runs
beside a working service.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xtalwatch.commands._common import add_config_args, settings_from_args

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="a plate's per-well outcomes as CSV or JSON (for a LIMS)",
                              description="One row per well: plate, well, score (strength of the class in "
                                          "classify.outcome_order), class, confidence, model version, the ids of the "
                                          "images whose calls were read, the image that decided, its inspection.")
    p.add_argument("--plate", required=True, metavar="BARCODE", help="the plate's barcode")
    p.add_argument("--format", choices=["csv", "json"], default="csv", help="output format (default csv)")
    p.add_argument("--inspection", type=int, metavar="N", help="the plate as it was at inspection N (default: now)")
    p.add_argument("--out", type=Path, metavar="FILE", help="write here (atomically) instead of to stdout")
    add_config_args(p, watch=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtalwatch.files import atomic_write
    from xtalwatch.review.export import UnknownPlate, render
    from xtalwatch.store.catalogue import Catalogue

    settings = settings_from_args(args)
    try:
        db = Catalogue.readonly_for(settings)
    except FileNotFoundError as exc:
        print(f"xtalwatch export: {exc}", file=sys.stderr)
        return 2
    try:
        text = render(db, args.plate, settings, args.format, inspection=args.inspection)
    except UnknownPlate as exc:
        print(f"xtalwatch export: {exc} (see the plates with `xtalwatch status`)", file=sys.stderr)
        return 2
    finally:
        db.close()
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
