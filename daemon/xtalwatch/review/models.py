"""The models page: the registry with each version's gate figures, and promote and rollback.

Promote and rollback are ``xtalwatch models promote|rollback``: the same ``ModelRegistry`` calls,
which switch ``current`` atomically and mirror the change into the catalogue; the classify stage
notices the switch on its next tick and swaps the model in.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from xtalwatch.learn.registry import ModelRecord, ModelRegistry, RegistryError
from xtalwatch.review.access import CSRF_FIELD, CSRF_HEADER
from xtalwatch.review.site import Site, form_fields, is_form

__all__ = ["model_routes", "model_view"]


def model_view(record: ModelRecord, serving: str | None) -> dict[str, Any]:
    """One registry row as the page shows it (no folder path)."""
    gate = record.metrics.get("gate") or {}
    return {"version": record.version, "status": record.status, "reason": record.reason,
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created_at)),
            "serving": record.version == serving, "images": record.metrics.get("n_images"),
            "labels": record.metrics.get("n_labels"), "head": gate.get("head"), "accuracy": gate.get("accuracy"),
            "feature_std": gate.get("feature_std"), "n_holdout": gate.get("n_holdout"),
            "n_train_labels": gate.get("n_train_labels"),
            # The serving model's score on the same held-out labels when this one was gated.
            "serving_accuracy": (record.metrics.get("serving_gate") or {}).get("accuracy"),
            "head_selection": record.metrics.get("head_selection"),  # which head won on held-out labels, by how much
            "made_by": "head re-fit" if "refit" in record.metrics else "training"}


def model_routes(site: Site) -> list[BaseRoute]:
    ctx = site.ctx

    def registry() -> ModelRegistry:
        return ModelRegistry(ctx.state_dir, ctx.catalogue)

    def page(request: Request) -> Response:
        reg = registry()
        current = reg.current_version()
        serving = site.serving_version() or current
        rows = [model_view(r, current) for r in reversed(reg.list())]
        return site.render(request, "models.html", title="Models", models=rows, current=current,
                           serving=serving, can_rollback=len([v for v in reg.history() if v != current]) > 0,
                           done=request.query_params.get("done", ""))

    async def _checked(request: Request) -> tuple[dict[str, str], Response | None]:
        form = is_form(request)
        fields = await form_fields(request)
        given = fields.get(CSRF_FIELD) if form else request.headers.get(CSRF_HEADER)
        why = site.access.refusal(request, given)
        return fields, (site.refuse(request, why, form=form) if why is not None else None)

    def _answer(request: Request, message: str, serving: str) -> Response:
        if is_form(request):
            return RedirectResponse(f"/models?done={quote(message)}", status_code=303)
        return JSONResponse({"serving": serving, "message": message})

    async def promote(request: Request) -> Response:
        fields, refused = await _checked(request)
        if refused is not None:
            return refused
        version = request.path_params["version"]
        force = str(fields.get("force", request.query_params.get("force", ""))) in ("1", "true", "on")
        # On the thread pool: the registry takes a file lock and writes its files durably.
        done, why, status = await run_in_threadpool(_promote, version, force)
        if why is not None:
            return site.refuse(request, why, status_code=status, form=is_form(request))
        return _answer(request, done, version)

    def _promote(version: str, force: bool) -> tuple[str, str | None, int]:
        """(what was done, why it was refused or None, the refusal's status)."""
        reg = registry()
        try:
            record = reg.get(version)
            if record.status == "rejected" and not force:
                return "", (f"{version} was rejected ({record.reason}); promote it with force=1 to serve it "
                            "anyway"), 409
            old = reg.current_version()
            reg.promote(version, reason="promoted by hand (web)")
        except RegistryError:  # its message names the registry's folder; a page shows no path
            return "", f"no model {version!r} in the registry", 404
        return f"{version} is now serving (was {old or 'none'})", None, 200

    def _rollback() -> tuple[str, str | None]:
        reg = registry()
        try:
            old = reg.current_version()
            record = reg.rollback()
        except RegistryError as exc:  # "nothing to roll back to", worded for a person
            return "", str(exc)
        return record.version, f"rolled back: {record.version} is serving again ({old} retired)"

    async def rollback(request: Request) -> Response:
        _, refused = await _checked(request)
        if refused is not None:
            return refused
        version, message = await run_in_threadpool(_rollback)
        if not version:
            return site.refuse(request, message or "", status_code=409, form=is_form(request))
        return _answer(request, message or "", version)

    return [
        Route("/models", page),
        Route("/api/models/rollback", rollback, methods=["POST"]),
        Route("/api/models/{version}/promote", promote, methods=["POST"]),
    ]
