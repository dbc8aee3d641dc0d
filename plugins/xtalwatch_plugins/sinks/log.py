"""The default sink: one log line per alert, at a level that follows the alert's severity."""

from __future__ import annotations

import logging

from xtalwatch.alerts.alert import Alert
from xtalwatch.config import LogSinkConfig

__all__ = ["LogSink"]

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


class LogSink:
    name = "log"
    kind = "sink"

    def __init__(self, config: LogSinkConfig | None = None):
        self.logger = logging.getLogger("xtalwatch.alert")

    def send(self, alert: Alert) -> None:
        # key=value tags first, so that `grep kind=crystal_hit` finds every hit in the journal.
        tags = " ".join(f"{k}={v}" for k, v in alert.fields.items() if isinstance(v, str | int | float))
        self.logger.log(_LEVELS.get(alert.severity, logging.WARNING), "ALERT kind=%s %s | %s",
                        alert.kind, tags, alert.text)
