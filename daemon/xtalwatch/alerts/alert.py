"""What an alert sink receives (``Alert``) and the interface a sink implements (``AlertSink``).

The small base that the built-in sinks (``xtalwatch_plugins.sinks``) and plugin sinks build on;
``events.alert_for`` makes an ``Alert`` from an event, ``dispatch`` delivers it.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["Alert", "AlertSink", "Severity"]

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Alert:
    """One message for people. ``text`` is a single human line; ``fields`` the structured details."""

    kind: str
    severity: Severity
    title: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    dedupe_key: str = ""  # empty: never deduplicated
    created_at: float = field(default_factory=time.time)  # Unix seconds

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict with ``created_at`` also as ISO 8601 UTC (``created``)."""
        data = asdict(self)
        data["created"] = dt.datetime.fromtimestamp(self.created_at, dt.UTC).isoformat(timespec="seconds")
        return data


@runtime_checkable
class AlertSink(Protocol):
    """Delivers alerts somewhere. Built once from its config section; ``send`` raises on failure."""

    name: str
    kind: str  # "sink"

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` or raise; the dispatcher retries and counts failures."""
        ...
