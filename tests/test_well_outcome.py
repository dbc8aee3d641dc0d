"""The per-well outcome rule, hit transitions, and reading a well's calls from a real catalogue."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import jpeg_bytes
from xtalwatch.alerts import events as ev
from xtalwatch.config import ClassifyConfig
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import probe_bytes
from xtalwatch.stages.well_outcome import (
    Call,
    Outcome,
    OutcomeRule,
    calls_for_well,
    is_reliable,
    transition,
    well_outcome,
)
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.predictions import StoredCall, insert_predictions

# A lab that tells microcrystals from crystals, and names crystal habits as sub-classes.
LAB = ClassifyConfig(classes=["clear", "precipitate", "microcrystals", "crystals", "other"],
                     subclasses=["needles:crystals", "plates:crystals", "prisms:crystals"],
                     outcome_order=["clear", "other", "precipitate", "microcrystals", "crystals"],
                     crystal_classes=["microcrystals", "crystals"])
RULE = OutcomeRule.from_config(LAB)


def C(label: str, conf: float | None = 0.9, drop: int | None = 1, insp: int | None = 1, **kw: object) -> Call:
    return Call(label=label, confidence=conf, drop=drop, inspection=insp, **kw)  # type: ignore[arg-type]


# -- the rule, as a table ------------------------------------------------------------------
RULE_TABLE = [
    ("no calls", [], None),
    ("one clear", [C("clear")], "clear"),
    ("strongest drop wins", [C("clear", drop=1), C("precipitate", drop=2), C("needles", drop=3)], "needles"),
    ("precipitate beats clear", [C("clear", drop=1), C("precipitate", drop=2)], "precipitate"),
    ("crystals beat microcrystals", [C("microcrystals", drop=1), C("prisms", drop=2)], "prisms"),
    ("microcrystals beat precipitate", [C("precipitate", drop=1), C("microcrystals", drop=2)], "microcrystals"),
    ("dark is weaker than precipitate", [C("dark", drop=1), C("precipitate", drop=2)], "precipitate"),
    ("an unknown class ranks with the weakest", [C("oil", drop=1), C("clear", 0.95, drop=2)], "clear"),
    ("an unknown class loses to precipitate", [C("oil", 0.99, drop=1), C("precipitate", 0.7, drop=2)], "precipitate"),
    ("low confidence ignored", [C("clear", drop=1), C("needles", 0.3, drop=2)], "clear"),
    ("confidence at the threshold counts", [C("clear", drop=1), C("needles", 0.6, drop=2)], "needles"),
    ("no confidence is not reliable", [C("needles", None)], None),
    ("an 'uncertain' class ignored", [C("clear", drop=1), C("uncertain", 0.99, drop=2)], "clear"),
    ("a call marked uncertain ignored", [C("clear", drop=1), C("needles", 0.99, drop=2, uncertain=True)], "clear"),
    ("an uncertain later frame keeps the earlier crystal",
     [C("needles", insp=1), C("clear", 0.99, insp=2, uncertain=True)], "needles"),
    ("only uncertain calls: no outcome", [C("needles", uncertain=True), C("clear", uncertain=True)], None),
    ("quality-flagged ignored", [C("clear", drop=1), C("plates", flagged=True, drop=2)], "clear"),
    ("only unreliable calls: no outcome", [C("plates", flagged=True), C("needles", 0.1)], None),
    ("latest inspection of a drop wins", [C("needles", insp=1), C("clear", insp=2)], "clear"),
    ("latest inspection wins regardless of order given", [C("clear", insp=2), C("needles", insp=1)], "clear"),
    ("a bad later frame keeps the earlier crystal",
     [C("needles", insp=1), C("clear", insp=2, flagged=True)], "needles"),
    ("an unsure later frame keeps the earlier crystal", [C("needles", insp=1), C("clear", 0.2, insp=2)], "needles"),
    ("unnumbered inspections order by arrival",
     [C("needles", insp=None, seen_at=2.0), C("clear", insp=None, seen_at=1.0)], "needles"),
    ("drops without numbers are one drop", [C("needles", drop=None, insp=1), C("clear", drop=None, insp=2)], "clear"),
]


@pytest.mark.parametrize("calls, expected", [(c, e) for _, c, e in RULE_TABLE], ids=[n for n, _, _ in RULE_TABLE])
def test_well_outcome_rule(calls: list[Call], expected: str | None) -> None:
    assert well_outcome(calls, RULE, min_confidence=0.6).label == expected


def test_outcome_keeps_the_deciding_call_and_counts_drops() -> None:
    decisive = C("plates", 0.8, drop=2, image_path="p/A1_2.jpg")
    outcome = well_outcome([C("clear", drop=1), decisive, C("plates", 0.7, drop=3)], RULE, 0.6)
    assert outcome.call == decisive  # same class: the more confident call represents the well
    assert outcome.drops == 3 and RULE.is_crystal(outcome.label)


def test_strength_follows_the_configured_order() -> None:
    order = ["clear", "other", "precipitate", "microcrystals", "crystals"]
    assert [RULE.strength(c) for c in order] == [0, 1, 2, 3, 4]
    assert RULE.strength("dark") == RULE.strength("clear") == 0  # not in the order: with the weakest
    assert RULE.strength(None) == -1 and RULE.score(None) == -1
    assert {RULE.strength(c) for c in ("crystals", "needles", "plates", "prisms")} == {4}  # sub-classes fold
    assert all(RULE.score(c) == RULE.strength(c) for c in [*order, "needles", "oil"])
    assert [c for c in [*order, "needles", "oil"] if RULE.is_crystal(c)] == ["microcrystals", "crystals", "needles"]


def test_the_default_configuration() -> None:
    rule = OutcomeRule.from_config(ClassifyConfig())
    assert rule.strength("clear") < rule.strength("other") < rule.strength("precipitate") < rule.strength("crystals")
    assert rule.is_crystal("crystals") and rule.is_crystal("needles") and not rule.is_crystal("precipitate")


def test_a_lab_with_its_own_class_names_gets_hits() -> None:
    cfg = ClassifyConfig(classes=["empty", "salt", "hit_big", "hit_small"], subclasses=[],
                         outcome_order=["empty", "salt", "hit_small", "hit_big"], crystal_classes=["hit_big", "hit_small"])
    rule = OutcomeRule.from_config(cfg)
    salt = well_outcome([C("salt", plate="P", well="A1")], rule, 0.6)
    small = well_outcome([C("salt", drop=1), C("hit_small", drop=2, plate="P", well="A1")], rule, 0.6)
    big = well_outcome([C("hit_small", drop=1), C("hit_big", 0.7, drop=2)], rule, 0.6)
    assert (salt.label, small.label, big.label) == ("salt", "hit_small", "hit_big")
    event = transition(salt, small, rule)
    assert event is not None and event.payload["class"] == "hit_small" and event.payload["previous_class"] == "salt"
    assert transition(None, well_outcome([C("hit_big")], rule, 0.6), rule) is not None
    assert transition(small, big, rule) is None  # stays within the crystal classes
    # With the default configuration these names would never be a hit.
    default = OutcomeRule.from_config(ClassifyConfig())
    assert transition(None, well_outcome([C("hit_big")], default, 0.6), default) is None


def test_reliability_threshold_is_inclusive() -> None:
    assert is_reliable(C("clear", 0.5), 0.5) and not is_reliable(C("clear", 0.49), 0.5)
    assert not is_reliable(C("clear", 0.99, uncertain=True), 0.5)


# -- transitions ----------------------------------------------------------------------------
def _o(label: str | None) -> Outcome:
    return well_outcome([C(label, plate="P1", well="B3", image_path="x.jpg")], RULE, 0.6) if label else Outcome(None)


@pytest.mark.parametrize("before, after, hit", [
    (None, "needles", True),          # first ever outcome is already a crystal
    ("clear", "needles", True),
    ("precipitate", "microcrystals", True),
    ("<none>", "plates", True),       # an outcome with no reliable call yet
    ("microcrystals", "needles", False),  # stays in the crystal classes
    ("needles", "needles", False),
    ("needles", "clear", False),      # leaving is not a hit
    ("clear", "precipitate", False),
    (None, "clear", False),
])
def test_transition_only_on_entering_a_crystal_class(before: str | None, after: str, hit: bool) -> None:
    previous = None if before is None else _o(None if before == "<none>" else before)
    event = transition(previous, _o(after), RULE)
    assert (event is not None) == hit
    if event is not None:
        assert event.kind == ev.CRYSTAL_HIT
        assert event.payload["class"] == after and event.payload["plate"] == "P1" and event.payload["well"] == "B3"
        assert event.payload["image_path"] == "x.jpg" and event.payload["confidence"] == 0.9
        assert event.payload["previous_class"] == (None if before in (None, "<none>") else before)
        assert event.payload["backlog"] is False


def test_leave_and_reenter_is_a_new_hit() -> None:
    seq = ["clear", "needles", "clear", "needles"]
    outcomes = [_o(s) for s in seq]
    hits = [transition(a, b, RULE) is not None for a, b in zip([None, *outcomes], outcomes, strict=False)]
    assert hits == [False, True, False, True]


# -- reading a well's calls from the catalogue ---------------------------------------------
def _image(cat: Catalogue, path: str, seed: int, drop: int, insp: int, well: str = "A1",
           imaging: str = "visible") -> int:
    data = jpeg_bytes(seed=seed)
    identity = ImageIdentity(plate="PL1", well=well, drop=drop, inspection=insp, adapter="t",
                             imaging=imaging)  # type: ignore[arg-type]
    return cat.record_image(path, len(data), seed, f"sha{seed}", probe_bytes(data, "jpg", 10**8), identity).image_id


def _predict(cat: Catalogue, image_id: int, version: str, label: str, conf: float, at: float,
             uncertain: bool = False) -> None:
    insert_predictions(cat, [StoredCall(image_id, version, label, conf, {label: conf}, uncertain)], at)


def test_calls_for_well_from_a_real_catalogue(tmp_path: Path) -> None:
    cat = Catalogue(tmp_path)
    try:
        d1i1 = _image(cat, "/i/d1i1.jpg", 1, drop=1, insp=1)
        d1i2 = _image(cat, "/i/d1i2.jpg", 2, drop=1, insp=2)
        d2i1 = _image(cat, "/i/d2i1.jpg", 3, drop=2, insp=1)
        uv = _image(cat, "/i/uv.jpg", 4, drop=2, insp=1, imaging="uv")
        old = _image(cat, "/i/replaced.jpg", 5, drop=3, insp=1)
        new = _image(cat, "/i/replaced.jpg", 6, drop=3, insp=1)  # same path, new content: version 2
        other_well = _image(cat, "/i/b1.jpg", 7, drop=1, insp=1, well="B1")
        unclassified = _image(cat, "/i/d4.jpg", 8, drop=4, insp=1)
        t = time.time()
        _predict(cat, d1i1, "m1", "clear", 0.9, t)
        _predict(cat, d1i2, "m1", "needles", 0.95, t)
        _predict(cat, d1i2, "m2", "plates", 0.8, t + 1)  # reclassified by a newer model
        _predict(cat, d2i1, "m1", "precipitate", 0.7, t, uncertain=True)
        _predict(cat, uv, "m1", "needles", 0.99, t)
        _predict(cat, old, "m1", "prisms", 0.99, t)
        _predict(cat, new, "m1", "clear", 0.9, t)
        _predict(cat, other_well, "m1", "needles", 0.99, t)
        cat.record_preprocess(d2i1, "hough", ["too_dark"], None, None, "{}", "flagged")
        assert unclassified  # catalogued but with no prediction: not a call
        well_id = cat.query("SELECT well_id FROM images WHERE id=?", (d1i1,))[0][0]
        with cat.transaction() as conn:
            calls = calls_for_well(conn, well_id)
            by_image = {c.image_id: c for c in calls}
            assert set(by_image) == {d1i1, d1i2, d2i1, new}  # no UV, no replaced version, no other well
            assert by_image[d1i2].label == "plates" and by_image[d1i2].model_version == "m2"
            assert by_image[d2i1].flagged and not by_image[d1i1].flagged
            assert by_image[d2i1].uncertain is True and by_image[d1i1].uncertain is False
            assert by_image[d1i2].plate == "PL1" and by_image[d1i2].well == "A1"
            assert by_image[d1i2].image_path == "/i/d1i2.jpg" and by_image[d1i2].inspection == 2
            only_m1 = {c.image_id: c.label for c in calls_for_well(conn, well_id, model_version="m1")}
            assert only_m1[d1i2] == "needles"
            assert {c.image_id for c in calls_for_well(conn, well_id, imaging=None)} >= {uv}
        outcome = well_outcome(calls, RULE, min_confidence=0.6)
        assert outcome.label == "plates" and outcome.call is not None and outcome.call.image_id == d1i2

        # The hit event goes into the catalogue with its ids, and reads back.
        event = transition(well_outcome([c for c in calls if c.image_id != d1i2], RULE, 0.6), outcome, RULE)
        assert event is not None and event.well_id == well_id and event.image_id == d1i2
        row_id = ev.record_event(cat, event)
        assert row_id > 0
        with cat.transaction() as conn:
            stored = ev.recent_events(conn, kind=ev.CRYSTAL_HIT)
        assert stored == [event]
    finally:
        cat.close()


def test_unknown_event_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event kind 'hit'"):
        ev.Event("hit")
