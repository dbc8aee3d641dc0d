"""Runs a program per alert: the alert's JSON on stdin, and ``XTALWATCH_ALERT_*`` environment variables.

Variables: ``KIND``, ``SEVERITY``, ``TITLE``, ``TEXT``, ``DEDUPE_KEY``, ``CREATED`` (ISO 8601 UTC),
and one per scalar field, upper-cased (``XTALWATCH_ALERT_PLATE``, ``XTALWATCH_ALERT_WELL``, ...).
A non-zero exit or running past ``timeout_seconds`` is a failure, retried by the dispatcher.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

from xtalwatch.alerts.alert import Alert
from xtalwatch.config import CommandSinkConfig
from xtalwatch.redact import redact_urls

__all__ = ["CommandSink", "alert_environment"]


def alert_environment(alert: Alert) -> dict[str, str]:
    """The ``XTALWATCH_ALERT_*`` variables for ``alert``."""
    env = {f"XTALWATCH_ALERT_{re.sub(r'[^A-Z0-9]', '_', k.upper())}": str(v)
           for k, v in alert.fields.items() if isinstance(v, str | int | float | bool)}
    data = alert.to_json()
    env.update({f"XTALWATCH_ALERT_{k.upper()}": str(data[k])
                for k in ("kind", "severity", "title", "text", "dedupe_key", "created")})
    return env


class CommandSink:
    name = "command"
    kind = "sink"

    def __init__(self, config: CommandSinkConfig):
        self.config = config

    def send(self, alert: Alert) -> None:
        payload = json.dumps(alert.to_json(), default=str)
        try:
            done = subprocess.run(self.config.argv, input=payload, capture_output=True, text=True,
                                  timeout=self.config.timeout_seconds, env={**os.environ, **alert_environment(alert)},
                                  check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.config.argv[0]}: still running after {self.config.timeout_seconds} s, killed") from None
        if done.returncode != 0:
            tail = redact_urls((done.stderr or done.stdout).strip()[-300:])  # e.g. curl naming its URL
            raise RuntimeError(f"{self.config.argv[0]}: exit status {done.returncode}: {tail}")
