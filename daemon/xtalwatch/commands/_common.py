"""Flags shared by several subcommands, and turning them into validated settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xtalwatch.config import Settings, default_config_path, load_settings
from xtalwatch.logs import setup_logging


def add_config_args(parser: argparse.ArgumentParser, *, watch: bool = True, metrics: bool = False,
                    nested: bool = False) -> None:
    """Add ``--config`` and ``--state`` (and optionally ``--watch``, ``--metrics-port``).

    ``nested``: ``parser`` is an action under a subcommand that has these flags already
    (``models list``): the flags are accepted after the action too, and leave the subcommand's
    value alone when not given there.
    """
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if nested else {}
    parser.add_argument("--config", type=Path, metavar="FILE", **extra,
                        help="YAML config (default: $XTALWATCH_CONFIG, else /etc/xtalwatch/xtalwatch.yaml if present)")
    parser.add_argument("--state", type=Path, metavar="DIR", help="state folder (overrides state.dir)", **extra)
    if watch:
        parser.add_argument("--watch", type=Path, metavar="DIR", help="imager folder (overrides watch.dir)", **extra)
    if metrics:
        parser.add_argument("--metrics-port", type=int, metavar="N", help="HTTP port for /metrics (overrides metrics.port)",
                            **extra)
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides logging.level",
                        **extra)


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    """Load the settings named by the shared flags, set up logging, and return them."""
    path = args.config if args.config is not None else default_config_path()
    overrides: dict[str, Any] = {
        "state.dir": getattr(args, "state", None),
        "watch.dir": getattr(args, "watch", None),
        "metrics.port": getattr(args, "metrics_port", None),
        "logging.level": getattr(args, "log_level", None),
    }
    overrides.update(extra)
    settings = load_settings(path, overrides)
    setup_logging(settings.logging.level)
    return settings
