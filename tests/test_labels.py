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
