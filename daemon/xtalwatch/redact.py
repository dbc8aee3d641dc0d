"""Keep secrets out of logs: a URL is shown as ``scheme://host[:port]/…`` and nothing more.

A webhook URL is itself a secret (Slack's carries the token in its path, others in ``?token=``
or ``user:pass@``), so every log line, event and error message that names one goes through
:func:`redact_url`; :func:`redact_urls` does the same to every http(s) URL inside a text (the
logging filter in ``logs.py`` applies it to every formatted line).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["PUBLIC_PATHS", "REDACTED", "redact_url", "redact_urls"]

REDACTED = "…"
# The service's own endpoints: naming them hides nothing ("serving /metrics on http://host:9108/metrics").
PUBLIC_PATHS = frozenset({"/metrics", "/healthz", "/api/status"})
# The review app's pages, which hit alerts link to ("plate B1234: 12 wells with crystals — http://…/plates/B1234").
_PUBLIC_PAGE = re.compile(r"/(plates|wells|hits|review|models|health)(/[\w.-]+)?/?")

# Up to the first character that cannot be part of a URL in a log line.
_URL = re.compile(r"https?://[^\s'\"<>]+?(?=[.,;:!?)\]]*(?:[\s'\"<>]|$))", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with userinfo, path, query and fragment replaced: ``https://hooks.example:8443/…``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not even a URL we can split: show the scheme at most
        scheme = url.split(":", 1)[0] if "://" in url else ""
        return f"{scheme}://{REDACTED}" if scheme.isalpha() else REDACTED
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    if parts.username is None and not parts.query and not parts.fragment:
        if parts.path in ("", "/"):
            return f"{parts.scheme}://{netloc}"
        if parts.path in PUBLIC_PATHS or _PUBLIC_PAGE.fullmatch(parts.path):
            return f"{parts.scheme}://{netloc}{parts.path}"
    return f"{parts.scheme}://{netloc}/{REDACTED}"


def redact_urls(text: str) -> str:
    """``text`` with every http(s) URL in it redacted by :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
