"""A well's outcome: the strongest reliable call across its drops, and when it becomes a hit.

The rule, as pure functions of ``Call`` lists (``calls_for_well`` reads them from the catalogue):

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

from collections.abc import Iterable
from dataclasses import dataclass

from xtalwatch.alerts import events as ev
from xtalwatch.store.catalogue import Db
from xtalwatch.store.outcomes import well_calls

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


def calls_for_well(db: Db, well_id: int, *, model_version: str | None = None,
                   imaging: str | None = "visible") -> list[Call]:
    """Every classified image of one well as a ``Call`` (all inspections; ``well_outcome`` picks).

    ``db`` is the service's catalogue or a connection to it; which prediction of each image
    counts, and which images, is ``store.outcomes.well_calls``'s to say.
    """
    return [Call(**row) for row in well_calls(db, well_id, model_version=model_version, imaging=imaging)]
