"""The closed loop's shared pieces: tiny settings, the synthetic imager, and a first model trained for real.

Used by the closed-loop tests and the site tests (several agents on one PostgreSQL catalogue).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from xtalwatch.config import Settings, load_settings
from xtalwatch.learn.retrain import run_retrain
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import import_labels
from xtalwatch.tools.synth import generate_plates

FRAME = (240, 180)
TINY: dict[str, Any] = {
    "watch.settle_seconds": 0.3, "metrics.port": 0, "preprocess.image_size": 24,
    "train.image_size": 16, "train.small_stem": False, "train.batch_size": 16, "train.max_steps": 3,
    "train.min_images": 10, "train.device": "cpu", "train.checkpoint_every_steps": 100, "train.workers": 1,
    "classify.knn_k": 3, "retrain.gate_margin": 1.0, "retrain.holdout_fraction": 0.25,
    "retrain.auto_first_training": False, "retrain.enabled": False, "retrain.reclassify": "all",
    "alerts.hit_min_confidence": 0.0, "classify.uncertain_below": 0.0, "logging.level": "INFO",
    # The synthetic imager's failed frames are "dark": MARCO's "other".
    "classify.subclasses": ["needles:crystals", "plates:crystals", "prisms:crystals", "microcrystals:crystals",
                            "dark:other"],
}


def tiny_settings(watch: Path | None, state: Path, **overrides: Any) -> Settings:
    return load_settings(None, {**TINY, "watch.dir": watch, "state.dir": state, **overrides})


def synth(folder: Path, seed: int, plates: int = 1, wells: int = 24, inspections: int = 2) -> list[Path]:
    rows = generate_plates(folder, plates=plates, layout="export", wells=wells, drops=1, inspections=inspections,
                           size=FRAME, seed=seed, balance="clear=1,needles=1,precipitate=0.5,plates=0.5,dark=0.01",
                           labels=folder.parent / f"{folder.name}_labels.csv", workers=1)
    return [folder / r.path for r in rows]


def env_for(settings_overrides: dict[str, Any]) -> dict[str, str]:
    """The same overrides as XTALWATCH_* variables, for a service run as a real process."""
    env = dict(os.environ)
    for key, value in settings_overrides.items():
        as_json = isinstance(value, bool | list | dict)
        env["XTALWATCH_" + key.upper().replace(".", "__")] = json.dumps(value) if as_json else str(value)
    return env


def train_first_model(root: Path) -> Path:
    """A state folder under ``root`` whose registry serves a model trained on labelled synthetic drops."""
    imager, state = root / "imager", root / "state"
    synth(imager, seed=11)
    proc = subprocess.run([sys.executable, "-m", "xtalwatch", "ingest", str(imager), "--state", str(state)],
                          env=env_for(TINY), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    settings = tiny_settings(imager, state)
    catalogue = Catalogue(state)
    try:
        labelled = root / "labelled.csv"
        lines = ["path,class,labeller"] + [f"{imager / row.split(',')[0]},{row.split(',')[1]},test"
                                           for row in (root / "imager_labels.csv").read_text().splitlines()[1:]]
        labelled.write_text("\n".join(lines) + "\n")
        result = import_labels(catalogue, labelled, settings.classify, labeller="test")
        assert not result.errors, result.errors[:3]
    finally:
        catalogue.close()
    outcome = run_retrain(settings, now=True)
    assert outcome.status == "promoted", outcome.summary()
    return state


