"""The service's small web application: ``/metrics`` now, the review page and JSON API later.

One ASGI app (Starlette) served by uvicorn in a background thread, with prometheus-client's
ASGI app mounted at ``/metrics``, so that everything HTTP the service offers lives here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import uvicorn
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from xtalwatch.metrics import Metrics

__all__ = ["build_app", "WebServer"]

log = logging.getLogger(__name__)


def build_app(metrics: Metrics, status: Callable[[], dict[str, Any]] | None = None) -> Starlette:
    """The ASGI app: ``/metrics`` (Prometheus text), ``/healthz`` and ``/api/status`` (JSON)."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def api_status(request: Request) -> JSONResponse:
        return JSONResponse(status() if status is not None else {})

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/api/status", api_status),
        Mount("/metrics", app=make_asgi_app(registry=metrics.registry)),
    ])


class WebServer:
    """Runs the app with uvicorn on a daemon thread; ``port`` is the bound port once started."""

    def __init__(self, app: Starlette, host: str, port: int):
        self._config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                      lifespan="off")
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self.port = port

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive():
                raise OSError(f"metrics server could not bind {self._config.host}:{self._config.port}")
            if waited > timeout:
                raise TimeoutError("metrics server did not start")
            threading.Event().wait(0.02)
            waited += 0.02
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("serving /metrics on http://%s:%d/metrics", self._config.host, self.port)

    def _serve(self) -> None:
        # uvicorn installs signal handlers only on the main thread; the service owns signals.
        self._server.config.install_signal_handlers = False  # type: ignore[attr-defined]
        asyncio.run(self._server.serve())

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
