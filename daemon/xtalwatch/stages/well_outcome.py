"""A well's outcome: the strongest reliable call across its drops, and when it becomes a hit.

The rule, as pure functions of ``Call`` lists (the catalogue read is one separate helper):

* A call is **reliable** when its frame has no quality flag, its class is not ``uncertain``,
  and its confidence is at least ``min_confidence``.
* Each drop is represented by its **latest inspection with a reliable call**: a too-dark or
  unsure frame at the next inspection does not erase a crystal seen before (that would make
  the well leave and re-enter the crystal class, and alert twice).
* The well's outcome is the **strongest** of those calls by ``STRENGTH`` (ties: higher
  confidence, then later inspection).
* A **hit** is a transition into a crystal class from anything else (no outcome included);
  staying within crystal classes (microcrystals → needles) is not a new hit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from xtalwatch.alerts import events as ev

__all__ = [
    "STRENGTH", "CRYSTAL_CLASSES", "UNCERTAIN", "Call", "Outcome", "strength", "is_crystal", "is_reliable",
    "well_outcome", "transition", "calls_for_well",
]

# Weakest to strongest. Classes this table does not know count like "other" (never a hit).
STRENGTH: dict[str, int] = {
    "clear": 0,
    "other": 1, "dark": 1,
    "precipitate": 2,
    "microcrystals": 3,
    "crystal": 4, "crystals": 4, "needles": 4, "plates": 4, "prisms": 4,
}
CRYSTAL_CLASSES = frozenset({"microcrystals", "crystal", "crystals", "needles", "plates", "prisms"})
UNCERTAIN = "uncertain"
_UNKNOWN_STRENGTH = STRENGTH["other"]


@dataclass(frozen=True)
class Call:
    """One image's classification, with what the rule and a hit alert need to know about it."""

    label: str
    confidence: float | None  # 0-1; None: the model gave none (never reliable)
    drop: int | None = None
    inspection: int | None = None
    flagged: bool = False  # a preprocessing quality flag (too dark, out of focus, ...)
    seen_at: float = 0.0  # Unix time catalogued; orders inspections that have no number
    image_id: int | None = None
    image_path: str | None = None
    plate: str | None = None
    well: str | None = None
    plate_id: int | None = None
    well_id: int | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A well's current outcome: ``label`` None means no reliable call yet; ``call`` decided it."""

    label: str | None
    call: Call | None = None
    drops: int = 0  # drops with a reliable call

    @property
    def is_crystal(self) -> bool:
        return is_crystal(self.label)


def strength(label: str | None) -> int:
    """Rank of ``label`` in ``STRENGTH`` (−1 for no label)."""
    return -1 if label is None else STRENGTH.get(label, _UNKNOWN_STRENGTH)


def is_crystal(label: str | None) -> bool:
    return label in CRYSTAL_CLASSES


def is_reliable(call: Call, min_confidence: float) -> bool:
    """Not quality-flagged, not ``uncertain``, and confident enough."""
    return (not call.flagged and call.label != UNCERTAIN and call.confidence is not None
            and call.confidence >= min_confidence)


def _inspection_order(call: Call) -> tuple[bool, int, float]:
    # Numbered inspections order by number; unnumbered ones (and ties) by arrival.
    return (call.inspection is not None, call.inspection or 0, call.seen_at)


def well_outcome(calls: Iterable[Call], min_confidence: float = 0.6) -> Outcome:
    """The outcome of one well from all its calls (any drops, any inspections); see the module rule."""
    latest: dict[int | None, Call] = {}
    for call in calls:
        if not is_reliable(call, min_confidence):
            continue
        held = latest.get(call.drop)
        if held is None or _inspection_order(call) > _inspection_order(held):
            latest[call.drop] = call
    if not latest:
        return Outcome(None)
    best = max(latest.values(), key=lambda c: (strength(c.label), c.confidence or 0.0, _inspection_order(c)))
    return Outcome(best.label, best, len(latest))


def transition(previous: Outcome | None, current: Outcome) -> ev.Event | None:
    """A ``crystal_hit`` event when ``current`` is a crystal class and ``previous`` was not; else None."""
    if not current.is_crystal or (previous is not None and previous.is_crystal):
        return None
    call = current.call
    assert call is not None and call.label is not None  # a crystal outcome always has its call
    return ev.crystal_hit(call.plate, call.well, call.drop, call.label, call.confidence, call.image_path,
                          inspection=call.inspection, model_version=call.model_version, plate_id=call.plate_id,
                          well_id=call.well_id, image_id=call.image_id,
                          previous=previous.label if previous is not None else None)


_CALLS_SQL = """
SELECT i.id, i.path, i.drop_no, i.inspection, i.catalogued_at, i.status, i.plate_id, i.well_id,
       pl.barcode, w.name, p.label, p.confidence, p.model_version, pp.flags
FROM images i
JOIN plates pl ON pl.id = i.plate_id
JOIN wells w ON w.id = i.well_id
JOIN predictions p ON p.image_id = i.id
LEFT JOIN preprocess pp ON pp.image_id = i.id
WHERE i.well_id = ?
  AND (? IS NULL OR i.imaging = ?)
  AND NOT EXISTS (SELECT 1 FROM images newer WHERE newer.previous_id = i.id)
  AND p.id = (SELECT q.id FROM predictions q WHERE q.image_id = i.id AND (? IS NULL OR q.model_version = ?)
              ORDER BY q.created_at DESC, q.id DESC LIMIT 1)
"""


def calls_for_well(conn: sqlite3.Connection, well_id: int, *, model_version: str | None = None,
                   imaging: str | None = "visible") -> list[Call]:
    """Every classified image of one well as a ``Call`` (all inspections; ``well_outcome`` picks).

    Each image contributes its newest prediction, or the one by ``model_version`` when given
    (images that model has not classified yet are then left out). A file replaced by a newer
    version counts only as the newer one. ``imaging`` keeps one imaging mode (None: all).
    """
    rows = conn.execute(_CALLS_SQL, (well_id, imaging, imaging, model_version, model_version)).fetchall()
    return [Call(label=r[10], confidence=r[11], drop=r[2], inspection=r[3],
                 flagged=r[5] == "flagged" or bool(r[13]), seen_at=r[4], image_id=r[0], image_path=r[1],
                 plate=r[8], well=r[9], plate_id=r[6], well_id=r[7], model_version=r[12])
            for r in rows]
