"""One retraining run, read top to bottom: lock, data, fingerprint, SimCLR, bundle, gate, register.

The service runs this in a child process (``python -m xtalwatch.learn.retrain``, started by
``scheduler.py``), so training never slows ingest and the GPU's memory goes back when it ends;
``xtalwatch train --now`` and the tests call :func:`run_retrain` directly. Either way the run:

1. takes ``<state>/training/.lock`` (one training at a time, whoever started it);
2. reads every usable image from the catalogue: preprocessed, not flagged, not failed, with its
   model-size crop on disk, plus the latest label of each;
3. refuses, with the counts, when there are fewer than ``train.min_images``; a scheduled run
   (``now=False``) also skips when nothing changed since the serving model was trained;
4. trains SimCLR, warm-started from the serving encoder or from scratch (``retrain.warm_start``);
5. builds a bundle (encoder + classifier head on the labels outside the hold-out);
6. measures the candidate and the serving model on the same images and hold-out, asks the gate;
7. stores the model in the registry, promoted or rejected with the reason, and prunes old ones.

It never raises for a failed run: the outcome says ``failed`` and why (errors are data), and
``<state>/training/<version>/retrain.log`` holds the details and ``result.json`` the outcome.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xtalwatch.config import Settings
from xtalwatch.files import write_json_atomic
from xtalwatch.learn.features import read_crops, read_model_rgb, unit_mean
from xtalwatch.learn.gate import GateMetrics, gate, holdout_mask, measure
from xtalwatch.learn.registry import ModelRegistry, new_version

__all__ = ["RetrainOutcome", "UsableImages", "run_retrain", "gather_usable", "count_usable", "data_fingerprint",
           "TRAINING_DIR", "main"]

log = logging.getLogger("xtalwatch.learn.retrain")

TRAINING_DIR = "training"
FEATURE_SAMPLE = 1000  # usable images embedded to measure the feature spread (plenty for a std)

_USABLE_SQL = """SELECT i.id, i.sha256, p.crop_path FROM images i JOIN preprocess p ON p.image_id = i.id
                 WHERE i.status NOT IN ('flagged', 'failed', 'catalogued') AND p.crop_path IS NOT NULL
                 ORDER BY i.id"""


@dataclass
class RetrainOutcome:
    """What one run did. ``status``: promoted, rejected, failed, or skipped (refused, nothing new, busy)."""

    status: Literal["promoted", "rejected", "failed", "skipped"]
    reason: str
    version: str | None = None
    serving_version: str | None = None  # the model serving when the run started
    started_at: float = 0.0
    seconds: float = 0.0
    final_loss: float | None = None
    steps: int = 0
    n_images: int = 0
    n_labels: int = 0
    warm_start: bool = False
    candidate: dict[str, Any] | None = None  # GateMetrics of the new model
    serving: dict[str, Any] | None = None  # GateMetrics of the serving model, measured now
    log_path: str | None = None
    niceness: int | None = None  # the process's niceness while it ran
    data_fingerprint: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrainOutcome:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def summary(self) -> str:
        if self.status == "skipped":
            return f"skipped: {self.reason}"
        head = f"{self.status}: {self.version or 'no model'}"
        loss = f", final loss {self.final_loss:.4f}" if self.final_loss is not None else ""
        return f"{head} ({self.n_images} images, {self.n_labels} labels{loss}, {self.seconds:.0f} s): {self.reason}"


# -- data -------------------------------------------------------------------------------------
@dataclass
class UsableImages:
    """The catalogue's usable images: ids, content hashes, crop paths and the latest label of each."""

    ids: list[int]
    sha256: list[str]
    crop_paths: list[str]
    labels: dict[int, str]  # image id → class

    def __len__(self) -> int:
        return len(self.ids)


def count_usable(state_dir: Path) -> int:
    """How many usable images the catalogue holds (0 when there is no catalogue yet)."""
    try:
        conn = _readonly(state_dir)
    except FileNotFoundError:
        return 0
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM ({_USABLE_SQL})").fetchone()[0])
    finally:
        conn.close()


def _readonly(state_dir: Path):
    from xtalwatch.store.catalogue import Catalogue

    return Catalogue.open_readonly(state_dir)


def gather_usable(state_dir: Path) -> UsableImages:
    """Every usable image (not flagged or failed, crop on disk), and labels, from the catalogue."""
    conn = _readonly(state_dir)
    try:
        rows = conn.execute(_USABLE_SQL).fetchall()
        label_rows = conn.execute("SELECT image_id, label FROM labels ORDER BY created_at, id").fetchall()
    finally:
        conn.close()
    kept = [r for r in rows if os.path.isfile(r["crop_path"])]
    if len(kept) < len(rows):
        log.warning("retrain: %d usable images have no crop file on disk; left out", len(rows) - len(kept))
    ids = [int(r["id"]) for r in kept]
    present = set(ids)
    labels = {int(r["image_id"]): r["label"] for r in label_rows if int(r["image_id"]) in present}  # latest wins
    return UsableImages(ids, [r["sha256"] for r in kept], [r["crop_path"] for r in kept], labels)


def data_fingerprint(usable: UsableImages, image_size: int) -> str:
    """A hash of which images and labels a model is trained on: equal fingerprints, nothing new."""
    h = hashlib.sha256(f"retrain-v1 size={image_size}\n".encode())
    for image_id, sha in sorted(zip(usable.ids, usable.sha256, strict=True), key=lambda t: t[1]):
        h.update(f"{sha}\t{usable.labels.get(image_id, '')}\n".encode())
    return h.hexdigest()[:20]


# -- one at a time ----------------------------------------------------------------------------
class _Busy(Exception):
    pass


@contextmanager
def _training_lock(state_dir: Path) -> Iterator[None]:
    folder = state_dir / TRAINING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _Busy from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("xtalwatch")
    old_level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


# -- the run ----------------------------------------------------------------------------------
def run_retrain(settings: Settings, *, now: bool = False, progress: bool = False,
                after_training: Callable[[Any], None] | None = None) -> RetrainOutcome:
    """Train, gate and register one model; see the module docstring. Never raises for a failed run.

    Args:
        now: started by hand; train even if nothing changed since the serving model.
        progress: show the training progress bar.
        after_training: TEST HOOK, fault injection: called with the trained encoder before it is
            bundled, e.g. to zero its weights and prove that the gate rejects a collapsed model.
    """
    state_dir = settings.state.dir
    started = time.time()
    outcome = RetrainOutcome("skipped", "", started_at=started, niceness=os.getpriority(os.PRIO_PROCESS, 0))
    try:
        with _training_lock(state_dir):
            _run_locked(settings, now, progress, outcome, after_training)
    except _Busy:
        outcome.reason = "another training run is in progress (training/.lock is held)"
    except Exception as exc:  # a failed training is an event and a metric, not a crash of the caller
        outcome.status, outcome.reason = "failed", f"{type(exc).__name__}: {exc}"
        log.error("retrain: failed: %s\n%s", outcome.reason, traceback.format_exc())
    outcome.seconds = time.time() - started
    log.info("retrain: %s", outcome.summary())
    if outcome.log_path is not None:
        _write_result(Path(outcome.log_path).parent / "result.json", outcome)
    return outcome


def _write_result(path: Path, outcome: RetrainOutcome) -> None:
    write_json_atomic(path, outcome.to_dict())


def _run_locked(settings: Settings, now: bool, progress: bool, outcome: RetrainOutcome,
                after_training: Callable[[Any], None] | None) -> None:
    from xtalwatch.learn.bundle import ModelBundle, build_bundle
    from xtalwatch.learn.simclr import from_arrays, load_encoder, train

    state_dir, tcfg, rcfg = settings.state.dir, settings.train, settings.retrain
    registry = ModelRegistry(state_dir)
    serving_record = registry.current()
    outcome.serving_version = serving_record.version if serving_record else None

    # -- data -----------------------------------------------------------------------------
    usable = gather_usable(state_dir)
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
    with _log_to(run_dir / "retrain.log"):
        log.info("retrain %s: %d usable images, %d labels, fingerprint %s, serving %s", version, len(usable),
                 len(usable.labels), fingerprint, outcome.serving_version or "none")
        images = read_model_rgb(usable.crop_paths, tcfg.image_size)
        dataset = from_arrays(images)

        # -- SimCLR ---------------------------------------------------------------------------
        serving = _load_serving(ModelBundle, serving_record)
        outcome.warm_start = rcfg.warm_start and _seed_warm_start(settings, dataset, serving, run_dir)
        log.info("retrain %s: training %s", version, "warm-started from " + str(outcome.serving_version)
                 if outcome.warm_start else "from scratch")
        result = train(tcfg, dataset, run_dir, resume=outcome.warm_start, progress=progress)
        outcome.steps, outcome.warnings = result.steps, list(result.warnings)
        outcome.final_loss = result.losses[-1] if result.losses else None
        log.info("retrain %s: %d steps, final loss %s, %.0f views/s", version, result.steps, outcome.final_loss,
                 result.views_per_second)
        encoder = load_encoder(result.checkpoint)
        if after_training is not None:
            after_training(encoder)
        del images, dataset

        # -- bundle, on the labels outside the hold-out -------------------------------------------
        index = {image_id: k for k, image_id in enumerate(usable.ids)}
        labelled_ids, label_list = _known_labels(usable, settings)
        outcome.n_labels = len(labelled_ids)
        mask = holdout_mask([usable.sha256[index[i]] for i in labelled_ids], label_list, rcfg.holdout_fraction)
        sample_idx = np.unique(np.linspace(0, len(usable) - 1, min(FEATURE_SAMPLE, len(usable))).astype(int))
        channels = settings.preprocess.channels
        sample = read_crops([usable.crop_paths[k] for k in sample_idx], channels)
        labelled = read_crops([usable.crop_paths[index[i]] for i in labelled_ids], channels) if labelled_ids else None
        train_labels = [lab for lab, held in zip(label_list, mask, strict=True) if not held]
        bundle_kwargs = {"image_size": tcfg.image_size, "data_fingerprint": fingerprint,
                         "train_config": tcfg.model_dump(mode="json"), "seed": tcfg.seed}
        if labelled is not None and train_labels:
            candidate = build_bundle(encoder, labelled[~mask], train_labels, settings.classify, version,
                                     **bundle_kwargs)
        else:
            candidate = build_bundle(encoder, sample, None, settings.classify, version, **bundle_kwargs)

        # -- gate -------------------------------------------------------------------------------
        cand_metrics = _metrics(candidate, sample, labelled, label_list, mask, rcfg.knn_k)
        # The direction of the training images' mean feature: the service's drift alarm compares new images with it.
        candidate.metrics["feature_mean"] = [round(float(v), 6) for v in unit_mean(candidate.embed(sample))]
        serv_metrics = _metrics(serving, sample, labelled, label_list, mask, rcfg.knn_k) if serving else None
        outcome.candidate = cand_metrics.to_dict()
        outcome.serving = serv_metrics.to_dict() if serv_metrics else None
        decision = gate(cand_metrics, serv_metrics, rcfg)
        log.info("retrain %s: gate says %s: %s", version, "promote" if decision.promote else "reject", decision.reason)

        # -- register ---------------------------------------------------------------------------
        from xtalwatch.store.catalogue import Catalogue

        catalogue = Catalogue(state_dir)
        try:
            registry = ModelRegistry(state_dir, catalogue)
            registry.add(candidate, version=version, created_at=outcome.started_at, data_fingerprint=fingerprint,
                         config={"train": tcfg.model_dump(mode="json"), "retrain": rcfg.model_dump(mode="json")},
                         metrics={"gate": outcome.candidate, "serving_gate": outcome.serving,
                                  "final_loss": outcome.final_loss, "steps": result.steps,
                                  "n_images": len(usable), "n_labels": len(usable.labels),
                                  "warm_start": outcome.warm_start, "warm_start_from": outcome.serving_version
                                  if outcome.warm_start else None})
            if decision.promote:
                registry.promote(version, decision.reason)
            else:
                registry.reject(version, decision.reason)
            deleted = registry.prune(rcfg.keep_models)
            if deleted:
                log.info("retrain: pruned old models %s", ", ".join(deleted))
        finally:
            catalogue.close()
        outcome.status = "promoted" if decision.promote else "rejected"
        outcome.reason = decision.reason
        # The bundle holds the encoder now; the optimiser state is 3x its size and of no further use.
        result.checkpoint.unlink(missing_ok=True)


def _known_labels(usable: UsableImages, settings: Settings) -> tuple[list[int], list[str]]:
    """Labelled image ids and their classes, fine labels folded onto ``classify.classes``; others left out."""
    cfg = settings.classify
    ids, names, unknown = [], [], set()
    for image_id in usable.ids:
        label = usable.labels.get(image_id)
        if label is None:
            continue
        label = cfg.subclass_of.get(label, label)
        if label not in cfg.classes:
            unknown.add(label)
            continue
        ids.append(image_id)
        names.append(label)
    if unknown:
        log.warning("retrain: labels outside classify.classes left out: %s", ", ".join(sorted(unknown)))
    return ids, names


def _load_serving(bundle_cls: Any, record: Any) -> Any:
    if record is None:
        return None
    try:
        return bundle_cls.load(record.path)
    except Exception as exc:  # an unreadable serving model should not stop a better one from replacing it
        log.warning("retrain: cannot load the serving model %s (%s); gating without it", record.version, exc)
        return None


def _metrics(bundle: Any, sample: np.ndarray, labelled: np.ndarray | None, labels: list[str],
             mask: np.ndarray, k: int) -> GateMetrics:
    features = bundle.embed(sample)
    if labelled is None:
        return measure(features)
    return measure(features, bundle.embed(labelled), labels, mask, k)


def _seed_warm_start(settings: Settings, dataset: Any, serving: Any, run_dir: Path) -> bool:
    """Write a step-0 checkpoint holding the serving encoder, so ``train(resume=True)`` starts from it.

    ``simclr.train`` builds its own encoder; its resume path is the one public way in. The
    projection head and optimiser start fresh (the bundle keeps no projection head).
    """
    import torch

    from xtalwatch.learn.simclr.checkpoint import save_checkpoint
    from xtalwatch.learn.simclr.encoder import FEATURE_DIM, build_encoder
    from xtalwatch.learn.simclr.heads import build_head
    from xtalwatch.learn.simclr.optim import build_optimizer, warmup_cosine
    from xtalwatch.learn.simclr.train import SimCLRModel

    cfg = settings.train
    if serving is None:
        return False
    encoder = build_encoder(cfg.image_size, cfg.small_stem)
    source = getattr(serving, "encoder", None)
    if getattr(serving, "image_size", None) != cfg.image_size or source is None or \
            getattr(source, "small_stem", None) != encoder.small_stem:
        log.info("retrain: serving model has another input size or stem; training from scratch")
        return False
    encoder.load_state_dict({k: v.detach().cpu() for k, v in source.state_dict().items()})
    torch.manual_seed(cfg.seed)
    model = SimCLRModel(encoder, build_head(cfg.head, FEATURE_DIM, cfg.projection_dim))
    batch = min(cfg.batch_size, len(dataset))
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(lambda: 1, cfg.warmup_fraction))
    save_checkpoint(run_dir / "checkpoint.pt", {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "step": 0, "batch_size": batch, "losses": [], "config": cfg.model_dump(mode="json"),
        "model_info": {"arch": "resnet18", "small_stem": encoder.small_stem, "image_size": cfg.image_size,
                       "head": cfg.head, "feature_dim": FEATURE_DIM, "projection_dim": cfg.projection_dim},
        "data_fingerprint": dataset.fingerprint, "n_images": len(dataset), "world_size": 1,
        "torch_version": str(torch.__version__), "saved_at": time.time(), "warm_start_from": serving.version})
    return True


# -- the child process ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m xtalwatch.learn.retrain``: one run, its outcome written as JSON to ``--result``."""
    p = argparse.ArgumentParser(prog="python -m xtalwatch.learn.retrain", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="YAML config file")
    p.add_argument("--state", type=Path, help="state folder (overrides state.dir)")
    p.add_argument("--settings-json", type=Path, help="the service's resolved settings, as JSON (wins over --config)")
    p.add_argument("--result", type=Path, help="write the outcome here as JSON")
    p.add_argument("--nice", type=int, default=0, help="add this to the process's CPU niceness first")
    p.add_argument("--now", action="store_true", help="train even if nothing changed since the serving model")
    args = p.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    from xtalwatch.config import ConfigError, load_settings
    from xtalwatch.logs import setup_logging

    try:
        if args.settings_json is not None:
            settings = Settings(**json.loads(args.settings_json.read_text(encoding="utf-8")))
        else:
            settings = load_settings(args.config, {"state.dir": args.state})
    except (ConfigError, OSError, ValueError) as exc:
        print(f"xtalwatch.learn.retrain: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.logging.level)
    outcome = run_retrain(settings, now=args.now)
    if args.result is not None:
        _write_result(args.result, outcome)
    return 1 if outcome.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
