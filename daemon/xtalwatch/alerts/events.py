"""What happened that a person should know: event kinds, their constructors, and their storage.

An event is data first (a row in the catalogue's ``events`` table, so ``status`` and the web
page can show it after a restart) and an alert second (``alerts.alert_for`` turns it into one).
The constructors below are the only place that decides an event's payload keys, so every
sink sees the same fields for the same kind.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from xtalwatch.store.catalogue import Catalogue

__all__ = [
    "CRYSTAL_HIT", "IMAGER_STALLED", "TRAINING_FAILED", "MODEL_PROMOTED", "MODEL_REJECTED", "DISK_LOW", "DRIFT",
    "EVENT_KINDS", "Event", "record_event", "recent_events",
    "crystal_hit", "imager_stalled", "training_failed", "model_promoted", "model_rejected", "disk_low", "drift",
]

CRYSTAL_HIT = "crystal_hit"
IMAGER_STALLED = "imager_stalled"
TRAINING_FAILED = "training_failed"
MODEL_PROMOTED = "model_promoted"
MODEL_REJECTED = "model_rejected"
DISK_LOW = "disk_low"
DRIFT = "drift"
EVENT_KINDS = (CRYSTAL_HIT, IMAGER_STALLED, TRAINING_FAILED, MODEL_PROMOTED, MODEL_REJECTED, DISK_LOW, DRIFT)


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


def record_event(catalogue: Catalogue, event: Event) -> int:
    """Store ``event`` in the ``events`` table; returns its row id."""
    with catalogue.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO events (kind, created_at, plate_id, well_id, image_id, payload) VALUES (?, ?, ?, ?, ?, ?)",
            (event.kind, event.created_at, event.plate_id, event.well_id, event.image_id,
             json.dumps(event.payload, sort_keys=True, default=str)),
        )
        return int(cursor.lastrowid or 0)


def recent_events(conn: sqlite3.Connection, limit: int = 50, kind: str | None = None) -> list[Event]:
    """The newest events first, optionally of one kind (works on a read-only connection)."""
    sql = "SELECT kind, created_at, plate_id, well_id, image_id, payload FROM events"
    params: tuple[Any, ...] = ()
    if kind is not None:
        sql, params = sql + " WHERE kind = ?", (kind,)
    rows = conn.execute(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit)).fetchall()
    return [Event(kind=r[0], created_at=r[1], plate_id=r[2], well_id=r[3], image_id=r[4],
                  payload=json.loads(r[5]) if r[5] else {}) for r in rows]


# -- constructors, one per kind ---------------------------------------------------------------
def crystal_hit(plate: str | None, well: str | None, drop: int | None, label: str, confidence: float | None,
                image_path: str | None, *, inspection: int | None = None, model_version: str | None = None,
                plate_id: int | None = None, well_id: int | None = None, image_id: int | None = None,
                previous: str | None = None) -> Event:
    """A well's outcome moved into a crystal class; ``previous`` is the class it left (None: first call)."""
    return Event(CRYSTAL_HIT, {"plate": plate, "well": well, "drop": drop, "class": label, "confidence": confidence,
                               "image_path": image_path, "inspection": inspection, "model_version": model_version,
                               "previous_class": previous},
                 plate_id=plate_id, well_id=well_id, image_id=image_id)


def imager_stalled(last_image_at: float | None, now: float, silent_seconds: float) -> Event:
    """No new image for ``silent_seconds`` of expected hours (``last_image_at`` in Unix seconds)."""
    return Event(IMAGER_STALLED, {"last_image_at": last_image_at, "silent_seconds": round(silent_seconds, 1)},
                 created_at=now)


# The three training kinds carry ``training``: the run's figures (started_at and seconds in Unix
# seconds, final_loss, steps, n_images, n_labels), from which the service's training metrics are
# derived, whichever process ran the training.
def training_failed(reason: str, *, run: str | None = None, training: dict[str, Any] | None = None) -> Event:
    """A training run ended in an error; ``reason`` is one line."""
    return Event(TRAINING_FAILED, {"reason": reason, "run": run, "training": training or {}})


def model_promoted(version: str, metrics: dict[str, Any] | None = None, *, previous: str | None = None,
                   training: dict[str, Any] | None = None) -> Event:
    """``version`` passed the gate and now serves."""
    return Event(MODEL_PROMOTED, {"version": version, "previous_version": previous, "metrics": metrics or {},
                                  "training": training or {}})


def model_rejected(version: str, reason: str, metrics: dict[str, Any] | None = None, *,
                   training: dict[str, Any] | None = None) -> Event:
    """``version`` failed the promotion gate; it is kept, marked rejected."""
    return Event(MODEL_REJECTED, {"version": version, "reason": reason, "metrics": metrics or {},
                                  "training": training or {}})


def disk_low(path: str, free_bytes: int, total_bytes: int) -> Event:
    """The state folder's disk is nearly full."""
    return Event(DISK_LOW, {"path": path, "free_bytes": free_bytes, "total_bytes": total_bytes})


def drift(distance: float, threshold: float, n_images: int, *, model_version: str | None = None) -> Event:
    """New images' embeddings moved away from the training data by ``distance`` (> ``threshold``)."""
    return Event(DRIFT, {"distance": round(distance, 4), "threshold": threshold, "images": n_images,
                         "model_version": model_version})
