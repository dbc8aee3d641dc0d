"""``xtalwatch run``: the service in the foreground, as systemd runs it."""

from __future__ import annotations

import argparse

from xtalwatch.commands._common import add_config_args, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the service in the foreground (as systemd does)",
                                   description="Watch the imager folder, catalogue every image once, serve /metrics. "
                                               "Flags override the config file; XTALWATCH_* variables override too.")
    add_config_args(parser, watch=True, metrics=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtalwatch.service import Service

    settings = settings_from_args(args)
    if settings.watch.dir is None:
        print("xtalwatch run: no folder to watch: pass --watch DIR or set watch.dir in the config")
        return 2
    return Service(settings).run()
