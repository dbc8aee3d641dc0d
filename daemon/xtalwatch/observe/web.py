"""The service's web application: ``/metrics``, ``/healthz``, the status JSON, and the review app.

One ASGI app (Starlette) served by uvicorn in a background thread, with prometheus-client's
ASGI app answering ``/metrics``, so that everything HTTP the service offers lives here; the
review app's pages (``xtalwatch.review``) are mounted beside them when the service hands over a
``ReviewContext``. It binds
to loopback by default (``metrics.host``): the numbers are not secret, but nothing else on the
network needs to reach the service. Bound elsewhere, ``/metrics`` and ``/healthz`` stay open (a
scraper and a load balancer need them), while ``/api/status``, which shows the state folder's
paths, needs a loopback client or the ``metrics.api_token`` bearer token. The review app's writes
follow their own rule (``review/access.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from xtalwatch.observe.metrics import Metrics
from xtalwatch.review.access import is_loopback

if TYPE_CHECKING:
    from xtalwatch.review.app import ReviewContext

__all__ = ["allowed", "build_app", "is_loopback", "WebServer"]

log = logging.getLogger(__name__)


class _RawASGI:
    """Lets a plain ASGI function be a ``Route`` endpoint.

    Starlette treats a *function* endpoint as a request handler, and ``Mount("/metrics")``
    answers ``/metrics`` with a 307 redirect to ``/metrics/``; wrapping the app in an object
    serves the exact path Prometheus scrapes by default.
    """

    def __init__(self, app: ASGIApp):
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def allowed(request: Request, api_token: str | None) -> bool:
    """The rule for endpoints that show more than numbers: a loopback client, or the bearer token."""
    if is_loopback(request.client.host if request.client else None):
        return True
    if not api_token:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_token.encode())


def build_app(metrics: Metrics, status: Callable[[], dict[str, Any]] | None = None,
              health: Callable[[], list[str]] | None = None, api_token: str | None = None,
              review: ReviewContext | None = None) -> Starlette:
    """The ASGI app: ``/metrics`` (Prometheus text), ``/healthz`` and ``/api/status`` (JSON), and with
    ``review`` the review app's pages, with ``/`` leading to the plate list.

    ``status`` is called per request for ``/api/status``, and ``health`` (the reasons the service
    is not working; empty when it is) for ``/healthz``; both run on the web thread, so they must
    only read state that is safe to read from another thread. ``/api/status`` shows absolute
    paths, so it answers loopback clients, or others that send ``Authorization: Bearer
    <api_token>``; ``/metrics`` and ``/healthz`` answer anyone.
    """
    exporter = _RawASGI(make_asgi_app(registry=metrics.exposition))  # every series with imager=

    async def index(request: Request) -> Response:
        if review is not None:
            return RedirectResponse("/plates", status_code=307)
        return PlainTextResponse("xtalwatch: see /metrics, /healthz and /api/status\n")

    async def healthz(request: Request) -> JSONResponse:
        reasons = health() if health is not None else []
        if reasons:
            return JSONResponse({"ok": False, "reasons": reasons}, status_code=503)
        return JSONResponse({"ok": True})

    async def api_status(request: Request) -> JSONResponse:
        if not allowed(request, api_token):
            return JSONResponse({"error": "/api/status answers loopback clients, or a bearer token "
                                          "(metrics.api_token)"}, status_code=403)
        return JSONResponse(status() if status is not None else {})

    routes: list[BaseRoute] = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/api/status", api_status),
        Route("/metrics", exporter),
        Route("/metrics/", exporter),
    ]
    if review is not None:
        from xtalwatch.review.app import review_routes  # the pages' libraries load only when served

        routes += review_routes(review)
    return Starlette(routes=routes)


class WebServer:
    """Runs the app with uvicorn on a daemon thread; ``port`` is the bound port once started.

    ``port=0`` binds a free port (tests); ``start()`` returns once the socket listens, or raises
    ``OSError`` naming the address when it cannot bind (for example, the port is taken).
    """

    def __init__(self, app: Starlette, host: str, port: int):
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        self._config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                      lifespan="off")
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self._thread.start()
        waited = 0.0
        pause = threading.Event()
        while not self._server.started:
            if not self._thread.is_alive():
                raise OSError(f"metrics server could not bind {self._config.host}:{self._config.port}")
            if waited > timeout:
                raise TimeoutError("metrics server did not start")
            pause.wait(0.02)
            waited += 0.02
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("serving /metrics on %s/metrics", self.url)

    def _serve(self) -> None:
        # uvicorn installs signal handlers only on the main thread, so from here it leaves them to
        # the service, which owns SIGTERM. On a failed bind uvicorn calls sys.exit(1): keep that
        # inside this thread; start() sees the thread end and raises OSError.
        try:
            asyncio.run(self._server.serve())
        except SystemExit:
            pass

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
