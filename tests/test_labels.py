"""Label import: CSV and ImageFolder, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from xtalwatch.config import ClassifyConfig
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import probe_bytes
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import import_labels, latest_labels


def _catalogue_with_images(tmp_path: Path, n: int = 3) -> tuple[Catalogue, list[Path]]:
    """A real catalogue holding ``n`` real PNG files, recorded as the ingester records them."""
    cat = Catalogue(tmp_path / "state")
    files = []
    import hashlib

    for i in range(n):
        img = np.full((24, 24, 3), 40 * i, np.uint8)
        ok, buf = cv2.imencode(".png", img)
        assert ok
        path = tmp_path / "imager" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(buf.tobytes())
        data = path.read_bytes()
        cat.record_image(str(path.resolve()), len(data), 1, hashlib.sha256(data).hexdigest(),
                         probe_bytes(data, "png", 10**8), ImageIdentity(plate="P", well=f"A{i + 1}", adapter="t"))
        files.append(path)
    return cat, files


def test_csv_import_by_path_and_id_with_header_and_subclass(tmp_path: Path) -> None:
    cat, files = _catalogue_with_images(tmp_path)
    try:
        csv = tmp_path / "labels.csv"
        csv.write_text(f"path,class,labeller\n{files[0]},clear,ann\n2,needles,ann\nimager/img2.png,precipitate,\n")
        result = import_labels(cat, csv, ClassifyConfig(), labeller="bob")
        assert result.errors == [] and result.added == 3
        rows = {(r[0], r[1], r[2]) for r in cat.query("SELECT image_id, label, labeller FROM labels")}
        assert rows == {(1, "clear", "ann"), (2, "needles", "ann"), (3, "precipitate", "bob")}
        assert latest_labels(cat) == {1: "clear", 2: "needles", 3: "precipitate"}
        again = import_labels(cat, csv, ClassifyConfig(), labeller="bob")
        assert again.added == 0 and again.unchanged == 3
    finally:
        cat.close()


def test_csv_errors_name_their_lines_and_nothing_is_written(tmp_path: Path) -> None:
    cat, files = _catalogue_with_images(tmp_path)
    try:
        csv = tmp_path / "bad.csv"
        csv.write_text(f"{files[0]},clear,ann\n"  # 1 fine
                       f"{files[1]},sparkly,ann\n"  # 2 unknown class
                       "/nowhere/x.png,clear,ann\n"  # 3 unknown image
                       f"{files[0]},precipitate,ann\n"  # 4 duplicate with another class
                       "99,clear,ann\n")  # 5 unknown image id
        result = import_labels(cat, csv, ClassifyConfig())
        lines = {e.line: e.message for e in result.errors}
        assert set(lines) == {2, 3, 4, 5}
        assert "unknown class 'sparkly'" in lines[2]
        assert "unknown image" in lines[3] and "unknown image" in lines[5]
        assert "duplicate" in lines[4] and "line 1" in lines[4]
        assert str(result.errors[0]).startswith(f"{csv}:2:")
        assert cat.query("SELECT COUNT(*) FROM labels")[0][0] == 0
    finally:
        cat.close()


def test_conflict_with_a_stored_label_is_an_error(tmp_path: Path) -> None:
    cat, files = _catalogue_with_images(tmp_path, 1)
    try:
        (tmp_path / "a.csv").write_text("1,clear,ann\n")
        (tmp_path / "b.csv").write_text("1,crystals,ann\n")
        assert import_labels(cat, tmp_path / "a.csv", ClassifyConfig()).added == 1
        errors = import_labels(cat, tmp_path / "b.csv", ClassifyConfig()).errors
        assert len(errors) == 1 and errors[0].line == 1 and "already labelled 'clear'" in errors[0].message
    finally:
        cat.close()


def test_imagefolder_import_matches_by_content(tmp_path: Path) -> None:
    cat, files = _catalogue_with_images(tmp_path, 2)
    try:
        for cls, f in zip(["clear", "plates"], files, strict=True):
            (tmp_path / "folder" / cls).mkdir(parents=True)
            (tmp_path / "folder" / cls / "copy.png").write_bytes(f.read_bytes())  # other path, same bytes
        result = import_labels(cat, tmp_path / "folder", ClassifyConfig())
        assert result.errors == [] and result.added == 2
        assert {(r[0], r[1]) for r in cat.query("SELECT label, labeller FROM labels")} == \
            {("clear", "imagefolder"), ("plates", "imagefolder")}
    finally:
        cat.close()


def test_class_list_is_configurable() -> None:
    cfg = ClassifyConfig(classes=["hit", "miss"], subclasses=[])
    assert cfg.classes == ["hit", "miss"]
    with pytest.raises(ValueError):
        ClassifyConfig(classes=["hit"], subclasses=["needles:crystals"])


def test_set_label_replaces_per_labeller_and_remove_undoes(tmp_path: Path) -> None:
    from xtalwatch.store.labels import label_count, labels_of_image, remove_label, set_label

    cat, _ = _catalogue_with_images(tmp_path)
    try:
        assert set_label(cat, 1, "clear", "ann", 10.0) is None
        assert set_label(cat, 1, "crystals", "ann", 11.0) == "clear"  # replaced, not a second row
        assert set_label(cat, 1, "precipitate", "bob", 12.0) is None  # another labeller: a second label
        assert label_count(cat) == 2
        assert labels_of_image(cat, 1) == [{"label": "crystals", "labeller": "ann", "created_at": 11.0},
                                           {"label": "precipitate", "labeller": "bob", "created_at": 12.0}]
        assert latest_labels(cat) == {1: "precipitate"}
        assert remove_label(cat, 1, "bob") == "precipitate"
        assert remove_label(cat, 1, "bob") is None
        assert latest_labels(cat) == {1: "crystals"} and label_count(cat) == 1
        assert labels_of_image(cat, 2) == []
    finally:
        cat.close()


def test_browser_labels_and_imports_share_the_table(tmp_path: Path) -> None:
    from xtalwatch.store.labels import label_count, set_label

    cat, files = _catalogue_with_images(tmp_path)
    try:
        set_label(cat, 2, "clear", "ann", 5.0)
        csv = tmp_path / "labels.csv"
        csv.write_text(f"{files[0]},precipitate,ann\n")
        assert import_labels(cat, csv, ClassifyConfig()).added == 1
        assert label_count(cat) == 2 and latest_labels(cat)[2] == "clear"
    finally:
        cat.close()


def test_sha256_and_crop_paths_by_ids(tmp_path: Path) -> None:
    from xtalwatch.store.labels import crop_paths_of, sha256_of

    cat, files = _catalogue_with_images(tmp_path)
    try:
        shas = sha256_of(cat, [1, 3, 99])
        assert set(shas) == {1, 3} and len(shas[1]) == 64
        cat.record_preprocess(1, "hough", [], "/crops/1.png", None, "{}", "preprocessed")
        assert crop_paths_of(cat, [1, 2]) == {1: "/crops/1.png"}
    finally:
        cat.close()
