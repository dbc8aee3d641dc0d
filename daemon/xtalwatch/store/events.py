"""The ``events`` table: what happened, kept so that ``status`` and the web page show it after a restart.

Rows only. Which kinds exist, their payload keys and their alert text are ``alerts/events.py``'s;
here a payload is a JSON-able dict, stored as sorted JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from xtalwatch.store.catalogue import Db, fetch_rows, fetch_value, writing

__all__ = ["encode_payload", "insert_event", "event_rows", "events_after", "count_events"]

_COLUMNS = ("kind", "created_at", "plate_id", "well_id", "image_id", "payload")
_SELECT = f"SELECT id, {', '.join(_COLUMNS)} FROM events"


def encode_payload(payload: Mapping[str, Any]) -> str:
    """The stored text of a payload: JSON with sorted keys; anything not JSON-able as its ``str``."""
    return json.dumps(payload, sort_keys=True, default=str)


def _decoded(row: Sequence[Any]) -> dict[str, Any]:
    event = dict(zip(("id", *_COLUMNS), row, strict=True))
    event["payload"] = json.loads(event["payload"]) if event["payload"] else {}
    return event


def insert_event(db: Db, kind: str, payload: Mapping[str, Any], *, created_at: float, plate_id: int | None = None,
                 well_id: int | None = None, image_id: int | None = None) -> int:
    """Store one event (``created_at`` in Unix seconds); returns its row id."""
    with writing(db) as conn:
        cursor = conn.execute(
            f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (kind, created_at, plate_id, well_id, image_id, encode_payload(payload)))
        return int(cursor.fetchone()[0])


def event_rows(db: Db, *, limit: int = 50, kind: str | None = None) -> list[dict[str, Any]]:
    """The newest events first, optionally of one kind: dicts of ``id``, ``kind``, ``created_at`` (Unix s),
    ``plate_id``, ``well_id``, ``image_id`` and ``payload`` (decoded)."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    where, params = (" WHERE kind = ?", (kind,)) if kind is not None else ("", ())
    rows = fetch_rows(db, f"{_SELECT}{where} ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit))
    return [_decoded(r) for r in rows]


def events_after(db: Db, after_id: int = 0, kinds: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Events stored after the one with row id ``after_id``, oldest first, optionally of some kinds
    (None: all); the dicts of :func:`event_rows`."""
    where, params = " WHERE id > ?", (after_id,)
    if kinds is not None:
        where += f" AND kind IN ({','.join('?' * len(kinds))})"
        params += tuple(kinds)
    return [_decoded(r) for r in fetch_rows(db, f"{_SELECT}{where} ORDER BY id", params)]


def count_events(db: Db, kind: str | None = None) -> int:
    """How many events are stored, of one kind or of all."""
    if kind is None:
        return int(fetch_value(db, "SELECT COUNT(*) FROM events"))
    return int(fetch_value(db, "SELECT COUNT(*) FROM events WHERE kind = ?", (kind,)))
