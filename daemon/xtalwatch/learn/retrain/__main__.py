"""``python -m xtalwatch.learn.retrain``: one retraining run in a child process of its own.

``scheduler.py`` starts it as ``--settings-json F --result F --nice N --die-with-parent PID``.
The run records its own outcome (``run.py``); ``--result`` also writes it as JSON where the
scheduler reads it. ``--die-with-parent`` ends the run when the service dies, even by kill -9:
the next run (or start) records it and removes its checkpoint (``interrupted.py``). Exit
status: 0 promoted, rejected or skipped; 1 failed; 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from xtalwatch.config import ConfigError, Settings, load_settings
from xtalwatch.files import write_json_atomic
from xtalwatch.learn.allocator import keep_to_memory_budget
from xtalwatch.learn.retrain.run import run_retrain
from xtalwatch.lifetime import die_with_parent
from xtalwatch.logs import setup_logging

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """One run, its outcome written as JSON to ``--result``; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m xtalwatch.learn.retrain",
                                description="One retraining run: data, SimCLR, bundle, gate, register.")
    p.add_argument("--config", type=Path, help="YAML config file")
    p.add_argument("--state", type=Path, help="state folder (overrides state.dir)")
    p.add_argument("--settings-json", type=Path, help="the service's resolved settings, as JSON (wins over --config)")
    p.add_argument("--result", type=Path, help="write the outcome here as JSON")
    p.add_argument("--nice", type=int, default=0, help="add this to the process's CPU niceness first")
    p.add_argument("--now", action="store_true", help="train even if nothing changed since the serving model")
    p.add_argument("--die-with-parent", type=int, metavar="PID",
                   help="the parent's pid: end this run (SIGKILL) when the parent dies (Linux)")
    args = p.parse_args(argv)
    if args.die_with_parent is not None:
        die_with_parent(args.die_with_parent)
    if args.nice:
        os.nice(args.nice)
    try:
        if args.settings_json is not None:
            settings = Settings(**json.loads(args.settings_json.read_text(encoding="utf-8")))
        else:
            settings = load_settings(args.config, {"state.dir": args.state})
    except (ConfigError, OSError, ValueError) as exc:
        print(f"xtalwatch.learn.retrain: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.logging.level)
    keep_to_memory_budget(settings.train.max_memory_gb)
    outcome = run_retrain(settings, now=args.now)
    if args.result is not None:
        write_json_atomic(args.result, outcome.to_dict())
    return 1 if outcome.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
