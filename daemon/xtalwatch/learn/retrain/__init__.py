"""Retraining: one run that trains SimCLR on the catalogue, gates the model, registers it and records the outcome.

Modules, in the order a run uses them: ``lock`` (one run at a time, the run's log file),
``usable`` (what a run trains on, and its fingerprint), ``run`` (the run itself, top to bottom),
``outcome`` (what it did, and the event that records it), ``announce`` (that event into the
catalogue, its alert to the sinks) and ``__main__`` (the child process the scheduler starts:
``python -m xtalwatch.learn.retrain --settings-json F --result F --nice N``). See docs/models.md.
"""

from __future__ import annotations

from xtalwatch.learn.retrain.lock import TRAINING_DIR
from xtalwatch.learn.retrain.outcome import RetrainOutcome
from xtalwatch.learn.retrain.run import run_retrain
from xtalwatch.learn.retrain.usable import UsableImages, count_usable, data_fingerprint, gather_usable

__all__ = ["RetrainOutcome", "UsableImages", "run_retrain", "gather_usable", "count_usable", "data_fingerprint",
           "TRAINING_DIR"]
