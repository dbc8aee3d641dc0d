"""``xtalwatch classify`` and ``xtalwatch embeddings`` on real files with a real (tiny) bundle."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from xtalwatch.cli import main
from xtalwatch.config import ClassifyConfig
from xtalwatch.learn.bundle import build_bundle
from xtalwatch.tools.synth.render import render_drop

CLASSES = ("clear", "precipitate", "needles")


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Whole synthetic frames (the drop finder has to find the drop), 4 per class, in an ImageFolder."""
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(3)
    for cls in CLASSES:
        (root / cls).mkdir()
        for i in range(4):
            assert cv2.imwrite(str(root / cls / f"{i}.jpg"), render_drop(rng, cls, (192, 160)))
    return root


@pytest.fixture(scope="module")
def bundle_dir(frames: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xtalwatch.config import PreprocessConfig
    from xtalwatch.preprocess import preprocess_array

    torch.manual_seed(0)
    cfg = PreprocessConfig(image_size=16, channels=3)
    files = sorted(frames.glob("*/*.jpg"))
    crops = np.stack([preprocess_array(cv2.imread(str(f)), cfg).crop for f in files])
    labels = [f.parent.name for f in files]
    from xtalwatch.learn.simclr.encoder import build_encoder

    bundle = build_bundle(build_encoder(16, small_stem=False), crops, labels, ClassifyConfig(knn_k=3), "test-v1")
    out = tmp_path_factory.mktemp("models") / "test-v1"
    bundle.save(out)
    return out


def test_classify_prints_class_probabilities_flags_and_version(frames: Path, bundle_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    code = main(["classify", str(frames / "clear" / "0.jpg"), str(frames / "needles"), str(bad), "--json",
                 "--model", str(bundle_dir), "--state", str(tmp_path / "state")])
    assert code == 1  # one file failed, and says why
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 6
    good = [r for r in lines if "error" not in r]
    assert len(good) == 5 and [r for r in lines if "error" in r][0]["path"] == str(bad)
    for r in good:
        assert r["class"] in ("clear", "precipitate", "crystals") and r["model_version"] == "test-v1"
        assert set(r["probabilities"]) == {"clear", "precipitate", "crystals"}
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-3)
        assert isinstance(r["flags"], list)
        assert ("uncertain" in r["flags"]) == (r["confidence"] < ClassifyConfig().uncertain_below)


def test_classify_uses_state_models_current_and_says_when_there_is_none(
        frames: Path, bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert main(["classify", str(frames / "clear" / "1.jpg"), "--state", str(state)]) == 1
    assert "no model yet" in capsys.readouterr().err
    (state / "models").mkdir(parents=True)
    (state / "models" / "current").symlink_to(bundle_dir)
    assert main(["classify", str(frames / "clear" / "1.jpg"), "--state", str(state)]) == 0
    assert "model test-v1" in capsys.readouterr().out


def test_embeddings_export_and_map(frames: Path, bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb.npy"
    assert main(["embeddings", "--images", str(frames), "--model", str(bundle_dir), "--out", str(out),
                 "--state", str(tmp_path / "state")]) == 0
    feats = np.load(out)
    assert feats.shape == (12, 512) and feats.dtype == np.float32
    index = out.with_suffix(".csv").read_text().splitlines()
    assert index[0].startswith("row,image_id,path,label,prediction") and len(index) == 13
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_embeddings_of_the_catalogues_crops_with_their_labels(bundle_dir: Path, tmp_path: Path) -> None:
    from retrain_helpers import make_state

    state = tmp_path / "state"
    ids = make_state(state, 9, labelled_per_class=2, flagged=1, failed=1)
    out = tmp_path / "cat.npy"
    assert main(["embeddings", "--model", str(bundle_dir), "--out", str(out), "--state", str(state)]) == 0
    feats = np.load(out)
    # every image with a crop (usable and flagged), not the failed one without a crop
    assert feats.shape == (10, 512)
    rows = out.with_suffix(".csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[1]) for r in rows] == sorted(ids["usable"] + ids["bad"][:1])
    assert sum(1 for r in rows if r.split(",")[3]) == 6  # two labels per class
