"""``xtalwatch evaluate`` end to end on a tiny real ImageFolder, and the split it relies on."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from xtalwatch.cli import main
from xtalwatch.learn.evaluate import METHODS, labelled_subset, stratified_split
from xtalwatch.tools.synth.render import render_drop


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 12 synthetic drops, written as real 32 px PNG files."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for cls in ("clear", "needles", "precipitate"):
        (root / cls).mkdir()
        for i in range(12):
            img = cv2.resize(render_drop(rng, cls, (128, 128)), (32, 32), interpolation=cv2.INTER_AREA)
            assert cv2.imwrite(str(root / cls / f"{i:02d}.png"), img)
    return root


def test_split_is_stratified_disjoint_and_covers_everything() -> None:
    labels = np.repeat(np.arange(4), [40, 20, 10, 3])
    train, test = stratified_split(labels, 0.25, seed=1)
    assert set(train).isdisjoint(test) and len(train) + len(test) == len(labels)
    assert [int((labels[test] == c).sum()) for c in range(4)] == [10, 5, 2, 1]
    again = stratified_split(labels, 0.25, seed=1)
    assert (again[0] == train).all() and (again[1] == test).all()


def test_labelled_subsets_are_nested_and_keep_every_class() -> None:
    labels = np.repeat(np.arange(3), [100, 50, 7])
    small, big = labelled_subset(labels, 0.05, 0), labelled_subset(labels, 0.1, 0)
    assert set(small) <= set(big) and set(labels[small]) == {0, 1, 2}
    assert len(labelled_subset(labels, 1.0, 0)) == len(labels)


def test_evaluate_end_to_end_writes_every_row_and_picture(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    report = tmp_path / "report.html"
    code = main(["evaluate", str(tiny_folder), "--label-fraction", "0.5", "--epochs", "1", "--image-size", "32",
                 "--small-stem", "off", "--batch-size", "16", "--preprocess", "none", "--test-fraction", "0.25",
                 "--supervised-epochs", "1", "--min-steps", "2", "--distill-epochs", "1", "--no-progress",
                 "--state", str(tmp_path / "state"), "--json", str(out), "--report", str(report)])
    assert code == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["method"], r["label_fraction"]) for r in rows] == [(m, f) for f in (0.5,) for m in METHODS]
    for r in rows:
        if r["method"] == "supervised_imagenet":
            assert r["accuracy"] is None and "weights" in r["absent_reason"]
            continue
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1 and r["seconds"] >= 0
        assert (out.with_suffix("") / r["confusion_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["n_train"] == 27 and result["n_test"] == 9 and result["classes"] == ["clear", "needles", "precipitate"]
    # no leakage: the SimCLR run and every head saw only the training images
    split = json.loads((out.with_suffix("") / "split.json").read_text())
    assert set(split["train"]).isdisjoint(split["test"]) and len(split["test"]) == 9
    assert result["simclr"]["steps"] >= 1
    page = report.read_text()
    assert "simclr_linear" in page and page.count("data:image/png;base64") >= 7 + 1


def test_evaluate_refuses_a_folder_without_classes(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    cv2.imwrite(str(tmp_path / "flat" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    code = main(["evaluate", str(tmp_path / "flat"), "--preprocess", "none", "--image-size", "32", "--no-progress",
                 "--state", str(tmp_path / "state"), "--json", str(tmp_path / "o.json")])
    assert code == 2

def test_evaluate_probes_the_encoder_as_it_trains(tiny_folder: Path, tmp_path: Path) -> None:
    """--probe-every: a linear probe at each fraction every N epochs, and the epoch curve against supervised."""
    out = tmp_path / "eval.json"
    code = main(["evaluate", str(tiny_folder), "--label-fraction", "0.5,1", "--epochs", "2", "--image-size", "32",
                 "--small-stem", "off", "--batch-size", "16", "--preprocess", "none", "--test-fraction", "0.25",
                 "--supervised-epochs", "1", "--min-steps", "2", "--no-progress", "--probe-every", "1",
                 "--temperature", "0.2", "--methods", "supervised_scratch,simclr_linear",
                 "--state", str(tmp_path / "state"), "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    probes = result["simclr"]["probes"]
    assert sorted((p["epoch"], p["label_fraction"]) for p in probes) == [(1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
    assert all(0 <= p["accuracy"] <= 1 for p in probes)
    assert result["config"]["train"]["temperature"] == 0.2
    # the last probe is the simclr_linear row: same encoder, same subset, same head
    last = {p["label_fraction"]: p["accuracy"] for p in probes if p["epoch"] == 2}
    rows = {r["label_fraction"]: r["accuracy"] for r in result["rows"] if r["method"] == "simclr_linear"}
    assert last == rows
    assert Path(result["simclr"]["epoch_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
