"""The demo's lab (what it labels for the first model) and its hit scores against ground truth."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
from xtalwatch.alerts.events import CRYSTAL_HIT, PLATE_HITS
from xtalwatch.config import load_settings
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.events import insert_event
from xtalwatch.tools.demo import _FIRST_EXAMPLES, HitScores, _hit_scores, _lab_picks, _missing
from xtalwatch.tools.synth import plan_jobs

CLASSIFY = load_settings(None, {"classify.subclasses": ["needles:crystals", "plates:crystals", "prisms:crystals",
                                                        "microcrystals:crystals", "dark:other"]}).classify


def _truth(inspections: int) -> list[dict[str, str]]:
    jobs = plan_jobs(plates=2, layout="export", wells=96, drops=1, inspections=inspections, size=(32, 32), seed=0)
    return [{"path": j.row.path, "class": j.row.label, "plate": j.row.plate, "well": j.row.well,
             "inspection": str(j.row.inspection)} for j in jobs]


def test_the_lab_waits_for_crystals_then_gives_every_class_a_few_examples() -> None:
    rows = _truth(3)
    first = [r for r in rows if r["inspection"] == "1"]
    assert _missing(first, CLASSIFY) == ["crystals"], "a screen's first inspection shows no crystals"
    seen = [r for r in rows if int(r["inspection"]) <= 2]
    assert not _missing(seen, CLASSIFY)
    picks = _lab_picks(seen, CLASSIFY, np.random.default_rng(0), 0.1)
    per_class = Counter(CLASSIFY.class_of(r["class"]) for r in picks)
    available = Counter(CLASSIFY.class_of(r["class"]) for r in seen)
    for cls in CLASSIFY.classes:
        assert per_class[cls] >= min(_FIRST_EXAMPLES, available[cls]), (cls, per_class)
    assert 0.05 * len(seen) < len(picks) < 0.2 * len(seen), "mostly a random tenth, topped up"


def test_hit_scores_count_wells_from_both_event_kinds(tmp_path: Path) -> None:
    truth = tmp_path / "labels.csv"
    rows = [("a/1.jpg", "clear", "P1", "A1"), ("a/2.jpg", "needles", "P1", "A1"),  # A1 crystallises later
            ("b/1.jpg", "microcrystals", "P1", "B1"), ("c/1.jpg", "precipitate", "P1", "C1"),
            ("d/1.jpg", "prisms", "P2", "A1")]
    with truth.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "class", "plate", "well", "drop", "inspection"])
        w.writerows((*r, 1, 1) for r in rows)
    lab = tmp_path / "labelled-by-the-lab.csv"
    lab.write_text(f"path,class,labeller\n{tmp_path / 'imager' / 'b/1.jpg'},microcrystals,demo\n")
    catalogue = Catalogue(tmp_path / "state")
    try:
        insert_event(catalogue, CRYSTAL_HIT, {"plate": "P1", "well": "A1"}, created_at=1.0)
        insert_event(catalogue, PLATE_HITS, {"plate": "P1", "wells": ["A1", "C1"]}, created_at=2.0)
        # true: P1 A1, P1 B1, P2 A1; called: P1 A1, P1 C1
        assert _hit_scores(catalogue, truth, lab, CLASSIFY) == HitScores(1, 2, 3, 1, 1)
    finally:
        catalogue.close()
