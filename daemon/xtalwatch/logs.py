"""One line per event on stderr, friendly to journald and to a person at a terminal.

Under systemd (``JOURNAL_STREAM`` set) each line starts with the ``<N>`` syslog priority
prefix that journald understands and carries no timestamp (journald adds its own). At a
terminal, lines carry a timestamp; colour is used only when stderr is a TTY. Every http(s)
URL in a line is redacted to ``scheme://host[:port]/…`` (``redact.py``): a webhook URL is a
secret, and no future log line should be able to leak one.
"""

from __future__ import annotations

import logging
import os
import sys

from xtalwatch.redact import redact_urls

__all__ = ["RedactUrls", "setup_logging"]

_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
_COLOURS = {logging.DEBUG: "\033[2m", logging.WARNING: "\033[33m", logging.ERROR: "\033[31m", logging.CRITICAL: "\033[1;31m"}


class RedactUrls(logging.Filter):
    """Rewrites a record's message (and traceback text) with every http(s) URL redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
        text = super().format(record).replace("\n", " | ")
        return f"<{prio}>{text}"


class _TerminalFormatter(logging.Formatter):
    def __init__(self, fmt: str, colour: bool):
        super().__init__(fmt, datefmt="%Y-%m-%d %H:%M:%S")
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.colour:
            return text.replace("\n", " | ")
        start = _COLOURS.get(record.levelno, "")
        return f"{start}{text}\033[0m" if start else text


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (test runners and daemons swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def setup_logging(level: str = "INFO") -> None:
    """Route the ``xtalwatch`` loggers to stderr at ``level``; safe to call more than once."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_xtalwatch", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler._xtalwatch = True  # type: ignore[attr-defined]
    handler.addFilter(RedactUrls())
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_TerminalFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                                colour=sys.stderr.isatty()))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("xtalwatch").setLevel(level)
