"""The review app's routes, mounted by ``observe.web.build_app`` beside ``/metrics``.

Pages are rendered on the server (Jinja2, ``templates/``) with a little plain JavaScript
(``static/``), so there is no build step. Every image is addressed by its catalogue id; no page,
URL or answer holds a filesystem path.

=========================================  ==============================================================
``/plates``, ``/plates/{barcode}``         plate list; plate map (``?inspection=N``)
``/plates/{barcode}/export.csv|json``      the plate's per-well outcomes for a LIMS (``review/export.py``)
``/wells/{id}``                            a well's inspections side by side
``/hits``, ``/api/hits?after=ID``          the hits feed and its polling endpoint
``/review``, ``/api/review/next|state``    the active-learning queue
``POST /api/labels``, ``/api/labels/undo`` a label, and its undo
``/models``, ``POST /api/models/...``      the registry; promote and rollback
``/health``                                queues, last image, last training, disk
``/images/{id}/thumb.jpg|crop.png|frame.jpg``  pictures, cached on disk and in browsers
``/login``                                 the labeller's name, and the token off loopback
=========================================  ==============================================================
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from xtalwatch.review.export import UnknownPlate, render
from xtalwatch.review.labelling import labelling_routes
from xtalwatch.review.models import model_routes
from xtalwatch.review.pages import page_routes
from xtalwatch.review.site import ReviewContext, Site
from xtalwatch.review.thumbs import CACHE_CONTROL, Kind, PictureMissing

__all__ = ["ReviewContext", "review_routes"]

_STATIC = Path(__file__).resolve().parent / "static"
_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def _picture_routes(site: Site) -> list[BaseRoute]:
    def route(suffix: str, kind: Kind) -> Route:
        def picture(request: Request) -> Response:
            image_id = request.path_params["image_id"]
            try:
                with site.reading() as db:
                    found = site.thumbs.picture(db, image_id, kind)
            except PictureMissing as exc:
                return PlainTextResponse(f"{exc}\n", status_code=404)
            headers = {"Cache-Control": CACHE_CONTROL, "ETag": found.etag}
            if found.etag in request.headers.get("if-none-match", ""):
                return Response(status_code=304, headers=headers)
            return FileResponse(found.path, media_type=found.media_type, headers=headers)

        return Route(f"/images/{{image_id:int}}/{suffix}", picture)

    return [route("thumb.jpg", "thumb"), route("crop.png", "crop"), route("frame.jpg", "frame")]


def _export_routes(site: Site) -> list[BaseRoute]:
    def export(request: Request) -> Response:
        barcode, fmt = request.path_params["barcode"], request.path_params["fmt"]
        if fmt not in _MEDIA:
            return site.not_found(request, f"no export format {fmt!r} (csv or json)")
        raw = request.query_params.get("inspection") or ""
        if raw and not raw.isdigit():
            return site.refuse(request, f"inspection must be a whole number, got {raw!r}", status_code=400)
        try:
            with site.reading() as db:
                text = render(db, barcode, site.settings, fmt, inspection=int(raw) if raw else None)
        except UnknownPlate as exc:
            return site.not_found(request, str(exc))
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in barcode)
        suffix = f"-i{raw}" if raw else ""
        return Response(text, media_type=_MEDIA[fmt],
                        headers={"Content-Disposition": f'attachment; filename="{name}{suffix}.{fmt}"'})

    return [Route("/plates/{barcode}/export.{fmt}", export)]


def review_routes(ctx: ReviewContext) -> list[BaseRoute]:
    """Every route of the review app, for ``observe.web.build_app`` to mount beside ``/metrics``."""
    site = Site(ctx)
    return [
        *_export_routes(site),
        *page_routes(site),
        *model_routes(site),
        *labelling_routes(site),
        *_picture_routes(site),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]
