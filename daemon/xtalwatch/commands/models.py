"""``xtalwatch models list|promote VERSION|rollback``: look at and steer the model registry.

A running service notices a changed ``current`` on its next tick and swaps the model in; these
commands only switch the registry (atomically) and mirror the change into the catalogue.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from xtalwatch.commands._common import add_config_args, settings_from_args

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list, promote or roll back trained models",
                              description="The model registry in <state>/models: every trained model with its "
                                          "status (candidate, promoted, rejected, retired), gate metrics and reason.")
    add_config_args(p, watch=False)
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="every model, oldest first; * marks the serving one")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    pr = sub.add_parser("promote", help="serve VERSION now (by hand; bypasses the gate)")
    pr.add_argument("version", metavar="VERSION")
    pr.add_argument("--force", action="store_true", help="also promote a model the gate rejected")
    rb = sub.add_parser("rollback", help="serve the previously promoted model again")
    for action in (ls, pr, rb):  # `models list --state DIR` works as `models --state DIR list` does
        add_config_args(action, watch=False, nested=True)
    p.set_defaults(func=run)


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    from xtalwatch.learn.registry import ModelRegistry, RegistryError
    from xtalwatch.store.catalogue import Catalogue

    settings = settings_from_args(args)
    state = settings.state.dir
    if args.action == "list":
        records = ModelRegistry(state).list() if (state / "models").is_dir() else []
        current = ModelRegistry(state).current_version() if records else None
        if args.json:
            print(json.dumps([{**r.to_meta(), "path": str(r.path), "current": r.version == current}
                              for r in records], indent=1))
            return 0
        if not records:
            print(f"no models yet in {state / 'models'} (train one with `xtalwatch train --now`)")
            return 0
        print(f"  {'VERSION':<23} {'STATUS':<9} {'CREATED':<16} {'IMAGES':>6} {'LABELS':>6} "
              f"{'HEAD':<9} {'ACC':>5} {'WON BY':>7} {'STD':>7}  REASON")
        for r in records:
            gate = r.metrics.get("gate") or {}
            created = datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M")
            std = gate.get("feature_std")
            margin = (r.metrics.get("head_selection") or {}).get("margin")  # over the runner-up head
            print(f"{'*' if r.version == current else ' '} {r.version:<23} {r.status:<9} {created:<16} "
                  f"{r.metrics.get('n_images', '-'):>6} {r.metrics.get('n_labels', '-'):>6} "
                  f"{gate.get('head') or '-':<9} {_accuracy(gate.get('accuracy')):>5} "
                  f"{'-' if margin is None else f'{margin:+.3f}':>7} "
                  f"{'-' if std is None else f'{std:.4f}':>7}  {r.reason}")
        return 0

    catalogue = Catalogue.for_settings(settings)
    try:
        registry = ModelRegistry(state, catalogue)
        if args.action == "promote":
            record = registry.get(args.version)
            if record.status == "rejected" and not args.force:
                print(f"xtalwatch models: {record.version} was rejected ({record.reason}); "
                      f"add --force to promote it anyway", file=sys.stderr)
                return 1
            old = registry.current_version()
            registry.promote(record.version, reason="promoted by hand")
            print(f"{record.version} is now serving (was {old or 'none'}); "
                  f"a running service swaps it in on its next tick")
        else:
            old = registry.current_version()
            record = registry.rollback()
            print(f"rolled back: {record.version} is serving again ({old} retired)")
        return 0
    except RegistryError as exc:
        print(f"xtalwatch models: {exc}", file=sys.stderr)
        return 1
    finally:
        catalogue.close()
