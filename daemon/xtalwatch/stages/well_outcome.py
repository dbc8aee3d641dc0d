"""A well's outcome: the strongest reliable call across its drops, and when it becomes a hit.

The rule, as pure functions of ``Call`` lists (``calls_for_well`` and ``plate_outcomes`` read them
from the catalogue), with the lab's classes in an ``OutcomeRule`` built from the configuration:

* A call is **reliable** when its frame has no quality flag, the model was sure enough of it
  (not marked ``uncertain``: below ``classify.uncertain_below``), and its confidence is at least
  ``min_confidence``. An unreliable call stays visible; it never decides an outcome or a hit.
* Each drop is represented by its **latest inspection with a reliable call**: a too-dark or
  unsure frame at the next inspection does not erase a crystal seen before (that would make
  the well leave and re-enter the crystal class, and alert twice).
* The well's outcome is the **strongest** of those calls by ``classify.outcome_order`` (ties:
  higher confidence, then later inspection).
* A **hit** is a transition into one of ``classify.crystal_classes`` from anything else (no
  outcome included); staying within crystal classes is not a new hit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from xtalwatch.alerts import events as ev
from xtalwatch.config import ClassifyConfig
from xtalwatch.store.catalogue import Db
from xtalwatch.store.outcomes import plate_calls, plate_wells, well_calls

__all__ = [
    "UNCERTAIN", "OutcomeRule", "Call", "Outcome", "WellState", "is_reliable", "well_outcome", "transition",
    "calls_for_well", "plate_outcomes",
]

UNCERTAIN = "uncertain"  # a class name some older models used for "not sure"; never reliable


@dataclass(frozen=True)
class OutcomeRule:
    """The lab's classes for the rule: how strong each is, and which are crystals.

    ``ranks`` maps a class (and each of its sub-classes, ``needles`` → ``crystals``) to its rank,
    weakest 0; a class it does not name ranks with the weakest.
    """

    ranks: Mapping[str, int] = field(hash=False)
    crystal_classes: frozenset[str]

    @classmethod
    def from_config(cls, cfg: ClassifyConfig) -> OutcomeRule:
        """``cfg.outcome_order`` (weakest → strongest) and ``cfg.crystal_classes``, sub-classes folded in."""
        ranks = {name: rank for rank, name in enumerate(cfg.outcome_order)}
        crystal = set(cfg.crystal_classes)
        for fine, parent in cfg.subclass_of.items():
            if parent in ranks:
                ranks[fine] = ranks[parent]
            if parent in crystal:
                crystal.add(fine)
        return cls(MappingProxyType(ranks), frozenset(crystal))

    def strength(self, label: str | None) -> int:
        """Rank of ``label``, weakest 0 (classes not in the order rank 0); −1 for no label."""
        return -1 if label is None else self.ranks.get(label, 0)

    def score(self, label: str | None) -> int:
        """The number a LIMS export shows for ``label``: its strength."""
        return self.strength(label)

    def is_crystal(self, label: str | None) -> bool:
        return label in self.crystal_classes


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
    uncertain: bool = False  # top probability below classify.uncertain_below


@dataclass(frozen=True)
class Outcome:
    """A well's current outcome: ``label`` None means no reliable call yet; ``call`` decided it."""

    label: str | None
    call: Call | None = None
    drops: int = 0  # drops with a reliable call


def is_reliable(call: Call, min_confidence: float) -> bool:
    """Not quality-flagged, not uncertain, and confident enough."""
    return (not call.flagged and not call.uncertain and call.label != UNCERTAIN and call.confidence is not None
            and call.confidence >= min_confidence)


def _inspection_order(call: Call) -> tuple[bool, int, float]:
    # Numbered inspections order by number; unnumbered ones (and ties) by arrival.
    return (call.inspection is not None, call.inspection or 0, call.seen_at)


def well_outcome(calls: Iterable[Call], rule: OutcomeRule, min_confidence: float) -> Outcome:
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
    best = max(latest.values(), key=lambda c: (rule.strength(c.label), c.confidence or 0.0, _inspection_order(c)))
    return Outcome(best.label, best, len(latest))


def transition(previous: Outcome | None, current: Outcome, rule: OutcomeRule, *,
               backlog: bool = False) -> ev.Event | None:
    """A ``crystal_hit`` event when ``current`` is a crystal class and ``previous`` was not; else None.

    ``backlog``: the deciding call came from classifying images that waited (see ``ev.crystal_hit``).
    """
    if not rule.is_crystal(current.label) or (previous is not None and rule.is_crystal(previous.label)):
        return None
    call = current.call
    assert call is not None and call.label is not None  # a crystal outcome always has its call
    return ev.crystal_hit(call.plate, call.well, call.drop, call.label, call.confidence, call.image_path,
                          inspection=call.inspection, model_version=call.model_version, plate_id=call.plate_id,
                          well_id=call.well_id, image_id=call.image_id,
                          previous=previous.label if previous is not None else None, backlog=backlog)


def calls_for_well(db: Db, well_id: int, *, model_version: str | None = None,
                   imaging: str | None = "visible") -> list[Call]:
    """Every classified image of one well as a ``Call`` (all inspections; ``well_outcome`` picks).

    ``db`` is the service's catalogue or a connection to it; which prediction of each image
    counts, and which images, is ``store.outcomes.well_calls``'s to say.
    """
    return [Call(**row) for row in well_calls(db, well_id, model_version=model_version, imaging=imaging)]


# -- a whole plate at once, for the plate map and the export -------------------------------------
@dataclass(frozen=True)
class WellState:
    """One well on the plate map: its outcome and what its images were (counts of images)."""

    well_id: int
    well: str  # its name, "A1"
    outcome: Outcome
    images: int  # newest file versions, classified or not
    flagged: int  # of those, with a quality flag (never classified)
    uncertain: int  # classified, but marked uncertain
    image_ids: tuple[int, ...] = ()  # the classified images the rule read, ascending


def plate_outcomes(db: Db, plate_id: int, rule: OutcomeRule, min_confidence: float, *,
                   inspection: int | None = None, imaging: str | None = "visible") -> dict[int, WellState]:
    """well id → ``WellState`` for every well of the plate, from one plate-wide read of its calls.

    Each image counts with its newest prediction (any model). ``inspection`` shows the plate as
    it was then: only images of numbered inspections up to it count. Wells without a call have
    an outcome with label None. The calls carry ids, not names or paths (the map needs no more).
    """
    images: dict[int, int] = defaultdict(int)
    flagged: dict[int, int] = defaultdict(int)
    calls: dict[int, list[Call]] = defaultdict(list)
    for label, confidence, drop, insp, is_flagged, seen_at, image_id, well_id, version, uncertain in plate_calls(
            db, plate_id, inspection=inspection, imaging=imaging):
        images[well_id] += 1
        flagged[well_id] += bool(is_flagged)
        if label is not None:
            calls[well_id].append(Call(label, confidence, drop, insp, bool(is_flagged), seen_at, image_id,
                                       plate_id=plate_id, well_id=well_id, model_version=version,
                                       uncertain=bool(uncertain)))
    states = {}
    for well_id, name in plate_wells(db, plate_id).items():
        mine = calls.get(well_id, [])
        states[well_id] = WellState(well_id, name, well_outcome(mine, rule, min_confidence), images[well_id],
                                    flagged[well_id], sum(c.uncertain for c in mine),
                                    tuple(sorted(c.image_id for c in mine if c.image_id is not None)))
    return states
