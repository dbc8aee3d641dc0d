"""``xtalwatch config check FILE``: validate a configuration file and say exactly what is wrong."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="check or show configuration",
                                   description="Configuration tools.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate a config file (with XTALWATCH_* variables applied)",
                               description="Validate FILE and run every check `run` makes before it starts "
                                           "(plugins load, secrets are set, the state folder, the site catalogue and the metrics "
                                           "address are usable); print each problem as 'file: key.path: message'.")
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument("--show", action="store_true", help="print the resulting settings as YAML")
    check.set_defaults(func=run_check)
    default = actions.add_parser("default", help="print the default config, every key commented",
                                 description="Print the default configuration as commented YAML "
                                             "(the source of config/xtalwatch.yaml).")
    default.set_defaults(func=run_default)


def run_default(args: argparse.Namespace) -> int:
    from xtalwatch.tools.config_doc import render_default_config

    print(render_default_config(), end="")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import yaml

    from xtalwatch.config import load_settings
    from xtalwatch.observe.preflight import preflight
    from xtalwatch.redact import redact_urls

    settings = load_settings(args.file)  # a ConfigError is printed by cli.main with exit status 2
    # What `run` checks before it starts, so that OK here means the service will start.
    problems = preflight(settings, str(args.file))
    if problems:
        print("xtalwatch: configuration error:", *problems, sep="\n", file=sys.stderr)
        return 2
    print(f"{args.file}: OK")
    if args.show:  # webhook URLs are secrets: shown as scheme://host/…
        print(redact_urls(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)))
    return 0
