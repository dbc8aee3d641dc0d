"""The plate map's data: every well's outcome from one plate-wide read, as of any inspection."""

from __future__ import annotations

import re
import time
from pathlib import Path

from conftest import jpeg_bytes
from xtalwatch.config import ClassifyConfig
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import probe_bytes
from xtalwatch.stages.well_outcome import OutcomeRule, calls_for_well, plate_outcomes, well_outcome
from xtalwatch.store import outcomes as stored
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.predictions import StoredCall, insert_predictions

RULE = OutcomeRule.from_config(ClassifyConfig())


class Plate:
    """Images of one plate recorded through the real catalogue, with predictions stored as the service stores them."""

    def __init__(self, cat: Catalogue, barcode: str):
        self.cat, self.barcode, self.n = cat, barcode, 0

    def image(self, well: str, drop: int = 1, insp: int | None = 1, path: str | None = None,
              imaging: str = "visible") -> int:
        self.n += 1
        seed = hash((self.barcode, self.n)) % 10**6
        data = jpeg_bytes(seed=seed)
        identity = ImageIdentity(plate=self.barcode, well=well, drop=drop, inspection=insp, adapter="t",
                                 imaging=imaging)  # type: ignore[arg-type]
        path = path or f"/i/{self.barcode}/{well}_{drop}_{insp}_{self.n}.jpg"
        sha = f"{self.barcode}-{self.n}-{seed}"
        return self.cat.record_image(path, len(data), self.n, sha, probe_bytes(data, "jpg", 10**8), identity).image_id

    def predict(self, image_id: int, label: str, conf: float = 0.9, version: str = "m1", at: float | None = None,
                uncertain: bool = False) -> None:
        insert_predictions(self.cat, [StoredCall(image_id, version, label, conf, {label: conf}, uncertain)],
                           time.time() if at is None else at)


def plate_id(cat: Catalogue, barcode: str) -> int:
    return cat.query("SELECT id FROM plates WHERE barcode = ?", (barcode,))[0][0]


def test_every_well_of_the_plate_with_its_outcome_and_counts(tmp_path: Path) -> None:
    cat = Catalogue(tmp_path)
    try:
        p = Plate(cat, "B1234")
        t = time.time()
        a1_1, a1_2 = p.image("A1", insp=1), p.image("A1", insp=2)
        p.predict(a1_1, "clear", at=t)
        p.predict(a1_2, "crystals", at=t)
        b3_d1, b3_d2 = p.image("B3", drop=1), p.image("B3", drop=2)
        p.predict(b3_d1, "precipitate", at=t)
        p.predict(b3_d2, "crystals", 0.95, uncertain=True, at=t)  # uncertain: visible, never decides
        c2 = p.image("C2", insp=1)
        p.predict(c2, "crystals", version="m1", at=t)
        p.predict(c2, "clear", version="m2", at=t + 1)  # re-classified: the newest prediction counts
        d4 = p.image("D4")
        cat.record_preprocess(d4, "hough", ["too_dark"], None, None, "{}", "flagged")  # never classified
        e5 = p.image("E5")  # waiting for a model
        old = p.image("F6", path="/i/B1234/replaced.jpg")
        new = p.image("F6", path="/i/B1234/replaced.jpg")  # same path, new content: only this version counts
        p.predict(old, "crystals", at=t)
        p.predict(new, "precipitate", at=t)
        uv = p.image("A1", insp=3, imaging="uv")
        p.predict(uv, "crystals", at=t)
        other = Plate(cat, "OTHER")
        p.predict(other.image("A1"), "crystals", at=t)
        pid = plate_id(cat, "B1234")

        with cat.transaction() as conn:
            states = plate_outcomes(conn, pid, RULE, 0.6)
        by_name = {s.well: s for s in states.values()}
        assert set(by_name) == {"A1", "B3", "C2", "D4", "E5", "F6"}  # this plate's wells only
        assert all(states[w].well_id == w for w in states)
        assert by_name["A1"].outcome.label == "crystals" and by_name["A1"].images == 2
        assert by_name["A1"].outcome.call is not None and by_name["A1"].outcome.call.image_id == a1_2
        assert by_name["B3"].outcome.label == "precipitate" and by_name["B3"].uncertain == 1
        assert by_name["C2"].outcome.label == "clear"
        assert by_name["D4"].outcome.label is None and (by_name["D4"].images, by_name["D4"].flagged) == (1, 1)
        assert by_name["E5"].outcome.label is None and by_name["E5"].images == 1 and by_name["E5"].flagged == 0
        assert by_name["F6"].outcome.label == "precipitate" and by_name["F6"].images == 1
        assert e5 and uv

        # The plate-wide read decides each well exactly as the per-well read the hit tracker uses.
        for state in states.values():
            with cat.transaction() as conn:
                alone = well_outcome(calls_for_well(conn, state.well_id), RULE, 0.6)
            # (the plate-wide calls carry ids only: no plate, well or path names to read per image)
            mine = state.outcome
            assert (alone.label, alone.drops) == (mine.label, mine.drops), state.well
            assert (alone.call is None) == (mine.call is None), state.well
            if alone.call is not None and mine.call is not None:
                assert (alone.call.image_id, alone.call.confidence) == (mine.call.image_id, mine.call.confidence)
    finally:
        cat.close()


def test_the_plate_as_it_was_at_an_earlier_inspection(tmp_path: Path) -> None:
    cat = Catalogue(tmp_path)
    try:
        p = Plate(cat, "B1234")
        for insp, label in [(1, "clear"), (2, "precipitate"), (3, "crystals")]:
            p.predict(p.image("A1", insp=insp), label)
        p.predict(p.image("B1", insp=3), "crystals")  # first imaged at inspection 3
        unnumbered = p.image("C1", insp=None)
        p.predict(unnumbered, "crystals")
        pid = plate_id(cat, "B1234")
        assert stored.plate_inspections(cat, pid) == [1, 2, 3]
        labels = {n: {s.well: s.outcome.label for s in plate_outcomes(cat, pid, RULE, 0.6, inspection=n).values()}
                  for n in (1, 2, 3)}
        assert labels[1] == {"A1": "clear", "B1": None, "C1": None}
        assert labels[2]["A1"] == "precipitate"
        assert labels[3] == {"A1": "crystals", "B1": "crystals", "C1": None}  # unnumbered: only without a filter
        assert {s.well: s.outcome.label for s in plate_outcomes(cat, pid, RULE, 0.6).values()}["C1"] == "crystals"
        counts = {s.well: s.images for s in plate_outcomes(cat, pid, RULE, 0.6, inspection=2).values()}
        assert counts == {"A1": 2, "B1": 0, "C1": 0}
        assert stored.plate_inspections(cat, pid + 99) == []
    finally:
        cat.close()


def test_the_plate_read_uses_indexes_not_full_scans(tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN: images and predictions are reached through their indexes (see the bench for time)."""
    cat = Catalogue(tmp_path)
    try:
        for barcode in ("P1", "P2", "P3"):
            p = Plate(cat, barcode)
            for i in range(12):
                p.predict(p.image(f"A{i + 1}", insp=1 + i % 3), "clear")
        cat.query("ANALYZE")
        pid = plate_id(cat, "P2")
        for inspection in (None, 2):
            plan = [r["detail"] for r in cat.query("EXPLAIN QUERY PLAN " + stored._PLATE_CALLS_SQL,
                                                   (pid, inspection, inspection, "visible", "visible"))]
            full_scans = [d for d in plan if re.match(r"SCAN (i|newer|images|p|q|predictions)\b", d)]
            assert not full_scans, plan
            assert any(d.startswith("SEARCH i USING INDEX images_plate") for d in plan), plan
            assert any(d.startswith("SEARCH q USING COVERING INDEX predictions_image") for d in plan), plan
        assert len(stored.plate_calls(cat, pid)) == 12
    finally:
        cat.close()
