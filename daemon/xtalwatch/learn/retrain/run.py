"""One retraining run, read top to bottom: lock, data, fingerprint, SimCLR, bundle, gate, register, outcome.

The service runs this in a child process (``python -m xtalwatch.learn.retrain``, started by
``scheduler.py``), so training never slows ingest and the GPU's memory goes back when it ends;
``xtalwatch train --now`` and the tests call :func:`run_retrain` directly. Either way the run:

1. takes ``<state>/training/.lock`` (one training at a time, whoever started it), and finishes
   what killed runs left (``interrupted.py``: their outcome recorded, their checkpoint removed);
2. reads every usable image from the catalogue: preprocessed, not flagged, not failed, with its
   model-size crop on disk, plus the latest label of each;
3. refuses, with the counts, when there are fewer than ``train.min_images``; a scheduled run
   (``now=False``) also skips when nothing changed since the serving model was trained;
4. trains SimCLR, warm-started from the serving encoder (``train(init_encoder=...)``) or from
   scratch (``retrain.warm_start``, or a serving model of another input size or stem);
5. builds a bundle on the labels outside the hold-out: the head that serves is chosen among
   linear, kNN and a SimCLRv2 fine-tune (from the run's first projection layer) as
   ``classify.head`` says (``learn/heads/select.py``), and the choice is recorded
   (``head_selection``: every candidate's accuracy, the margin, the labels scored on);
6. measures the candidate and the serving model on the same images and hold-out, each with the
   head it serves (a fine-tuned one on its own fine-tuned encoder), and asks the gate;
7. stores the model in the registry, promoted or rejected with the reason, and prunes old ones;
8. records its outcome: ``result.json`` beside ``retrain.log`` in ``<state>/training/<version>/``,
   and, unless it was skipped, an event in the catalogue with its alert (``announce.py``).

It never raises for a failed run: the outcome says ``failed`` and why (errors are data).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from contextlib import ExitStack, closing
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xtalwatch.config import ClassifyConfig, Settings, TrainConfig
from xtalwatch.files import write_json_atomic
from xtalwatch.learn.features import read_crops, read_model_rgb, unit_mean
from xtalwatch.learn.registry import ModelRecord, ModelRegistry, link_shared_registry, new_version
from xtalwatch.learn.retrain.announce import record_outcome
from xtalwatch.learn.retrain.interrupted import finish_interrupted
from xtalwatch.learn.retrain.lock import TRAINING_DIR, Busy, log_to, training_lock
from xtalwatch.learn.retrain.outcome import RetrainOutcome
from xtalwatch.learn.retrain.usable import UsableImages, data_fingerprint, gather_usable, open_catalogue

if TYPE_CHECKING:  # torch stays unimported until a run starts
    from xtalwatch.learn.bundle import ModelBundle
    from xtalwatch.learn.simclr.encoder import Encoder

__all__ = ["run_retrain", "FEATURE_SAMPLE"]

log = logging.getLogger("xtalwatch.learn.retrain")

FEATURE_SAMPLE = 1000  # usable images embedded to measure the feature spread (plenty for a std)


def run_retrain(settings: Settings, *, now: bool = False, progress: bool = False) -> RetrainOutcome:
    """Train, gate, register and record one model; see the module docstring. Never raises for a failed run.

    Args:
        now: started by hand; train even if nothing changed since the serving model.
        progress: show the training progress bar.
    """
    started = time.time()
    outcome = RetrainOutcome("skipped", "", started_at=started, niceness=os.getpriority(os.PRIO_PROCESS, 0))
    try:
        with ExitStack() as held:  # the lock, the catalogue and the run's log file, released in reverse
            if settings.site.models_dir is not None:
                link_shared_registry(settings.state.dir, settings.site.models_dir)
            held.enter_context(training_lock(settings.state.dir, settings.catalogue.url))
            finish_interrupted(settings)
            _run(settings, now, progress, outcome, held)
    except Busy as busy:
        outcome.reason = str(busy)
    except Exception as exc:  # a failed training is an event and a metric, not a crash of the caller
        outcome.status, outcome.reason = "failed", f"{type(exc).__name__}: {exc}"
        log.error("retrain: failed: %s\n%s", outcome.reason, traceback.format_exc())
    outcome.seconds = time.time() - started
    log.info("retrain: %s", outcome.summary())
    if outcome.log_path is not None:
        write_json_atomic(Path(outcome.log_path).parent / "result.json", outcome.to_dict())
    record_outcome(settings, outcome)
    return outcome


def _run(settings: Settings, now: bool, progress: bool, outcome: RetrainOutcome, held: ExitStack) -> None:
    """The run under the lock; fills in ``outcome``, leaving it ``skipped`` when there is nothing to do."""
    from xtalwatch.learn.bundle import build_bundle
    from xtalwatch.learn.gate import gate, holdout_mask, measure_model
    from xtalwatch.learn.simclr import from_arrays, train

    state_dir, tcfg, rcfg, ccfg = settings.state.dir, settings.train, settings.retrain, settings.classify

    # -- the catalogue and the serving model ------------------------------------------------
    try:
        catalogue = held.enter_context(closing(open_catalogue(settings)))
    except FileNotFoundError as exc:
        outcome.reason = f"{exc}: nothing to train on yet"
        return
    registry = ModelRegistry(state_dir, catalogue)
    serving_record = registry.current()
    outcome.serving_version = serving_record.version if serving_record else None

    # -- data -------------------------------------------------------------------------------
    usable = gather_usable(catalogue)
    outcome.n_images, outcome.n_labels = len(usable), len(usable.labels)
    if len(usable) < tcfg.min_images:
        outcome.reason = (f"only {len(usable)} usable images (preprocessed, not flagged), "
                          f"train.min_images is {tcfg.min_images}; not training yet")
        return
    fingerprint = data_fingerprint(usable, tcfg.image_size)
    outcome.data_fingerprint = fingerprint
    if not now and serving_record is not None and serving_record.data_fingerprint == fingerprint:
        outcome.reason = f"no new images or labels since {serving_record.version} was trained"
        return

    version = new_version(outcome.started_at)
    run_dir = state_dir / TRAINING_DIR / version
    run_dir.mkdir(parents=True)
    outcome.version, outcome.log_path = version, str(run_dir / "retrain.log")
    held.enter_context(log_to(run_dir / "retrain.log"))
    log.info("retrain %s: %d usable images, %d labels, fingerprint %s, serving %s", version, len(usable),
             len(usable.labels), fingerprint, outcome.serving_version or "none")
    # The crops stream into a memory-mapped file of the run, not into memory: train reads a batch at a time.
    crops_file = run_dir / "crops.npy"
    held.callback(crops_file.unlink, missing_ok=True)
    images = read_model_rgb(usable.crop_paths, tcfg.image_size, crops_file)
    dataset = from_arrays(images)

    # -- SimCLR -----------------------------------------------------------------------------
    serving = _load_serving(serving_record)
    init = _warm_start_encoder(serving, tcfg) if rcfg.warm_start else None
    outcome.warm_start = init is not None
    log.info("retrain %s: training %s", version,
             f"warm-started from {outcome.serving_version}" if outcome.warm_start else "from scratch")
    result = train(tcfg, dataset, run_dir, resume=False, init_encoder=init, progress=progress)
    outcome.steps, outcome.warnings = result.steps, list(result.warnings)
    outcome.final_loss = result.losses[-1] if result.losses else None
    log.info("retrain %s: %d steps, final loss %s, %.0f views/s", version, result.steps, outcome.final_loss,
             result.views_per_second)
    encoder = _trained_encoder(result.checkpoint)
    proj_layer = _projection_layer(result.checkpoint)
    del images, dataset

    # -- bundle, on the labels outside the hold-out ---------------------------------------------
    index = {image_id: k for k, image_id in enumerate(usable.ids)}
    labelled_ids, label_list = _known_labels(usable, ccfg)
    outcome.n_labels = len(labelled_ids)
    mask = holdout_mask([usable.sha256[index[i]] for i in labelled_ids], label_list, rcfg.holdout_fraction)
    sample_idx = np.unique(np.linspace(0, len(usable) - 1, min(FEATURE_SAMPLE, len(usable))).astype(int))
    channels = settings.preprocess.channels
    sample = read_crops([usable.crop_paths[k] for k in sample_idx], channels)
    labelled = read_crops([usable.crop_paths[index[i]] for i in labelled_ids], channels) if labelled_ids else None
    train_labels = [lab for lab, held_out in zip(label_list, mask, strict=True) if not held_out]
    bundle_kwargs = {"image_size": tcfg.image_size, "data_fingerprint": fingerprint,
                     "train_config": tcfg.model_dump(mode="json"), "seed": tcfg.seed, "proj_layer": proj_layer,
                     "max_memory_gb": tcfg.max_memory_gb, "progress": progress}
    if labelled is not None and train_labels:
        candidate = build_bundle(encoder, labelled[~mask], train_labels, ccfg, version, **bundle_kwargs)
    else:
        candidate = build_bundle(encoder, sample, None, ccfg, version, **bundle_kwargs)

    # -- gate: each model with the head it serves, on the same hold-out ---------------------------
    cand_metrics = measure_model(candidate, sample, labelled, label_list, mask, ccfg)
    # The direction of the training images' mean feature: the service's drift alarm compares new images with it.
    candidate.metrics["feature_mean"] = [round(float(v), 6) for v in unit_mean(candidate.embed(sample))]
    serv_metrics = measure_model(serving, sample, labelled, label_list, mask, ccfg) if serving else None
    outcome.candidate = cand_metrics.to_dict()
    outcome.serving = serv_metrics.to_dict() if serv_metrics else None
    decision = gate(cand_metrics, serv_metrics, rcfg)
    log.info("retrain %s: gate says %s: %s", version, "promote" if decision.promote else "reject", decision.reason)

    # -- register ---------------------------------------------------------------------------
    registry.add(candidate, version=version, created_at=outcome.started_at, data_fingerprint=fingerprint,
                 config={"train": tcfg.model_dump(mode="json"), "retrain": rcfg.model_dump(mode="json")},
                 metrics={"gate": outcome.candidate, "serving_gate": outcome.serving,
                          "final_loss": outcome.final_loss, "steps": result.steps,
                          "n_images": len(usable), "n_labels": len(usable.labels),
                          "warm_start": outcome.warm_start,
                          "warm_start_from": outcome.serving_version if outcome.warm_start else None,
                          "head_selection": candidate.metrics.get("head_selection")})
    if decision.promote:
        registry.promote(version, decision.reason)
    else:
        registry.reject(version, decision.reason)
    deleted = registry.prune(rcfg.keep_models)
    if deleted:
        log.info("retrain: pruned old models %s", ", ".join(deleted))
    outcome.status = "promoted" if decision.promote else "rejected"
    outcome.reason = decision.reason
    # The bundle holds the encoder now; the optimiser state is 3x its size and of no further use.
    result.checkpoint.unlink(missing_ok=True)


# -- helpers ------------------------------------------------------------------------------------
def _load_serving(record: ModelRecord | None) -> ModelBundle | None:
    from xtalwatch.learn.bundle import ModelBundle

    if record is None:
        return None
    try:
        return ModelBundle.load(record.path)
    except Exception as exc:  # an unreadable serving model should not stop a better one from replacing it
        log.warning("retrain: cannot load the serving model %s (%s); gating without it", record.version, exc)
        return None


def _warm_start_encoder(serving: ModelBundle | None, cfg: TrainConfig) -> Encoder | None:
    """The serving model's encoder when this run can start from it: same input size and stem; else None."""
    from xtalwatch.learn.simclr.encoder import use_small_stem

    if serving is None:
        return None
    if serving.image_size != cfg.image_size or serving.encoder.small_stem != use_small_stem(cfg.image_size,
                                                                                            cfg.small_stem):
        log.info("retrain: the serving model %s has another input size or stem; training from scratch",
                 serving.version)
        return None
    return serving.encoder


def _trained_encoder(checkpoint: Path) -> Encoder:
    """The encoder a finished SimCLR run left in its checkpoint (CPU, eval mode)."""
    from xtalwatch.learn.simclr import load_encoder

    return load_encoder(checkpoint)


def _projection_layer(checkpoint: Path):
    """The run's first projection layer, where a fine-tune starts; None (a fresh layer) when unreadable."""
    from xtalwatch.learn.heads.finetuned import projection_layer_from_checkpoint

    try:
        return projection_layer_from_checkpoint(checkpoint)
    except (KeyError, RuntimeError, ValueError) as exc:  # another head layout: fine-tune from a fresh layer
        log.warning("retrain: no projection layer in %s (%s); a fine-tune starts from a fresh one", checkpoint, exc)
        return None


def _known_labels(usable: UsableImages, cfg: ClassifyConfig) -> tuple[list[int], list[str]]:
    """Labelled image ids and their classes, fine labels folded onto ``classify.classes``; others left out."""
    from xtalwatch.learn.bundle import map_labels

    ids = [image_id for image_id in usable.ids if image_id in usable.labels]
    raw = [usable.labels[image_id] for image_id in ids]
    folded = map_labels(raw, cfg)
    unknown = sorted({label for label, cls in zip(raw, folded, strict=True) if cls is None})
    if unknown:
        log.warning("retrain: labels outside classify.classes left out: %s", ", ".join(unknown))
    kept = [(image_id, cls) for image_id, cls in zip(ids, folded, strict=True) if cls is not None]
    return [image_id for image_id, _ in kept], [cls for _, cls in kept]
