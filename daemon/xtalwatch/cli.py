"""The ``xtalwatch`` command line.

Each subcommand lives in its own module under ``xtalwatch.commands`` with two functions:
``register(subparsers)`` adds its parser and ``run(args) -> int`` does the work. This file
only discovers them, so adding a command never means editing a shared list.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from xtalwatch import __version__, commands
from xtalwatch.config import ConfigError
from xtalwatch.store.errors import StateError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtalwatch",
        description="Watch a crystallisation imager's folder, catalogue and score every drop image.",
    )
    parser.add_argument("--version", action="version", version=f"xtalwatch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"xtalwatch: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except StateError as exc:  # a damaged catalogue, a busy state folder: what is wrong and what to do
        print(f"xtalwatch: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
