"""Tell systemd how the service is doing: the plain ``sd_notify`` datagram, no libsystemd.

With ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, an AF_UNIX datagram socket (a path, or
an abstract name written with a leading ``@``), and reads newline-separated ``KEY=VALUE``
messages from it. With ``WatchdogSec=`` it also passes ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``) and restarts the service when ``WATCHDOG=1`` stops arriving.

The API the service uses::

    sdnotify.ready("watching /srv/imager")      # after the start-up scan: READY=1 + STATUS=
    keepalive = sdnotify.KeepAlive()            # in the main loop, every tick:
    keepalive.tick()                            #   sends WATCHDOG=1 at half the watchdog period
    sdnotify.status("ingesting 120 files")      # free text shown by `systemctl status`
    sdnotify.stopping()                         # on SIGTERM, before the stages stop

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op that returns False, so the same
code runs in a terminal and in tests. A send that fails is logged once and never raises: a
monitoring hiccup must not stop image ingest.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "extend_timeout", "watchdog_interval", "KeepAlive"]

log = logging.getLogger(__name__)
_warned = False


def _address(raw: str) -> str | bytes:
    """``@name`` is an abstract socket (a leading NUL byte on the wire); anything else a path."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (one or more ``KEY=VALUE`` lines) to ``$NOTIFY_SOCKET``.

    Returns True when the datagram was sent, False when not under systemd or the send failed.
    """
    global _warned
    if not message or "=" not in message:
        raise ValueError(f"sd_notify messages are KEY=VALUE lines, got {message!r}")
    raw = (env if env is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not raw:
        return False
    if not (raw.startswith("/") or raw.startswith("@")):
        # vsock: and other transports exist, but systemd only uses them for VMs.
        if not _warned:
            log.warning("NOTIFY_SOCKET=%s is not a unix socket path; not notifying systemd", raw)
            _warned = True
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(raw))
            sock.sendall(message.encode())
    except OSError as exc:
        if not _warned:
            log.warning("cannot notify systemd at %s: %s", raw, exc)
            _warned = True
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """``READY=1``: start-up is done (for xtalwatch: the first scan). systemd then starts dependants."""
    return notify("READY=1" + (f"\nSTATUS={_one_line(status_text)}" if status_text else ""))


def status(text: str) -> bool:
    """``STATUS=...``: one line shown by ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}")


def stopping() -> bool:
    """``STOPPING=1``: shutdown has begun, so systemd does not count the silence as a hang."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """``WATCHDOG=1``: the keep-alive ping; see ``KeepAlive`` for pacing it."""
    return notify("WATCHDOG=1")


def extend_timeout(seconds: float) -> bool:
    """``EXTEND_TIMEOUT_USEC``: ask for ``seconds`` more before the start (or stop) timeout fires.

    Useful during a long start-up scan of a big image store.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    return notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog period in seconds from ``$WATCHDOG_USEC``, or None when no watchdog is set.

    ``$WATCHDOG_PID``, when present, names the process the watchdog is for; another process (a
    training child that inherited the environment) gets None.
    """
    env = env if env is not None else os.environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class KeepAlive:
    """Paces ``WATCHDOG=1`` pings: call ``tick()`` as often as you like from the main loop.

    It pings at most every ``interval / 2`` seconds (systemd's advice), so the loop's own period
    does not matter as long as it is shorter than that. Without a watchdog it does nothing.
    """

    def __init__(self, interval: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.interval = interval if interval is not None else watchdog_interval()
        if self.interval is not None and self.interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {self.interval}")
        self._clock = clock
        self._last: float | None = None

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def tick(self) -> bool:
        """Ping if half the watchdog period has passed since the last ping; True when one was sent."""
        if self.interval is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval / 2:
            return False
        self._last = now
        return watchdog()
