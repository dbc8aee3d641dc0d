"""The review page: the active-learning queue, one key press per label, undo; and the login form.

The queue is ``learn.review_queue.next_for_review`` (lowest margin first, spread over the encoder's
feature space). A label goes into the same ``labels`` table as ``xtalwatch labels import``, with
who gave it and when, and asks the refitter for a new head (it debounces a burst of labels).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from xtalwatch.learn.review_queue import next_for_review
from xtalwatch.review.access import CSRF_FIELD, CSRF_HEADER, LABELLER_COOKIE, SESSION_COOKIE
from xtalwatch.review.site import Site, form_fields
from xtalwatch.store.labels import label_count, remove_label, set_label
from xtalwatch.store.review import image_exists

__all__ = ["labelling_routes"]

_MAX_EXCLUDE = 5000  # ids the page still holds (its queue, its undo stack): a batch or two, far fewer


def labelling_routes(site: Site) -> list[BaseRoute]:
    ctx = site.ctx
    settings = site.settings
    classes = list(settings.classify.classes)

    def queue(n: int, exclude: tuple[int, ...] = ()) -> list[dict[str, Any]]:
        with site.reading() as db:
            items = next_for_review(db, ctx.state_dir, ctx.features, settings, n, exclude=exclude)
        return [item.to_dict() for item in items]

    def state() -> dict[str, Any]:
        with site.reading() as db:
            count = label_count(db)
        return {"label_count": count, "serving_version": site.serving_version(),
                "refit": ctx.refitter.status() if ctx.refitter is not None else None}

    def page(request: Request) -> Response:
        items = queue(settings.web.review_batch)
        return site.render(request, "review.html", title="Review", items=items, first=items[0] if items else None,
                           classes=classes, state=state(), batch=settings.web.review_batch)

    def api_next(request: Request) -> Response:
        raw_n = request.query_params.get("n", str(settings.web.review_batch))
        raw_ex = [x for x in request.query_params.get("exclude", "").split(",") if x]
        if not raw_n.isdigit() or not all(x.isdigit() for x in raw_ex) or len(raw_ex) > _MAX_EXCLUDE:
            return site.refuse(request, "n must be a whole number and exclude a comma-separated list of image ids",
                               status_code=400)
        n = max(1, min(int(raw_n), 1000))
        return JSONResponse({"items": queue(n, tuple(int(x) for x in raw_ex))})

    def api_state(request: Request) -> Response:
        return JSONResponse(state())

    async def _body(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        why = site.access.refusal(request, request.headers.get(CSRF_HEADER))
        if why is not None:
            return None, site.refuse(request, why)
        try:
            body = await request.json()
        except ValueError:
            return None, site.refuse(request, "the body must be JSON", status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("image_id"), int):
            return None, site.refuse(request, "the body must be a JSON object with an integer image_id",
                                     status_code=400)
        return body, None

    def _known(label: Any) -> bool:
        return isinstance(label, str) and settings.classify.class_of(label) is not None

    # The writes run on the thread pool: the writer's lock may be held by ingest for a moment, and the
    # event loop also answers /metrics and /healthz.
    def _label(image_id: int, label: str, labeller: str) -> dict[str, Any] | None:
        if not image_exists(ctx.catalogue, image_id):
            return None
        previous = set_label(ctx.catalogue, image_id, label, labeller, time.time())
        return {"label_count": _after_write(), "previous": previous}

    def _undo(image_id: int, previous: str | None, labeller: str) -> dict[str, Any]:
        if previous is None:
            removed = remove_label(ctx.catalogue, image_id, labeller)
        else:
            removed = set_label(ctx.catalogue, image_id, previous, labeller, time.time())
        return {"label_count": _after_write(), "removed": removed, "restored": previous}

    def _after_write() -> int:
        if ctx.refitter is not None:
            ctx.refitter.request()
        return label_count(ctx.catalogue)

    async def api_label(request: Request) -> Response:
        body, refused = await _body(request)
        if refused is not None:
            return refused
        assert body is not None
        image_id, label = body["image_id"], body.get("label")
        if not _known(label):
            return site.refuse(request, f"unknown class {label!r} (classes: {', '.join(classes)})", status_code=400)
        answer = await run_in_threadpool(_label, image_id, label, site.labeller(request))
        if answer is None:
            return site.refuse(request, f"no image {image_id} in the catalogue", status_code=404)
        return JSONResponse(answer)

    async def api_undo(request: Request) -> Response:
        body, refused = await _body(request)
        if refused is not None:
            return refused
        assert body is not None
        image_id, previous = body["image_id"], body.get("previous")
        if previous is not None and not _known(previous):
            return site.refuse(request, f"unknown class {previous!r} (classes: {', '.join(classes)})",
                               status_code=400)
        return JSONResponse(await run_in_threadpool(_undo, image_id, previous, site.labeller(request)))

    def login_page(request: Request) -> Response:
        return site.render(request, "login.html", title="Sign in", next=_safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        fields = await form_fields(request)
        if not site.access.csrf_ok(str(fields.get(CSRF_FIELD, ""))):
            return site.refuse(request, "missing or wrong CSRF token: reload the sign-in page and try again", form=True)
        token = str(fields.get("token", "")).strip()
        session = None
        if site.access.login_needed() and token:
            why = site.access.tokens_unavailable()
            if why is not None:
                return site.refuse(request, why, form=True)
            if not site.access.token_matches(token):
                return site.refuse(request, "wrong token: it must be the content of web.token_file", form=True)
            session = site.access.session_value()
        response = RedirectResponse(_safe_next(str(fields.get("next", ""))), status_code=303)
        name = str(fields.get("name", "")).strip()
        if name:
            if len(name) > 64 or not name.isprintable():
                return site.refuse(request, "a name is at most 64 printable characters", status_code=400, form=True)
            response.set_cookie(LABELLER_COOKIE, name, max_age=365 * 86400, samesite="strict")
        if session is not None:
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict")
        return response

    return [
        Route("/review", page),
        Route("/api/review/next", api_next),
        Route("/api/review/state", api_state),
        Route("/api/labels", api_label, methods=["POST"]),
        Route("/api/labels/undo", api_undo, methods=["POST"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
    ]


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/review"
