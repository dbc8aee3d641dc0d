"""``xtalwatch run``: the service in the foreground, as systemd runs it."""

from __future__ import annotations

import argparse
import sys

from xtalwatch.commands._common import add_config_args, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the service in the foreground (as systemd does)",
                                   description="Watch the imager folder, catalogue every image once, serve /metrics. "
                                               "Flags override the config file; XTALWATCH_* variables override too.")
    add_config_args(parser, watch=True, metrics=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtalwatch.config import default_config_path
    from xtalwatch.learn.registry import RegistryError
    from xtalwatch.observe.preflight import preflight
    from xtalwatch.plugins import PluginError
    from xtalwatch.service import Service

    settings = settings_from_args(args)
    if settings.watch.dir is None:
        print("xtalwatch run: no folder to watch: pass --watch DIR or set watch.dir in the config", file=sys.stderr)
        return 2
    path = args.config if args.config is not None else default_config_path()
    # The same checks as `config check`, so that nothing below fails on a config that checked OK.
    problems = preflight(settings, str(path) if path is not None else "(defaults)")
    if problems:
        print("xtalwatch: configuration error:", *problems, sep="\n", file=sys.stderr)
        return 2
    try:
        return Service(settings).run()
    except (PluginError, RegistryError) as exc:  # a plugin that loaded in the check but not now; a registry in the way
        print(f"xtalwatch: configuration error:\n{exc}", file=sys.stderr)
        return 2
