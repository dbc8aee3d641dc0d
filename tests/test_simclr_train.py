"""The training loop: outputs, exact resume (in process and after a real kill), OOM halving,
NaN stop with the last good checkpoint kept, too-small datasets, and the CLI."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from xtalwatch.cli import main
from xtalwatch.config import TrainConfig
from xtalwatch.learn.features import embed
from xtalwatch.learn.simclr import (
    DatasetTooSmall,
    TrainingDiverged,
    from_arrays,
    load_checkpoint,
    load_encoder,
    load_folder,
    train,
)
from xtalwatch.learn.simclr.encoder import build_encoder

# The module, not the function of the same name that the package exports.
train_module = sys.modules["xtalwatch.learn.simclr.train"]

TINY = dict(image_size=16, batch_size=4, min_images=8, device="cpu", seed=1, log_every_steps=1)


def _arrays(n: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def _folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(2)
    root.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / f"drop{i:02d}.png"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    return root


def test_run_writes_checkpoint_pictures_and_resumes_exactly(tmp_path: Path) -> None:
    data = from_arrays(_arrays())
    cfg = TrainConfig(**TINY, max_steps=6, checkpoint_every_steps=2)
    whole = train(cfg, data, tmp_path / "whole", progress=False)
    assert whole.steps == 6 and len(whole.losses) == 6 and all(np.isfinite(whole.losses))
    assert whole.pairs_png.is_file() and whole.loss_png.is_file()
    assert json.loads((tmp_path / "whole" / "losses.json").read_text())["losses"] == whole.losses

    state = load_checkpoint(whole.checkpoint)  # self-describing
    assert state["step"] == 6 and state["data_fingerprint"] == data.fingerprint
    assert state["config"]["image_size"] == 16 and state["model_info"]["small_stem"] is False
    assert {"model", "optimizer", "scheduler"} <= set(state)
    assert embed(load_encoder(whole.checkpoint), _arrays(3)).shape == (3, 512)

    first = train(cfg, data, tmp_path / "split", stop_after_step=3, progress=False)
    assert first.steps == 3
    second = train(cfg, data, tmp_path / "split", progress=False)
    assert second.resumed_from_step == 3 and second.steps == 6
    np.testing.assert_allclose(second.losses, whole.losses, rtol=0, atol=1e-6)

    with pytest.raises(ValueError, match="other data"):
        train(cfg, from_arrays(_arrays()[::-1].copy()), tmp_path / "split", progress=False)


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_loss_curve(tmp_path: Path) -> None:
    images = _folder(tmp_path / "images", 12)
    args = ["--images", str(images), "--cache", str(tmp_path / "cache"), "--image-size", "16", "--batch-size", "4",
            "--steps", "6", "--checkpoint-every", "2", "--min-images", "8", "--device", "cpu", "--seed", "1",
            "--no-progress", "--state", str(tmp_path / "state"), "--preprocess", "none"]
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "xtalwatch", "train", *args, "--out", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not (run_dir / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 90 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    killed_at = load_checkpoint(run_dir / "checkpoint.pt")["step"]
    assert 2 <= killed_at < 6

    assert main(["train", *args, "--out", str(run_dir)]) == 0  # resumes
    resumed = json.loads((run_dir / "losses.json").read_text())["losses"]
    cfg = TrainConfig(**{**TINY, "log_every_steps": 10}, max_steps=6, checkpoint_every_steps=2)
    whole = train(cfg, load_folder(images, 16, tmp_path / "cache"), tmp_path / "whole", progress=False)
    assert len(resumed) == 6
    np.testing.assert_allclose(resumed, whole.losses, rtol=0, atol=1e-6)


@pytest.fixture
def device_fits_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device on which a batch of more than two crops runs out of memory, as a real one would."""
    real = train_module._step_input

    def step_input(images: np.ndarray, idx: np.ndarray, device: torch.device) -> torch.Tensor:
        if len(idx) > 2:
            raise torch.OutOfMemoryError(f"fake device: batch {len(idx)} > 2 crops")
        return real(images, idx, device)

    monkeypatch.setattr(train_module, "_step_input", step_input)


def test_out_of_memory_halves_the_batch_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       device_fits_two: None) -> None:
    cfg = TrainConfig(**{**TINY, "batch_size": 8}, max_steps=2, checkpoint_every_steps=100)
    with caplog.at_level(logging.WARNING, logger="xtalwatch.learn.simclr.train"):
        result = train(cfg, from_arrays(_arrays()), tmp_path, progress=False)
    assert result.batch_size == 2 and result.steps == 2 and all(np.isfinite(result.losses))
    assert len(result.warnings) == 2 and "retrying with 4" in result.warnings[0]
    assert sum("out of memory" in r.getMessage() for r in caplog.records) == 2
    assert load_checkpoint(result.checkpoint)["batch_size"] == 2


def test_init_encoder_starts_from_its_weights_and_must_fit_the_stem(tmp_path: Path) -> None:
    data = from_arrays(_arrays())
    cfg = TrainConfig(**TINY, max_steps=1, checkpoint_every_steps=100)
    start = build_encoder(16, small_stem=False)  # the stem "auto" gives
    with torch.no_grad():
        start.backbone.conv1.weight.fill_(0.01)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    zero_lr = TrainConfig(**{**TINY, "lr": 1e-12, "weight_decay": 0.0}, max_steps=1, checkpoint_every_steps=100)
    result = train(zero_lr, data, tmp_path / "warm", init_encoder=start, progress=False)
    trained = load_encoder(result.checkpoint)
    torch.testing.assert_close(trained.backbone.conv1.weight, before["backbone.conv1.weight"])
    assert all(torch.equal(v, before[k]) for k, v in start.state_dict().items())  # copied, not trained in place
    scratch = load_encoder(train(zero_lr, data, tmp_path / "cold", progress=False).checkpoint)
    assert not torch.allclose(scratch.backbone.conv1.weight, before["backbone.conv1.weight"])
    with pytest.raises(ValueError, match="init_encoder has small_stem=True"):
        train(cfg, data, tmp_path / "stem", init_encoder=build_encoder(16, small_stem=True), progress=False)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    data = from_arrays(_arrays())
    good = train(TrainConfig(**TINY, max_steps=6, checkpoint_every_steps=2), data, tmp_path, stop_after_step=2,
                 progress=False)
    before = good.checkpoint.read_bytes()
    # A temperature this small overflows the float32 logits: a genuine NaN, not a mock.
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3.*last good checkpoint"):
        train(TrainConfig(**TINY, max_steps=6, checkpoint_every_steps=1, temperature=1e-40), data, tmp_path,
              progress=False)
    assert good.checkpoint.read_bytes() == before
    assert load_checkpoint(good.checkpoint)["step"] == 2


def test_too_small_dataset_is_refused_with_counts(tmp_path: Path) -> None:
    with pytest.raises(DatasetTooSmall, match=r"5 usable images, at least 8 needed \(train.min_images = 8\)"):
        train(TrainConfig(**TINY, max_steps=1), from_arrays(_arrays(5)), tmp_path, progress=False)


def test_cli_refuses_small_folders_and_says_what_to_train_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = _folder(tmp_path / "few", 3)
    common = ["--state", str(tmp_path / "state"), "--device", "cpu", "--image-size", "16", "--preprocess", "none"]
    assert main(["train", "--images", str(images), "--min-images", "10", *common]) == 1
    assert "3 usable images, at least 10 needed" in capsys.readouterr().err
    assert main(["train", *common]) == 1  # no --images: the catalogue, which is empty here
    assert "no catalogue here" in capsys.readouterr().out
    assert main(["train", "--images", str(tmp_path / "absent"), *common]) == 2
