"""Runs killed before they finished: their outcome recorded and their checkpoint removed, once.

A training run dies with the service (``lifetime.die_with_parent``; systemd's ``KillMode``
would kill it anyway) or alone (the OOM killer). Either way its folder
``<state>/training/<version>/`` is left without ``result.json``, with a ``checkpoint.pt`` of
46–138 MB and its log. :func:`finish_interrupted` runs at the next start of the scheduler and at
the start of every run, under the training lock (so a run in progress is never touched): it
removes the checkpoint, keeps the log, and records the outcome the run could not. A run killed
after the registry took its model gets the registry's verdict (a promoted model never serves
without its ``model_promoted`` event); any other gets ``failed``. Writing ``result.json`` makes it
happen once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xtalwatch.config import Settings
from xtalwatch.files import write_json_atomic
from xtalwatch.learn.registry import ModelRegistry, RegistryError
from xtalwatch.learn.retrain.announce import record_outcome
from xtalwatch.learn.retrain.lock import TRAINING_DIR
from xtalwatch.learn.retrain.outcome import RetrainOutcome

__all__ = ["finish_interrupted"]

log = logging.getLogger("xtalwatch.learn.retrain")

RUN_LOG, RESULT = "retrain.log", "result.json"


def finish_interrupted(settings: Settings) -> list[RetrainOutcome]:
    """Record and clean up every run folder without a result; the caller holds the training lock."""
    folder = settings.state.dir / TRAINING_DIR
    if not folder.is_dir():
        return []
    outcomes = []
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (run_dir / RESULT).exists() or not (run_dir / RUN_LOG).exists():
            continue
        outcome = _outcome_of(settings.state.dir, run_dir)
        for leftover in run_dir.glob("*checkpoint.pt*"):  # the checkpoint and a half-written temporary of it
            leftover.unlink(missing_ok=True)
        write_json_atomic(run_dir / RESULT, outcome.to_dict())
        log.warning("retrain %s was killed before it finished; recorded as %s, its checkpoint removed (log kept: %s)",
                    run_dir.name, outcome.status, run_dir / RUN_LOG)
        record_outcome(settings, outcome)
        outcomes.append(outcome)
    return outcomes


def _outcome_of(state_dir: Path, run_dir: Path) -> RetrainOutcome:
    version, run_log = run_dir.name, run_dir / RUN_LOG
    try:
        record = ModelRegistry(state_dir).get(version)
    except (RegistryError, OSError, ValueError, KeyError):
        record = None
    if record is not None and record.status in ("promoted", "retired", "rejected"):
        status = "rejected" if record.status == "rejected" else "promoted"
        return RetrainOutcome(status, f"{record.reason} (recorded after the run was killed)", version=version,
                              started_at=record.created_at, log_path=str(run_log))
    return RetrainOutcome("failed", f"the training run was killed before it finished; see {run_log}",
                          version=version, started_at=run_log.stat().st_mtime, log_path=str(run_log))
