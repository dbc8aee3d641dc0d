"""The read-only pages: plates, the plate map, a well's timeline, the hits feed and health."""

from __future__ import annotations

import colorsys
import shutil
import time
import zlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from xtalwatch.alerts import events as ev
from xtalwatch.config import ClassifyConfig
from xtalwatch.observe.metrics import QUEUE_STAGES
from xtalwatch.plate import PLATE_FORMATS, well_position
from xtalwatch.review.platemap import plate_map
from xtalwatch.review.site import Site
from xtalwatch.stages.well_outcome import OutcomeRule, plate_outcomes
from xtalwatch.store.catalogue import last_catalogued_at
from xtalwatch.store.labels import label_count, labels_of_image
from xtalwatch.store.outcomes import plate_inspections
from xtalwatch.store.review import (
    imager_names,
    latest_event,
    plate_by_barcode,
    plate_summaries,
    recent_events,
    well_info,
    well_timeline,
)

__all__ = ["page_routes", "outcome_colours", "plate_grid", "HIT_KINDS"]

HIT_KINDS = (ev.CRYSTAL_HIT, ev.PLATE_HITS)
TRAINING_KINDS = (ev.MODEL_PROMOTED, ev.MODEL_REJECTED, ev.TRAINING_FAILED)
# Rock Maker's convention: clear is pale, precipitate brown, crystals a strong green.
_KNOWN_COLOURS = {"clear": "#dfe3e8", "other": "#9aa3ad", "dark": "#4a4f55", "precipitate": "#b9783a",
                  "microcrystals": "#7fcf5a", "crystals": "#0f9d3a", "crystal": "#0f9d3a", "needles": "#1fa87a",
                  "plates": "#2e8b57", "prisms": "#157a2e"}


def _hue_colour(name: str, crystal: bool) -> str:
    """A stable colour for a class no palette names: greens for crystal classes, blues and purples otherwise."""
    spread = (zlib.crc32(name.encode()) % 1000) / 1000
    hue = (0.28 + 0.12 * spread) if crystal else (0.55 + 0.3 * spread)
    r, g, b = colorsys.hls_to_rgb(hue, 0.42 if crystal else 0.6, 0.7 if crystal else 0.35)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def outcome_colours(cfg: ClassifyConfig) -> dict[str, str]:
    """The colour of each outcome class, weakest first (``classify.outcome_order``)."""
    crystal = set(cfg.crystal_classes)
    return {name: _KNOWN_COLOURS.get(name) or _hue_colour(name, name in crystal) for name in cfg.outcome_order}


def plate_grid(names: list[str], usual: int = 96) -> tuple[int, int]:
    """(rows, columns) of the plate: the lab's usual format (``adapters.plate_wells``) when every named well
    fits on it, else the smallest standard format (24 to 1536 wells) that holds them all."""
    positions = []
    for name in names:
        try:
            positions.append(well_position(name))
        except ValueError:
            continue
    need_rows = max((r + 1 for r, _ in positions), default=1)
    need_cols = max((c for _, c in positions), default=1)
    formats = [PLATE_FORMATS[usual]] + sorted(PLATE_FORMATS.values(), key=lambda rc: rc[0] * rc[1])
    for rows, cols in formats:
        if rows >= need_rows and cols >= need_cols:
            return rows, cols
    return PLATE_FORMATS[1536]


def _hit_view(event: dict[str, Any]) -> dict[str, Any]:
    """What a page shows of a hit event: names, numbers and ids, never the image's path."""
    p = event["payload"]
    return {"id": event["id"], "kind": event["kind"], "created_at": event["created_at"],
            "when": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["created_at"])),
            "plate": event["barcode"] or p.get("plate"), "well": event["well"] or p.get("well"),
            "well_id": event["well_id"], "image_id": event["image_id"], "imager": event["imager"],
            "class": p.get("class"),
            "confidence": p.get("confidence"), "inspection": p.get("inspection"), "drop": p.get("drop"),
            "wells": p.get("wells") if isinstance(p.get("wells"), int) else len(p.get("wells") or []),
            "classes": p.get("classes") if isinstance(p.get("classes"), dict) else {}}


def _imager_asked(request: Request) -> str | None:
    """The ``?imager=`` a list page is narrowed to; None (empty or absent) shows the whole site."""
    return request.query_params.get("imager") or None


def page_routes(site: Site) -> list[BaseRoute]:
    settings = site.settings
    rule = OutcomeRule.from_config(settings.classify)
    colours = outcome_colours(settings.classify)

    def plates(request: Request) -> Response:
        imager = _imager_asked(request)
        with site.reading() as db:
            rows = plate_summaries(db, settings.classify.crystal_classes, imager)
            imagers = imager_names(db)
        return site.render(request, "plates.html", plates=rows, title="Plates", imagers=imagers, imager=imager)

    def plate(request: Request) -> Response:
        barcode = request.path_params["barcode"]
        raw = request.query_params.get("inspection") or ""
        if raw and not raw.isdigit():
            return site.refuse(request, f"inspection must be a whole number, got {raw!r}", status_code=400)
        inspection = int(raw) if raw else None
        with site.reading() as db:
            found = plate_by_barcode(db, barcode)
            if found is None:
                return site.not_found(request, f"no plate {barcode!r} in the catalogue")
            inspections = plate_inspections(db, found["id"])
            states = plate_outcomes(db, found["id"], rule, settings.alerts.hit_min_confidence, inspection=inspection)
        rows, cols = plate_grid([state.well for state in states.values()], settings.adapters.plate_wells)
        grid = plate_map(states, rows, cols, rule, colours)
        # Classes outside classify.outcome_order (an older model's) still get a line, weakest first.
        extra = {name: "#9aa3ad" for name in grid.counts if name != "none" and name not in colours}
        legend = [(name, colour, rule.is_crystal(name), grid.counts.get(name, 0))
                  for name, colour in {**extra, **colours}.items()]
        return site.render(request, "plate.html", title=f"Plate {found['barcode']}", plate=found, grid=grid.html,
                           columns=cols, wells=rows * cols, inspections=inspections, inspection=inspection,
                           legend=legend, hits=grid.hits, no_call=grid.counts.get("none", 0), dense=cols > 24)

    def well(request: Request) -> Response:
        well_id = request.path_params["well_id"]
        with site.reading() as db:
            info = well_info(db, well_id)
            if info is None:
                return site.not_found(request, f"no well {well_id} in the catalogue")
            timeline = well_timeline(db, well_id)
            for item in timeline:
                item["labels"] = labels_of_image(db, item["id"])
        inspections: dict[Any, list[dict[str, Any]]] = {}
        for item in timeline:
            inspections.setdefault(item["inspection"], []).append(item)
        return site.render(request, "well.html", title=f"{info['barcode']} {info['name']}", well=info,
                           inspections=inspections, classes=settings.classify.classes,
                           uncertain_below=settings.classify.uncertain_below)

    def hits(request: Request) -> Response:
        imager = _imager_asked(request)
        with site.reading() as db:
            events = [_hit_view(e) for e in recent_events(db, HIT_KINDS, limit=200, imager=imager)]
            imagers = imager_names(db)
        return site.render(request, "hits.html", title="Hits", hits=events, imagers=imagers, imager=imager,
                           last_id=max((e["id"] for e in events), default=0))

    def api_hits(request: Request) -> Response:
        raw = request.query_params.get("after", "0")
        if not raw.isdigit():
            return site.refuse(request, f"after must be an event id (a whole number), got {raw!r}", status_code=400)
        with site.reading() as db:
            events = [_hit_view(e) for e in recent_events(db, HIT_KINDS, after_id=int(raw), limit=200,
                                                          imager=_imager_asked(request))]
        return JSONResponse({"hits": events, "last_id": max((e["id"] for e in events), default=int(raw))})

    def health(request: Request) -> Response:
        ctx = site.ctx
        with site.reading() as db:
            last_image = last_catalogued_at(db)
            training = latest_event(db, TRAINING_KINDS)
            labels = label_count(db)
        queues = {}
        if ctx.metrics is not None:
            for stage in QUEUE_STAGES:
                value = ctx.metrics.registry.get_sample_value("xtalwatch_queue_depth", {"stage": stage})
                queues[stage] = int(value) if value is not None else None
        try:
            usage = shutil.disk_usage(ctx.state_dir)
            disk = {"free": usage.free, "total": usage.total}
        except OSError:
            disk = None
        reasons = ctx.health() if ctx.health is not None else []
        refit = ctx.refitter.status() if ctx.refitter is not None else None
        return site.render(request, "health.html", title="Health", queues=queues, last_image=last_image,
                           training=training, disk=disk, reasons=reasons, labels=labels, refit=refit,
                           now=time.time())

    return [
        Route("/plates", plates),
        Route("/plates/{barcode}", plate),
        Route("/wells/{well_id:int}", well),
        Route("/hits", hits),
        Route("/api/hits", api_hits),
        Route("/health", health),
    ]
