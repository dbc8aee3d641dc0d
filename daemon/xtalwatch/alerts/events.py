"""What happened that a person should know: each event kind, its constructor and its alert text.

An event is data first (a row in the catalogue's ``events`` table, ``store/events.py``, so that
``status`` and the web page can show it after a restart) and an alert second (``alert_for``).
Each kind below is one section: its constructor, the only place that decides the kind's payload
keys, and beside it the formatter that reads them back into the alert's title, text and dedupe
key, registered with the kind's severity. ``alert_for`` only looks the formatter up, so every
sink sees the same fields and words for the same kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias

from xtalwatch.alerts.alert import Alert, Severity
from xtalwatch.store import events as stored
from xtalwatch.store.catalogue import Db

__all__ = [
    "CRYSTAL_HIT", "PLATE_HITS", "IMAGER_STALLED", "TRAINING_FAILED", "MODEL_PROMOTED", "MODEL_REJECTED", "DISK_LOW",
    "DRIFT", "EVENT_KINDS", "Event", "alert_for", "record_event", "recent_events",
    "crystal_hit", "plate_hits", "imager_stalled", "training_failed", "model_promoted", "model_rejected", "disk_low",
    "drift",
]

CRYSTAL_HIT = "crystal_hit"
PLATE_HITS = "plate_hits"
IMAGER_STALLED = "imager_stalled"
TRAINING_FAILED = "training_failed"
MODEL_PROMOTED = "model_promoted"
MODEL_REJECTED = "model_rejected"
DISK_LOW = "disk_low"
DRIFT = "drift"
EVENT_KINDS = (CRYSTAL_HIT, PLATE_HITS, IMAGER_STALLED, TRAINING_FAILED, MODEL_PROMOTED, MODEL_REJECTED, DISK_LOW, DRIFT)


@dataclass(frozen=True)
class Event:
    """One thing that happened; ``payload`` holds JSON-able fields (plate, well, class, ...)."""

    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    plate_id: int | None = None
    well_id: int | None = None
    image_id: int | None = None
    created_at: float = field(default_factory=time.time)  # Unix seconds

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; known: {', '.join(EVENT_KINDS)}")


def record_event(db: Db, event: Event) -> int:
    """Store ``event`` in the catalogue's ``events`` table; returns its row id."""
    return stored.insert_event(db, event.kind, event.payload, created_at=event.created_at, plate_id=event.plate_id,
                               well_id=event.well_id, image_id=event.image_id)


def recent_events(db: Db, limit: int = 50, kind: str | None = None) -> list[Event]:
    """The newest events first, optionally of one kind (works on a read-only connection)."""
    return [Event(row["kind"], row["payload"], row["plate_id"], row["well_id"], row["image_id"], row["created_at"])
            for row in stored.event_rows(db, limit=limit, kind=kind)]


# -- from event to alert ------------------------------------------------------------------------
class Wording(NamedTuple):
    """What a kind's formatter says about one event; ``alert_for`` adds severity, fields and time."""

    title: str
    text: str  # one line
    dedupe_key: str


_Formatter: TypeAlias = Callable[[dict[str, Any]], Wording]  # a kind's payload -> its words
_FORMATS: dict[str, tuple[Severity, _Formatter]] = {}


def _alert(kind: str, severity: Severity) -> Callable[[_Formatter], _Formatter]:
    """Register the decorated function as the formatter of ``kind``'s payload, at ``severity``."""
    def register(words: _Formatter) -> _Formatter:
        if kind not in EVENT_KINDS or kind in _FORMATS:
            raise ValueError(f"event kind {kind!r} is unknown or already has a formatter")
        _FORMATS[kind] = (severity, words)
        return words
    return register


def alert_for(event: Event) -> Alert:
    """The alert for ``event``: its kind's severity, title, one line of text and dedupe key, and as
    fields the payload entries that are not None."""
    if event.kind not in _FORMATS:  # pragma: no cover - every kind registers one below
        raise ValueError(f"no alert format for event kind {event.kind!r}")
    severity, words = _FORMATS[event.kind]
    title, text, dedupe_key = words(event.payload)
    fields = {k: v for k, v in event.payload.items() if v is not None}
    return Alert(event.kind, severity, title, text, fields, dedupe_key, event.created_at)


def _pct(x: Any) -> str:
    return f"{x:.0%}" if isinstance(x, int | float) else "?"


def _gb(n: Any) -> str:
    return f"{n / 1e9:.1f} GB" if isinstance(n, int | float) else "?"


# -- the kinds: constructor and alert text, one section each --------------------------------------
def crystal_hit(plate: str | None, well: str | None, drop: int | None, label: str, confidence: float | None,
                image_path: str | None, *, inspection: int | None = None, model_version: str | None = None,
                plate_id: int | None = None, well_id: int | None = None, image_id: int | None = None,
                previous: str | None = None, backlog: bool = False) -> Event:
    """A well's outcome moved into a crystal class; ``previous`` is the class it left (None: first call).

    ``backlog``: found while classifying images that waited (a first model, a swap, a restart); such
    a hit is stored but alerted only in its plate's ``plate_hits`` summary.
    """
    return Event(CRYSTAL_HIT, {"plate": plate, "well": well, "drop": drop, "class": label, "confidence": confidence,
                               "image_path": image_path, "inspection": inspection, "model_version": model_version,
                               "previous_class": previous, "backlog": backlog},
                 plate_id=plate_id, well_id=well_id, image_id=image_id)


@_alert(CRYSTAL_HIT, "info")
def _crystal_hit_words(p: dict[str, Any]) -> Wording:
    where = f"plate {p.get('plate')} well {p.get('well')}" + (f" drop {p['drop']}" if p.get("drop") is not None else "")
    return Wording(f"Crystal hit: {p.get('plate')} {p.get('well')}",
                   f"{p.get('class')} in {where} (confidence {_pct(p.get('confidence'))})",
                   f"crystal_hit:{p.get('plate')}:{p.get('well')}")


_WELLS_NAMED = 8  # wells a plate summary names before "…"


def plate_hits(plate: str | None, wells: list[str], classes: dict[str, int], *, link: str | None = None,
               batch: str = "", plate_id: int | None = None) -> Event:
    """Wells of one plate that a backlog's classification found crystalline, in one event.

    ``wells``: their names in plate order; ``classes``: how many wells per crystal class; ``link``:
    the plate's page (None when the web app is not serving); ``batch`` tells one summary of the
    plate from the next.
    """
    return Event(PLATE_HITS, {"plate": plate, "wells": list(wells), "count": len(wells), "classes": dict(classes),
                              "link": link, "batch": batch}, plate_id=plate_id)


@_alert(PLATE_HITS, "info")
def _plate_hits_words(p: dict[str, Any]) -> Wording:
    wells = list(p.get("wells") or [])
    named = ", ".join(wells[:_WELLS_NAMED]) + (", …" if len(wells) > _WELLS_NAMED else "")
    count = p.get("count", len(wells))
    text = f"plate {p.get('plate')}: {count} well{'s' if count != 1 else ''} with crystals ({named})"
    if p.get("link"):
        text += f" — {p['link']}"
    return Wording(f"Crystal hits: plate {p.get('plate')}", text, f"plate_hits:{p.get('plate')}:{p.get('batch')}")


def imager_stalled(last_image_at: float | None, now: float, silent_seconds: float) -> Event:
    """No new image for ``silent_seconds`` of expected hours (``last_image_at`` in Unix seconds)."""
    return Event(IMAGER_STALLED, {"last_image_at": last_image_at, "silent_seconds": round(silent_seconds, 1)},
                 created_at=now)


@_alert(IMAGER_STALLED, "warning")
def _imager_stalled_words(p: dict[str, Any]) -> Wording:
    hours = (p.get("silent_seconds") or 0) / 3600
    return Wording("Imager stalled", f"no new image for {hours:.1f} h of expected imaging hours", "imager_stalled")


# The three training kinds carry ``training``: the run's figures (started_at and seconds in Unix
# seconds, final_loss, steps, n_images, n_labels), from which the service's training metrics are
# derived, whichever process ran the training.
def training_failed(reason: str, *, run: str | None = None, training: dict[str, Any] | None = None) -> Event:
    """A training run ended in an error; ``reason`` is one line."""
    return Event(TRAINING_FAILED, {"reason": reason, "run": run, "training": training or {}})


@_alert(TRAINING_FAILED, "warning")
def _training_failed_words(p: dict[str, Any]) -> Wording:
    return Wording("Training failed", f"training failed: {p.get('reason')}",
                   f"training_failed:{p.get('run') or p.get('reason')}")


def model_promoted(version: str, metrics: dict[str, Any] | None = None, *, previous: str | None = None,
                   training: dict[str, Any] | None = None) -> Event:
    """``version`` passed the gate and now serves."""
    return Event(MODEL_PROMOTED, {"version": version, "previous_version": previous, "metrics": metrics or {},
                                  "training": training or {}})


@_alert(MODEL_PROMOTED, "info")
def _model_promoted_words(p: dict[str, Any]) -> Wording:
    return Wording(f"Model {p.get('version')} promoted",
                   f"model {p.get('version')} now serves (was {p.get('previous_version') or 'none'})",
                   f"model_promoted:{p.get('version')}")


def model_rejected(version: str, reason: str, metrics: dict[str, Any] | None = None, *,
                   training: dict[str, Any] | None = None) -> Event:
    """``version`` failed the promotion gate; it is kept, marked rejected."""
    return Event(MODEL_REJECTED, {"version": version, "reason": reason, "metrics": metrics or {},
                                  "training": training or {}})


@_alert(MODEL_REJECTED, "warning")
def _model_rejected_words(p: dict[str, Any]) -> Wording:
    return Wording(f"Model {p.get('version')} rejected",
                   f"model {p.get('version')} failed the promotion gate: {p.get('reason')}",
                   f"model_rejected:{p.get('version')}")


def disk_low(path: str, free_bytes: int, total_bytes: int) -> Event:
    """The state folder's disk is nearly full."""
    return Event(DISK_LOW, {"path": path, "free_bytes": free_bytes, "total_bytes": total_bytes})


@_alert(DISK_LOW, "critical")
def _disk_low_words(p: dict[str, Any]) -> Wording:
    return Wording("Disk space low", f"{_gb(p.get('free_bytes'))} free of {_gb(p.get('total_bytes'))} at {p.get('path')}",
                   "disk_low")


def drift(distance: float, threshold: float, n_images: int, *, model_version: str | None = None) -> Event:
    """New images' embeddings moved away from the training data by ``distance`` (> ``threshold``)."""
    return Event(DRIFT, {"distance": round(distance, 4), "threshold": threshold, "images": n_images,
                         "model_version": model_version})


@_alert(DRIFT, "warning")
def _drift_words(p: dict[str, Any]) -> Wording:
    return Wording("Image drift",
                   f"new images moved {p.get('distance')} from the training data (threshold {p.get('threshold')})",
                   "drift")
