"""What every page of the review app shares: the context the service hands over, templates, reads, refusals."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.templating import Jinja2Templates

from xtalwatch.config import Settings
from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.observe.metrics import Metrics
from xtalwatch.review.access import LABELLER_COOKIE, Access
from xtalwatch.review.thumbs import Thumbnails
from xtalwatch.store.catalogue import Catalogue

if TYPE_CHECKING:  # the refitter is optional; the pages only call request() and status()
    from xtalwatch.learn.refit import HeadRefitter

__all__ = ["ReviewContext", "Site", "NAV"]

# (path, title) of the pages in the menu, in order.
NAV = (("/plates", "Plates"), ("/hits", "Hits"), ("/review", "Review"), ("/models", "Models"), ("/health", "Health"))
_FORM_LIMIT = 64 * 1024  # bytes; the largest form (sign-in) is well under 1 KB
_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


@dataclass
class ReviewContext:
    """What the service hands the review app (all of it read on the web thread, so thread-safe to read).

    ``catalogue`` is the service's writer, used for writes only (labels; the registry's mirror);
    pages read through their own read-only connections. ``serving_version`` names the model the
    classify stage holds now; ``health`` returns the reasons the service is not working (empty when
    it is); ``bound_host`` is the address the web server listens on, which decides the write rule.
    """

    settings: Settings
    state_dir: Path
    catalogue: Catalogue
    features: FeatureCache | None = None
    refitter: HeadRefitter | None = None
    serving_version: Callable[[], str | None] = lambda: None
    health: Callable[[], list[str]] | None = None
    metrics: Metrics | None = None
    bound_host: str = "127.0.0.1"


class Site:
    """One app's shared parts: templates, the access rule, the picture cache, read connections."""

    def __init__(self, ctx: ReviewContext):
        self.ctx = ctx
        self.settings = ctx.settings
        self.access = Access(ctx.bound_host, ctx.settings.web.token_file)
        self.thumbs = Thumbnails(ctx.state_dir, thumbnail_px=ctx.settings.web.thumbnail_px,
                                 frame_px=ctx.settings.web.frame_px, max_pixels=ctx.settings.ingest.max_pixels)
        env = Environment(loader=PackageLoader("xtalwatch.review", "templates"),
                          autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
        env.filters.update(datetime=_datetime, ago=_ago, bytes=_bytes)
        self.templates = Jinja2Templates(env=env)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection for one request; it never waits for the service's writer."""
        conn = Catalogue.readonly_for(self.ctx.settings)
        try:
            yield conn
        finally:
            conn.close()

    def serving_version(self) -> str | None:
        return self.ctx.serving_version()

    def labeller(self, request: Request) -> str:
        """The name stored with a label: the browser's chosen name, else ``web.labeller_default``."""
        name = (request.cookies.get(LABELLER_COOKIE) or "").strip()
        if 0 < len(name) <= 64 and name.isprintable():
            return name
        return self.settings.web.labeller_default

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        """A page, with what the layout needs (menu, CSRF token, who is labelling)."""
        context.update(request=request, nav=NAV, csrf_token=self.access.csrf_token, labeller=self.labeller(request),
                       login_needed=self.access.login_needed(), logged_in=self.access.logged_in(request),
                       serving_version=self.serving_version())
        return self.templates.TemplateResponse(request, template, context, status_code=status_code, headers=_HEADERS)

    def refuse(self, request: Request, why: str, *, status_code: int = 403, form: bool = False) -> Response:
        """A refused request: JSON ``{"error": why}``, or a small page for a browser's form post."""
        if form:
            return self.render(request, "refused.html", status_code=status_code, why=why)
        return JSONResponse({"error": why}, status_code=status_code)

    def not_found(self, request: Request, what: str) -> Response:
        return self.render(request, "refused.html", status_code=404, why=what, title="Not found")


def _datetime(unix: float | None) -> str:
    return "-" if unix is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


def _ago(seconds: float) -> str:
    """``seconds`` as a person says it: "40 s ago", "3 min ago", "2.5 h ago", "4 d ago"."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s ago"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def is_form(request: Request) -> bool:
    """True for a browser's form post (answered with pages and redirects, not JSON)."""
    return request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form post (the only kind the pages send; no file uploads, so
    Starlette's multipart parser, an extra dependency, is not needed). Later repeats of a field win."""
    if not is_form(request):
        return {}
    body = await request.body()
    return dict(parse_qsl(body[:_FORM_LIMIT].decode("utf-8", "replace"), keep_blank_values=True))

