"""``xtalwatch doctor``: check the installation and print what to fix."""

from __future__ import annotations

import argparse

from xtalwatch.commands._common import add_config_args, settings_from_args
from xtalwatch.config import ConfigError, Settings, default_config_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check config, folders, disk, inotify, GPU and model, and say what to fix",
        description="Check that xtalwatch can run here: the config, the imager and state folders and their "
                    "permissions, free disk, inotify limits, GPU/CUDA visibility and whether a model is present. "
                    "Each check prints OK, WARN or FAIL; the exit status is 1 when any check FAILs. "
                    "Run it as the service user: sudo -u xtalwatch xtalwatch doctor.")
    add_config_args(parser, watch=True, metrics=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xtalwatch.observe.doctor import Check, check_gpu, check_user, exit_code, format_check, run_checks

    path = args.config if args.config is not None else default_config_path()
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        # The rest of the checks need valid settings; the machine-wide ones run on the defaults.
        problems = str(exc).splitlines()
        checks = [Check("config", "FAIL", problems[0], "fix the key named above, then run doctor again")]
        checks += [Check("config", "FAIL", line) for line in problems[1:]]
        checks += [check_user(), check_gpu(Settings.model_construct())]
    else:
        source = str(path) if path is not None else "no config file (built-in defaults)"
        config = Check("config", "OK", f"{source} is valid") if path is not None else Check(
            "config", "WARN", source, "write /etc/xtalwatch/xtalwatch.yaml (see config/xtalwatch.yaml) or pass --config")
        checks = [config, *run_checks(settings)]
    for check in checks:
        print(format_check(check))
    failed = sum(c.level == "FAIL" for c in checks)
    warned = sum(c.level == "WARN" for c in checks)
    print(f"\n{failed} failed, {warned} warnings, {len(checks) - failed - warned} ok")
    return exit_code(checks)
