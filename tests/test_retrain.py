"""One retraining run in process, on a tiny real catalogue: refuse, promote, skip, reject, fail.

Every run that trained (or broke) records its own outcome event, with its alert; a skipped one records nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xtalwatch.learn.retrain.run as retrain_run
from retrain_helpers import CLASSES, make_state, tiny_settings
from xtalwatch.learn.bundle import ModelBundle
from xtalwatch.learn.registry import ModelRegistry
from xtalwatch.learn.retrain import count_usable, gather_usable, run_retrain
from xtalwatch.learn.retrain.lock import training_lock
from xtalwatch.learn.simclr import load_encoder
from xtalwatch.store.catalogue import Catalogue

FIGURES = {"started_at", "seconds", "final_loss", "steps", "n_images", "n_labels"}


def events(state: Path) -> list[tuple[str, dict[str, Any]]]:
    """The training events the catalogue holds, oldest first: (kind, payload)."""
    cat = Catalogue(state)
    try:
        return [(r["kind"], json.loads(r["payload"])) for r in cat.query("SELECT kind, payload FROM events ORDER BY id")]
    finally:
        cat.close()


def usable_of(state: Path):
    cat = Catalogue(state)
    try:
        return gather_usable(cat)
    finally:
        cat.close()


def test_refuses_with_the_counts_below_min_images(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_state(state, 20)
    assert count_usable(tiny_settings(state)) == 20  # the flagged and failed images do not count
    outcome = run_retrain(tiny_settings(state, **{"train.min_images": 30}), now=True)
    assert outcome.status == "skipped"
    assert "only 20 usable images" in outcome.reason and "train.min_images is 30" in outcome.reason
    assert ModelRegistry(state).list() == []
    assert events(state) == []  # a skipped run trained nothing and says nothing


def test_no_catalogue_counts_zero(tmp_path: Path) -> None:
    assert count_usable(tiny_settings(tmp_path)) == 0


def test_gather_takes_usable_images_and_the_latest_label(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ids = make_state(state, 9, labelled_per_class=1)
    cat = Catalogue(state)
    with cat.transaction() as conn:  # relabelled later by someone else: the newest label wins
        conn.execute("INSERT INTO labels (image_id, label, labeller, created_at) VALUES (?, 'precipitate', 'b', 1e12)",
                     (ids["usable"][0],))
    cat.close()
    usable = usable_of(state)
    assert usable.ids == ids["usable"] and not set(ids["bad"]) & set(usable.ids)
    assert usable.labels[ids["usable"][0]] == "precipitate" and len(usable.labels) == 3


def test_promote_then_skip_then_sabotaged_model_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    make_state(state, 45, labelled_per_class=8)
    settings = tiny_settings(state)

    # The first model: promoted, served from `current`, mirrored into the catalogue.
    first = run_retrain(settings)
    assert first.status == "promoted", first.reason
    assert first.reason.startswith("first model") and first.n_images == 45 and first.n_labels == 24
    assert first.candidate is not None and first.candidate["accuracy"] is not None
    registry = ModelRegistry(state)
    # The gate scored the head that serves, the one the choice on held-out labels picked.
    assert first.candidate["head"] == registry.get(first.version).metrics["head_selection"]["winner"]
    assert registry.current_version() == first.version
    bundle = ModelBundle.load(registry.root / "current")
    assert sorted(bundle.classes) == sorted(CLASSES)
    crops = np.stack([np.zeros((24, 24, 3), np.uint8), np.full((24, 24, 3), 200, np.uint8)])
    assert bundle.predict_proba(crops).shape == (2, 3)
    run_dir = state / "training" / first.version
    assert json.loads((run_dir / "result.json").read_text())["status"] == "promoted"
    assert "gate says promote" in (run_dir / "retrain.log").read_text()
    assert not (run_dir / "checkpoint.pt").exists()  # the bundle holds the encoder; no optimiser state left
    assert not (run_dir / "crops.npy").exists()  # the crops streamed through a memory-mapped file, gone after the run
    [(kind, payload)] = events(state)  # the run recorded its own outcome
    assert kind == "model_promoted" and payload["version"] == first.version and payload["previous_version"] is None
    assert set(payload["training"]) == FIGURES and payload["training"]["n_images"] == 45
    assert payload["metrics"] == first.candidate

    # Nothing new since: a scheduled run does not train again.
    again = run_retrain(settings)
    assert again.status == "skipped" and "no new images or labels" in again.reason
    assert len(events(state)) == 1

    # Sabotage: the trained encoder's weights zeroed, so every image maps to the same point.
    def collapsed(checkpoint: Path) -> torch.nn.Module:
        encoder = load_encoder(checkpoint)
        with torch.no_grad():
            for p in encoder.parameters():
                p.zero_()
        return encoder

    monkeypatch.setattr(retrain_run, "_trained_encoder", collapsed)
    bad = run_retrain(settings, now=True)
    assert bad.status == "rejected" and bad.reason.startswith("collapsed: feature std 0.000000")
    assert bad.warm_start  # started from the serving encoder
    assert registry.current_version() == first.version  # still serving the good model
    assert registry.get(bad.version).status == "rejected" and "collapsed" in registry.get(bad.version).reason
    rows = {r["version"]: r["status"] for r in Catalogue(state).query("SELECT version, status FROM models")}
    assert rows == {first.version: "promoted", bad.version: "rejected"}
    kind, payload = events(state)[-1]
    assert kind == "model_rejected" and payload["version"] == bad.version and "collapsed" in payload["reason"]
    assert payload["training"]["steps"] == bad.steps


def test_a_run_while_another_holds_the_lock_is_skipped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_state(state, 31)
    with training_lock(state):
        outcome = run_retrain(tiny_settings(state), now=True)
    assert outcome.status == "skipped" and "another training run is in progress" in outcome.reason
    assert events(state) == []


def test_a_failure_is_an_outcome_not_an_exception(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    make_state(state, 31)
    crop = usable_of(state).crop_paths[3]
    Path(crop).write_bytes(b"not a png")
    with caplog.at_level(logging.INFO, logger="xtalwatch.alert"):
        outcome = run_retrain(tiny_settings(state), now=True)
    assert outcome.status == "failed" and "unreadable crop" in outcome.reason
    assert json.loads((Path(outcome.log_path).parent / "result.json").read_text())["status"] == "failed"
    assert ModelRegistry(state).list() == []
    [(kind, payload)] = events(state)  # an event, and its alert delivered before the run returned
    assert kind == "training_failed" and payload["run"] == outcome.version and "unreadable crop" in payload["reason"]
    assert set(payload["training"]) == FIGURES
    assert any("ALERT kind=training_failed" in r.getMessage() for r in caplog.records)


def test_train_now_command_runs_the_job_and_reports(tmp_path: Path, capsys) -> None:
    from xtalwatch.cli import main

    state = tmp_path / "state"
    make_state(state, 12)
    assert main(["train", "--now", "--state", str(state), "--min-images", "30", "--no-progress"]) == 1
    assert "skipped: only 12 usable images" in capsys.readouterr().out
    assert events(state) == []
    assert main(["train", "--now", "--images", str(tmp_path), "--state", str(state)]) == 2


def test_a_killed_run_is_recorded_and_its_checkpoint_removed_by_the_next_run(tmp_path: Path) -> None:
    """A run killed with the service left a big checkpoint and no outcome: the next run finishes it, once."""
    state = tmp_path / "state"
    make_state(state, 5)  # too few images: the next run itself refuses, after finishing the killed one
    killed, finished = state / "training" / "20260101-000000", state / "training" / "20251231-000000"
    for run in (killed, finished):
        run.mkdir(parents=True)
        (run / "retrain.log").write_text("retrain: step 40 of 400\n")
        (run / "checkpoint.pt").write_bytes(bytes(4096))
    (finished / "result.json").write_text(json.dumps({"status": "failed", "reason": "diverged"}))

    outcome = run_retrain(tiny_settings(state))
    assert outcome.status == "skipped"
    assert not (killed / "checkpoint.pt").exists() and (killed / "retrain.log").exists()
    assert json.loads((killed / "result.json").read_text())["status"] == "failed"
    assert (finished / "checkpoint.pt").exists(), "a run with a result is not ours to clean"
    [(kind, payload)] = events(state)
    assert kind == "training_failed" and payload["run"] == killed.name
    assert "killed before it finished" in payload["reason"]
    run_retrain(tiny_settings(state))
    assert len(events(state)) == 1, "a killed run is recorded once"


def test_crops_stream_into_a_memory_mapped_file_equal_to_reading_them_into_memory(tmp_path: Path) -> None:
    """Retraining reads every usable crop: into a file it maps, so memory holds one crop, not the catalogue's."""
    from xtalwatch.learn.features import read_model_rgb

    state = tmp_path / "state"
    make_state(state, 12)
    paths = [str(p) for p in sorted((state / "crops").rglob("*.png"))][:10]
    in_memory = read_model_rgb(paths, 16)
    mapped = read_model_rgb(paths, 16, tmp_path / "crops.npy")
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    assert np.array_equal(in_memory, mapped) and mapped.shape == (10, 16, 16, 3)
