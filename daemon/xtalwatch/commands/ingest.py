"""``xtalwatch ingest PATH...``: catalogue files or folders once, then exit."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from xtalwatch.commands._common import add_config_args, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ingest", help="catalogue files or folders once, then exit",
                                   description="Catalogue the given files and folders (recursively) into the state "
                                               "folder's catalogue, exactly as the service would, then exit.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    add_config_args(parser, watch=False)
    parser.add_argument("--no-preprocess", action="store_true",
                        help="only catalogue; leave preprocessing to the service")
    parser.add_argument("--root", type=Path, metavar="DIR",
                        help="folder that adapters see paths relative to (default: watch.dir, else each PATH folder)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtalwatch.observe.metrics import Metrics
    from xtalwatch.stages.pipeline import build_pipeline
    from xtalwatch.stages.watch import scan_folder

    settings = settings_from_args(args)
    # The service's own chain, up to preprocessing: the same adapters, ingest and preprocessing.
    pipeline = build_pipeline(settings, Metrics(), through="catalogue" if args.no_preprocess else "preprocess")
    pool = pipeline.preprocess
    outcomes: Counter[str] = Counter()
    missing = 0
    try:
        if pool is not None:
            pool.resume()
        for target in args.paths:
            if not target.exists() and not target.is_symlink():
                print(f"xtalwatch ingest: {target}: no such file or folder", file=sys.stderr)
                missing += 1
                continue
            root = args.root or settings.watch.dir or (target if target.is_dir() else target.parent)
            ingestor = pipeline.ingestor_for(root.resolve())
            files = scan_folder(target, settings.watch.ignore_globs) if target.is_dir() else [target]
            for path in files:
                outcomes[ingestor.ingest(path.absolute()).outcome] += 1
        if pool is not None:
            while not pool.idle():
                time.sleep(0.05)
    finally:
        if pool is not None:
            pool.shutdown()
        pipeline.catalogue.close()
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())) or "nothing found"
    print(f"ingested into {settings.state.dir}: {summary}")
    return 1 if missing else 0
