"""``xtalwatch labels import SOURCE``: labels from a CSV or an ImageFolder into the catalogue."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xtalwatch.commands._common import add_config_args, settings_from_args

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("labels", help="import labels into the catalogue",
                              description="Manage labels. 'import' reads a CSV (path or image id, class, labeller) "
                                          "or an ImageFolder (DIR/<class>/*, matched by file content).")
    sub = p.add_subparsers(dest="labels_command", required=True, metavar="{import}")
    imp = sub.add_parser("import", help="import a CSV file or an ImageFolder",
                         description="Every bad line is printed with its number (unknown class, unknown image, "
                                     "the same image given another class) and nothing is imported until none is left.")
    add_config_args(imp, watch=True)
    imp.add_argument("source", type=Path, metavar="CSV|DIR", help="CSV file, or ImageFolder DIR/<class>/*")
    imp.add_argument("--labeller", default="", help="labeller for rows that name none (ImageFolder: 'imagefolder')")
    imp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from xtalwatch.store.catalogue import Catalogue
    from xtalwatch.store.labels import import_labels

    cat = Catalogue.for_settings(settings)
    try:
        result = import_labels(cat, args.source, settings.classify, labeller=args.labeller,
                               watch_dir=settings.watch.dir)
    except FileNotFoundError as exc:
        print(f"xtalwatch labels: {exc}", file=sys.stderr)
        return 2
    finally:
        cat.close()
    if result.errors:
        for e in result.errors:
            print(f"xtalwatch labels: {e}", file=sys.stderr)
        print(f"xtalwatch labels: {len(result.errors)} error(s); nothing imported", file=sys.stderr)
        return 1
    print(f"labels: {result.added} added, {result.unchanged} already there")
    return 0
