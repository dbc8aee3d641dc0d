"""Per-well outcomes for a LIMS: the rows, CSV and JSON, ``xtalwatch export`` and the plate page's downloads."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from review_helpers import Filler, client_for, review_settings
from xtalwatch.config import Settings
from xtalwatch.review.export import COLUMNS, UnknownPlate, export_rows, render, to_csv
from xtalwatch.store.catalogue import Catalogue


@pytest.fixture
def plate(tmp_path: Path) -> Iterator[tuple[Settings, Catalogue, dict[str, int]]]:
    """P1: A1 clear (i1) then crystals (i2); A2 precipitate (i1) with an unsure other call (i2); B1 unclassified."""
    settings = review_settings(tmp_path)
    cat = Catalogue(settings.state.dir)
    fill = Filler(settings, cat)
    ids = {"a1_1": fill.image("P1", "A1", 1, label="clear", confidence=0.9),
           "a1_2": fill.image("P1", "A1", 2, label="crystals", confidence=0.8, version="v2"),
           "a2_1": fill.image("P1", "A2", 1, label="precipitate", confidence=0.75),
           "a2_2": fill.image("P1", "A2", 2, label="other", confidence=0.3, uncertain=True),
           "b1": fill.image("P1", "B1", 1)}
    try:
        yield settings, cat, ids
    finally:
        cat.close()


def test_rows_carry_the_rule_decision_and_every_call_read(plate) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = plate
    rows = {r.well: r for r in export_rows(cat, "P1", settings)}
    assert list(rows) == ["A1", "A2", "B1"]  # plate order
    a1, a2, b1 = rows["A1"], rows["A2"], rows["B1"]
    order = settings.classify.outcome_order
    assert (a1.label, a1.score, a1.confidence, a1.model_version) == ("crystals", order.index("crystals"), 0.8, "v2")
    assert a1.image_ids == (ids["a1_1"], ids["a1_2"]) and (a1.decided_by, a1.inspection) == (ids["a1_2"], 2)
    # The unsure call at inspection 2 never decides: precipitate from inspection 1 stands.
    assert (a2.label, a2.decided_by, a2.inspection) == ("precipitate", ids["a2_1"], 1)
    assert a2.image_ids == (ids["a2_1"], ids["a2_2"])
    assert (b1.label, b1.score, b1.confidence, b1.image_ids, b1.decided_by) == (None, None, None, (), None)


def test_inspection_shows_the_plate_as_it_was(plate) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = plate
    rows = {r.well: r for r in export_rows(cat, "P1", settings, inspection=1)}
    assert rows["A1"].label == "clear" and rows["A1"].image_ids == (ids["a1_1"],)


def test_csv_and_json(plate) -> None:  # type: ignore[no-untyped-def]
    settings, cat, ids = plate
    table = list(csv.DictReader(io.StringIO(render(cat, "P1", settings, "csv"))))
    assert tuple(table[0]) == COLUMNS
    assert table[0] == {"plate": "P1", "well": "A1", "score": "3", "class": "crystals", "confidence": "0.8",
                        "model_version": "v2", "image_ids": f"{ids['a1_1']};{ids['a1_2']}",
                        "decided_by": str(ids["a1_2"]), "inspection": "2"}
    assert table[2]["class"] == "" and table[2]["image_ids"] == ""
    data = json.loads(render(cat, "P1", settings, "json"))
    assert data["plate"] == "P1" and data["inspection"] is None and data["columns"] == list(COLUMNS)
    assert data["wells"][0]["image_ids"] == [ids["a1_1"], ids["a1_2"]] and data["wells"][0]["class"] == "crystals"
    assert data["wells"][2]["score"] is None
    assert to_csv([]) == ",".join(COLUMNS) + "\n"
    with pytest.raises(UnknownPlate, match="no plate 'NOPE'"):
        render(cat, "NOPE", settings, "csv")
    with pytest.raises(ValueError, match="format"):
        render(cat, "P1", settings, "xml")  # type: ignore[arg-type]


def test_plate_page_downloads_the_same_export(plate) -> None:  # type: ignore[no-untyped-def]
    settings, cat, _ = plate
    with client_for(settings, cat) as client:
        csv_file = client.get("/plates/P1/export.csv")
        assert csv_file.status_code == 200 and csv_file.headers["content-type"].startswith("text/csv")
        assert csv_file.headers["content-disposition"] == 'attachment; filename="P1.csv"'
        assert csv_file.text == render(cat, "P1", settings, "csv")
        json_file = client.get("/plates/P1/export.json?inspection=1")
        assert json_file.headers["content-disposition"] == 'attachment; filename="P1-i1.json"'
        assert json_file.json()["inspection"] == 1
        assert client.get("/plates/NOPE/export.csv").status_code == 404
        assert client.get("/plates/P1/export.xml").status_code == 404


def _xtalwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xtalwatch", *args], capture_output=True, text=True, timeout=120)


def test_export_command(plate, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, cat, _ = plate
    state = str(settings.state.dir)
    printed = _xtalwatch("export", "--plate", "P1", "--format", "csv", "--state", state)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == render(cat, "P1", settings, "csv")
    out = tmp_path / "p1.json"
    written = _xtalwatch("export", "--plate", "P1", "--format", "json", "--out", str(out), "--state", state)
    assert written.returncode == 0 and json.loads(out.read_text())["wells"][0]["well"] == "A1"
    unknown = _xtalwatch("export", "--plate", "NOPE", "--state", state)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.strip().count("\n") == 0 and "no plate 'NOPE'" in unknown.stderr
    nowhere = _xtalwatch("export", "--plate", "P1", "--state", str(tmp_path / "empty"))
    assert nowhere.returncode == 2 and "no catalogue" in nowhere.stderr
