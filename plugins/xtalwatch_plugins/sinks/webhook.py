"""A JSON POST per alert. Slack-compatible: Slack reads the top-level ``text`` and ignores the rest.

The body is ``{"text", "kind", "severity", "title", "fields", "dedupe_key", "created_at", "created"}``.
Any status outside 2xx, a timeout or a refused connection raises, so the dispatcher retries.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from xtalwatch import __version__
from xtalwatch.alerts.alert import Alert
from xtalwatch.config import WebhookSinkConfig

__all__ = ["WebhookSink"]


class WebhookSink:
    name = "webhook"
    kind = "sink"

    def __init__(self, config: WebhookSinkConfig):
        self.config = config
        missing = [var for var in config.headers_env.values() if var not in os.environ]
        if missing:
            raise ValueError(f"environment variables not set for headers_env: {', '.join(missing)}")
        self.headers = {"Content-Type": "application/json", "User-Agent": f"xtalwatch/{__version__}",
                        **config.headers, **{h: os.environ[var] for h, var in config.headers_env.items()}}

    def send(self, alert: Alert) -> None:
        text = f"*{alert.title}*: {alert.text}" if alert.title else alert.text
        body = json.dumps({**alert.to_json(), "text": text}, default=str).encode()
        request = urllib.request.Request(self.config.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as exc:  # non-2xx: say what the server said, briefly
            detail = exc.read(200).decode("utf-8", "replace").strip()
            raise RuntimeError(f"POST {self.config.url}: HTTP {exc.code} {exc.reason} {detail}".rstrip()) from None
