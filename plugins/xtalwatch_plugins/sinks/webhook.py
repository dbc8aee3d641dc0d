"""A JSON POST per alert. Slack-compatible: Slack reads the top-level ``text`` and ignores the rest.

The body is ``{"text", "kind", "severity", "title", "fields", "dedupe_key", "created_at", "created"}``.
Any status outside 2xx, a timeout or a refused connection raises, so the dispatcher retries.
The URL is a secret (Slack's carries its token in the path): errors name it only as
``scheme://host[:port]/…``. A ``user:password@`` in the URL is sent as HTTP basic auth.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from xtalwatch import __version__
from xtalwatch.alerts.alert import Alert
from xtalwatch.config import WebhookSinkConfig
from xtalwatch.redact import redact_url

__all__ = ["WebhookSink"]


def split_credentials(url: str) -> tuple[str, str | None]:
    """``url`` without its ``user:password@``, and the Basic ``Authorization`` value for them (or None)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return urlunsplit(parts._replace(netloc=host)), "Basic " + base64.b64encode(token).decode("ascii")


class WebhookSink:
    name = "webhook"
    kind = "sink"

    def __init__(self, config: WebhookSinkConfig):
        self.config = config
        self.shown_url = redact_url(config.url)
        missing = [var for var in config.headers_env.values() if var not in os.environ]
        if missing:
            raise ValueError(f"environment variables not set for headers_env: {', '.join(missing)}")
        self.url, basic = split_credentials(config.url)
        self.headers = {"Content-Type": "application/json", "User-Agent": f"xtalwatch/{__version__}",
                        **({"Authorization": basic} if basic else {}),
                        **config.headers, **{h: os.environ[var] for h, var in config.headers_env.items()}}

    def __repr__(self) -> str:
        return f"WebhookSink({self.shown_url})"

    def send(self, alert: Alert) -> None:
        text = f"*{alert.title}*: {alert.text}" if alert.title else alert.text
        body = json.dumps({**alert.to_json(), "text": text}, default=str).encode()
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as exc:  # non-2xx: say what the server said, briefly
            detail = exc.read(200).decode("utf-8", "replace").strip()
            raise RuntimeError(f"POST {self.shown_url}: HTTP {exc.code} {exc.reason} {detail}".rstrip()) from None
        except urllib.error.URLError as exc:  # refused, unresolvable: the reason never holds the path
            raise urllib.error.URLError(f"POST {self.shown_url}: {exc.reason}") from None
