"""Everything ``run`` needs before it starts, checked without starting anything.

``xtalwatch config check`` and ``xtalwatch run`` both call :func:`preflight`, so a config that
checks OK is a config that starts: the plugins it names load (adapters and alert sinks, by name
or ``module:attr``), the secrets they read from the environment are set, the state folder is a
folder or can be made one, and the metrics address can be bound. Each problem is one line,
``source: key.path: message``; nothing is created and every socket is released again.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from xtalwatch.alerts.dispatch import build_sinks
from xtalwatch.config import Settings
from xtalwatch.plugins import PluginError, PluginRegistry
from xtalwatch.redact import redact_urls
from xtalwatch.stages.adapters import AdapterChain

__all__ = ["existing_ancestor", "plugin_problems", "preflight"]


def existing_ancestor(path: Path) -> Path:
    """The nearest folder (or file) above ``path`` that exists: where it would be created."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _state_problem(state: Path) -> str | None:
    try:
        if state.exists():
            if not state.is_dir():
                return f"{state} exists but is not a folder"
            if not os.access(state, os.W_OK | os.X_OK):
                return f"{state} is not writable by this user"
            return None
        parent = existing_ancestor(state)
    except OSError as exc:
        return f"cannot look at {state}: {exc.strerror or exc}"
    if not parent.is_dir():
        return f"cannot be created: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable by this user"
    return None


def _bind_problem(host: str, port: int) -> str | None:
    """Bind ``host:port`` the way the web server will (SO_REUSEADDR), then release it at once."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        return f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}"
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        why = exc.strerror or str(exc)
        hint = " (is xtalwatch already running?)" if exc.errno == errno.EADDRINUSE else ""
        return f"cannot bind {host}:{port}: {why}{hint}"
    return None


def _catalogue_problem(url: str) -> str | None:
    """Why the site's PostgreSQL cannot be used (unreachable, login refused); None when a connection opens."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10, application_name="xtalwatch-check"):
            return None
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot connect: {first}"


def plugin_problems(settings: Settings) -> list[tuple[str, str]]:
    """``(key.path, message)`` for each adapter or alert sink that cannot be loaded and built as ``run`` builds it."""
    found: list[tuple[str, str]] = []
    registry = PluginRegistry.discover(settings.plugins.dirs)
    try:
        AdapterChain.from_config(settings.adapters, registry)
    except PluginError as exc:
        found.append(("adapters.order", str(exc)))
    except Exception as exc:  # a lab's adapter may fail any way when created
        found.append(("adapters", f"{type(exc).__name__}: {exc}"))
    for i, section in enumerate(settings.alerts.sinks):
        one = settings.alerts.model_copy(update={"sinks": [section]})
        try:
            build_sinks(one, registry)  # built, never sent to
        except PluginError as exc:
            found.append((f"alerts.sinks.{i}", str(exc)))
        except Exception as exc:  # a lab's sink may fail any way when created
            found.append((f"alerts.sinks.{i}", f"{type(exc).__name__}: {exc}"))
    return found


def preflight(settings: Settings, source: str = "(config)") -> list[str]:
    """Every problem that would stop ``run`` from starting, one line each; empty when it would start.

    ``source`` names where the settings came from (the config file), as in ``ConfigError``.
    """
    found: list[tuple[str, str]] = []
    state = _state_problem(settings.state.dir)
    if state:
        found.append(("state.dir", state))
    if settings.catalogue.url is not None:
        unreachable = _catalogue_problem(settings.catalogue.url)
        if unreachable:
            found.append(("catalogue.url", unreachable))
    found += plugin_problems(settings)
    if settings.metrics.enabled:
        bind = _bind_problem(settings.metrics.host, settings.metrics.port)
        if bind:
            found.append(("metrics.host/metrics.port", bind))
    return [" ".join(redact_urls(f"{source}: {key}: {message}").splitlines()) for key, message in found]
