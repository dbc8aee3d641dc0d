"""The model bundle: encoder + head + calibration, one folder, the unit the registry serves.

A bundle folder holds ``encoder.pt`` (the SimCLR encoder's weights, fine-tuned when the
fine-tuned head won), ``head.pt`` (linear weights, a kNN bank or the fine-tuned MLP; absent
before the first labels) and ``bundle.json`` (version, classes, crop size, calibration
temperature, metrics with the head choice, data fingerprint, training config). It is written
into a temporary folder beside ``<folder>`` and renamed, so a reader sees a whole bundle or none.

Crops go in as the service stores them: uint8 (N, S, S, 3) **BGR** (OpenCV's order, what
``preprocess_array`` returns and ``cv2.imread`` gives for the catalogue's crop PNGs) or grey
(N, S, S[, 1]). They are resized to the bundle's size if needed and turned to RGB here, once,
because the encoder was trained on RGB.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from xtalwatch.config import ClassifyConfig
from xtalwatch.files import atomic_dir
from xtalwatch.learn.features import embed, to_model_rgb
from xtalwatch.learn.gate import feature_std
from xtalwatch.learn.heads.calibrate import fit_temperature, nll, softmax
from xtalwatch.learn.heads.finetuned import FinetunedHead, finetune
from xtalwatch.learn.heads.select import (
    HeadSelection,
    accuracy,
    candidate_kinds,
    choose,
    feature_kind,
    selection_split,
)
from xtalwatch.learn.heads.serving import Head, fit_head, head_from_state, holdout_logits
from xtalwatch.learn.simclr.encoder import Encoder

__all__ = ["ModelBundle", "NoClassifier", "build_bundle", "map_labels", "calls", "FORMAT", "read_meta", "load_head",
           "HeadOnlyBundle"]

log = logging.getLogger(__name__)

FORMAT = "xtalwatch-bundle/1"


class NoClassifier(RuntimeError):
    """The bundle has an encoder but no head (no labels yet): it can embed, not classify."""


def map_labels(labels: Sequence[str], cfg: ClassifyConfig) -> list[str | None]:
    """Each label as one of ``cfg.classes``: fine labels folded onto their class (``needles`` → ``crystals``).

    A label that is neither a class nor a sub-class maps to None; the caller decides whether that
    is an error (:func:`build_bundle`) or a label to leave out (retraining, which warns).
    """
    return [cfg.class_of(lab) for lab in labels]


class ModelBundle:
    """Encoder, head and calibration temperature, with what identifies them."""

    def __init__(self, *, version: str, encoder: Encoder, image_size: int, classes: list[str] | None = None,
                 head: Head | None = None, temperature: float = 1.0, channels: int = 3,
                 metrics: dict | None = None, created_at: float | None = None, data_fingerprint: str = "",
                 train_config: dict | None = None, encoder_version: str | None = None):
        # The version whose training made the encoder: a head re-fitted from labels keeps its
        # parent's encoder, and with it the features cached under that name (learn/feature_cache.py).
        self.encoder_version = encoder_version or version
        self.version, self.encoder, self.image_size, self.channels = version, encoder.eval(), image_size, channels
        self.classes = list(classes or [])
        self.head, self.temperature = head, float(temperature)
        self.metrics = dict(metrics or {})
        self.created_at = time.time() if created_at is None else created_at
        self.data_fingerprint, self.train_config = data_fingerprint, dict(train_config or {})
        if (head is None) != (not self.classes):
            raise ValueError("a bundle has classes exactly when it has a head")

    # -- inference ---------------------------------------------------------------------------
    def embed(self, crops: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(N, S, S[, C]) uint8 service-layout crops → (N, 512) float32 encoder features (batch_size None:
        chosen by crop size, see ``features.inference_batch_size``)."""
        return embed(self.encoder, to_model_rgb(crops, self.image_size), batch_size)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, 512) features → (N, K) uncalibrated head logits."""
        if self.head is None:
            raise NoClassifier(f"no labels yet: model {self.version} has an encoder but no classifier head; "
                               "import labels (xtalwatch labels import) and retrain")
        return self.head.logits(features)

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        """(N, K) calibrated probabilities, columns in ``classes`` order; raises NoClassifier without a head."""
        if self.head is None:
            self.logits(np.zeros((0, 512), np.float32))
        return softmax(self.logits(self.embed(crops)), self.temperature)

    # -- files -------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write the bundle into ``folder`` atomically (a temporary folder beside it, then a rename); ``folder`` must not exist."""
        with atomic_dir(Path(folder)) as tmp:
            self._write(tmp)

    def _write(self, tmp: Path) -> None:
        torch.save({"state_dict": self.encoder.state_dict(), "small_stem": self.encoder.small_stem}, tmp / "encoder.pt")
        if self.head is not None:
            torch.save(self.head.state(), tmp / "head.pt")
        meta = {"format": FORMAT, "version": self.version, "classes": self.classes, "image_size": self.image_size,
                "channels": self.channels, "channel_order": "bgr", "temperature": self.temperature,
                "head": self.head.kind if self.head is not None else None, "metrics": self.metrics,
                "created_at": self.created_at, "data_fingerprint": self.data_fingerprint,
                "train_config": self.train_config, "encoder_version": self.encoder_version}
        (tmp / "bundle.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> ModelBundle:
        """Read a bundle folder (or a symlink to one) written by :meth:`save`; CPU, eval mode."""
        folder = Path(folder)
        meta = read_meta(folder)
        enc_state = torch.load(folder / "encoder.pt", map_location="cpu", weights_only=True)
        encoder = Encoder(small_stem=bool(enc_state["small_stem"]))
        encoder.load_state_dict(enc_state["state_dict"])
        encoder.to(memory_format=torch.channels_last)
        head = None
        if meta["head"] is not None:
            head = head_from_state(torch.load(folder / "head.pt", map_location="cpu", weights_only=True))
        return cls(version=meta["version"], encoder=encoder, image_size=meta["image_size"], classes=meta["classes"],
                   head=head, temperature=meta["temperature"], channels=meta["channels"], metrics=meta["metrics"],
                   created_at=meta["created_at"], data_fingerprint=meta["data_fingerprint"],
                   train_config=meta["train_config"], encoder_version=meta.get("encoder_version"))


def read_meta(folder: Path) -> dict:
    """A bundle folder's ``bundle.json`` (version, classes, head kind, temperature, encoder_version...),
    without loading any weights."""
    meta_path = Path(folder) / "bundle.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: not a model bundle (no bundle.json)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder}: unknown bundle format {meta.get('format')!r}")
    meta.setdefault("encoder_version", meta["version"])
    return meta


def load_head(folder: Path) -> Head | None:
    """A bundle folder's head alone (None when it has none): what scoring cached features needs."""
    folder = Path(folder)
    if read_meta(folder)["head"] is None:
        return None
    return head_from_state(torch.load(folder / "head.pt", map_location="cpu", weights_only=True))


class HeadOnlyBundle:
    """A new head on an existing bundle's encoder: written as a whole bundle folder whose ``encoder.pt``
    is a hard link to the parent's (a copy where links cannot be made), so a head re-fitted from labels
    costs a few kB on disk and no encoder load. Deleting either folder leaves the other whole.

    Args:
        parent: the bundle folder whose encoder is kept (its ``bundle.json`` gives size, channels,
            the encoder's version and the parent's metrics).
        version: the new version; head, classes, temperature: the new head and its calibration;
        metrics: merged over the parent's (the encoder-level figures, e.g. ``feature_mean``, stay).
    """

    def __init__(self, parent: Path, *, version: str, head: Head, classes: list[str], temperature: float,
                 metrics: dict | None = None, data_fingerprint: str = "", created_at: float | None = None):
        self.parent = Path(os.path.realpath(parent))
        self.meta = read_meta(self.parent)
        self.version, self.head, self.classes, self.temperature = version, head, list(classes), float(temperature)
        self.metrics = {**self.meta.get("metrics", {}), **(metrics or {})}
        self.data_fingerprint = data_fingerprint
        self.created_at = time.time() if created_at is None else created_at

    def save(self, folder: Path) -> None:
        """Write the bundle into ``folder`` atomically; ``folder`` must not exist."""
        with atomic_dir(Path(folder)) as tmp:
            try:
                os.link(self.parent / "encoder.pt", tmp / "encoder.pt")
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(self.parent / "encoder.pt", tmp / "encoder.pt")
            torch.save(self.head.state(), tmp / "head.pt")
            meta = {**self.meta, "version": self.version, "classes": self.classes, "temperature": self.temperature,
                    "head": self.head.kind, "metrics": self.metrics, "created_at": self.created_at,
                    "data_fingerprint": self.data_fingerprint, "encoder_version": self.meta["encoder_version"]}
            (tmp / "bundle.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def calls(bundle: ModelBundle, probs: np.ndarray, uncertain_below: float, digits: int = 4) -> list[dict]:
    """Probabilities → calls: the one place that turns a model's output into what is reported and stored.

    Args:
        bundle: the model that gave ``probs`` (anything with ``classes`` and ``version``).
        probs: (N, K) calibrated probabilities, columns in ``bundle.classes`` order.
        uncertain_below: a call whose top probability is below this is marked uncertain.
        digits: decimals kept in ``confidence`` and ``probabilities``.

    Returns one record per row: class (the arg-max), confidence, probabilities (class → value),
    model_version, uncertain.
    """
    out = []
    for p in np.asarray(probs):
        top = int(p.argmax())
        out.append({"class": bundle.classes[top], "confidence": round(float(p[top]), digits),
                    "probabilities": {c: round(float(v), digits) for c, v in zip(bundle.classes, p, strict=True)},
                    "model_version": bundle.version, "uncertain": bool(p[top] < uncertain_below)})
    return out


def build_bundle(encoder: Encoder, train_crops: np.ndarray, labels: Sequence[str | None] | None,
                 cfg: ClassifyConfig, version: str, *, image_size: int | None = None, data_fingerprint: str = "",
                 train_config: dict | None = None, holdout_fraction: float = 0.2, seed: int = 0,
                 proj_layer: torch.nn.Module | None = None, max_memory_gb: float | None = None,
                 progress: bool = False) -> ModelBundle:
    """Choose the serving head on held-out labels, calibrate it, and wrap everything as a bundle.

    Args:
        encoder: the trained SimCLR encoder (eval mode is set here; a fine-tune trains a copy).
        train_crops: (N, S, S[, C]) uint8 service-layout crops (BGR or grey).
        labels: one class name per crop (None for an unlabelled crop), or None for no labels at all.
            Sub-classes fold onto ``cfg.classes`` (``needles`` → ``crystals``).
        cfg: the ``classify`` section: classes, the head (``auto`` or forced), kNN and fine-tune knobs.
        version: the bundle's version string (the registry names it).
        image_size: crop side the encoder expects (default: the crops' own size).
        proj_layer: the SimCLR run's first projection layer, where a fine-tune starts (None: fresh).
        max_memory_gb: ``train.max_memory_gb`` for a fine-tune's steps on CPU (None: never split).

    The candidates (``learn/heads/select.py``) are fitted on a stratified 80 % of the labels and
    scored on the other 20 %; the winner's temperature is fitted there too, and every candidate's
    accuracy goes into ``metrics`` with the choice (``head_selection``). A linear or kNN winner is
    then refitted on every label with T kept; a fine-tuned winner serves as it was measured (fitted
    on the 80 %), its encoder replacing ``encoder``: a second fine-tune would double the CPU cost.
    With too few labels to hold some out: the forced kind, or linear for ``auto``, and T = 1.
    """
    size = image_size or int(np.asarray(train_crops).shape[1])
    probe = ModelBundle(version=version, encoder=encoder, image_size=size)
    metrics: dict = {}
    labelled = [i for i, lab in enumerate(labels or []) if lab is not None]
    crops = np.asarray(train_crops)[labelled] if labelled else np.asarray(train_crops)[:256]
    feats = probe.embed(crops)
    metrics["feature_std"] = feature_std(feats) if len(feats) > 1 else 0.0
    if not labelled:
        return ModelBundle(version=version, encoder=encoder, image_size=size, metrics=metrics,
                           data_fingerprint=data_fingerprint, train_config=train_config)
    raw = [labels[i] for i in labelled]
    names = map_labels(raw, cfg)
    if None in names:
        i = names.index(None)
        raise ValueError(f"label {i}: unknown class {raw[i]!r} (classes: {cfg.classes}, "
                         f"sub-classes: {sorted(cfg.subclass_of)})")
    classes = [c for c in cfg.classes if c in set(names)]
    y = np.array([classes.index(n) for n in names])
    k = len(classes)
    kinds = candidate_kinds(cfg)
    if k < 2 and "finetuned" in kinds:  # one class: nothing to fine-tune towards; a probe says the one class
        kinds = ("linear",)

    def tune(idx: np.ndarray) -> tuple[Encoder, FinetunedHead]:
        return finetune(encoder, to_model_rgb(crops[idx], size), y[idx], k, cfg, proj_layer=proj_layer, seed=seed,
                        max_memory_gb=max_memory_gb, progress=progress)

    temperature = 1.0
    split = selection_split(y, holdout_fraction, seed) if k >= 2 else None
    tuned: tuple[Encoder, FinetunedHead] | None = None
    if split is not None:
        fi, ho = split
        logits = holdout_logits(feats, y, fi, ho, k, cfg)  # the cheap kinds are scored even when not allowed
        skipped: dict[str, str] = {}
        if "finetuned" in kinds:
            if cfg.head == "auto" and len(y) < cfg.finetune_min_labels:
                skipped["finetuned"] = f"{len(y)} labels < classify.finetune_min_labels {cfg.finetune_min_labels}"
            else:
                tuned = tune(fi)
                logits["finetuned"] = tuned[1].logits(embed(tuned[0], to_model_rgb(crops[ho], size)))
        selection = choose({kind: accuracy(lg, y[ho]) for kind, lg in logits.items()}, len(ho), skipped,
                           allowed=kinds)
        for kind, acc in selection.accuracies.items():
            metrics[f"holdout_accuracy_{kind}"] = acc
        best = logits[selection.winner]
        temperature = fit_temperature(best, y[ho])
        metrics["holdout_nll_uncalibrated"] = nll(best, y[ho])
        metrics["holdout_nll_calibrated"] = nll(best, y[ho], temperature)
        metrics["holdout_size"] = int(len(ho))
    else:
        winner = "finetuned" if kinds == ("finetuned",) else feature_kind(cfg)
        why = f"{len(y)} labels of {k} class(es): too few to hold any out (10 or more, 2 or more per class)"
        selection = HeadSelection(winner, skipped={kind: why for kind in candidate_kinds(cfg) if kind != winner})
    metrics["head_selection"] = selection.to_dict()
    metrics["n_labels"] = len(y)
    metrics["label_counts"] = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    head: Head
    if selection.winner == "finetuned":
        encoder, head = tuned if tuned is not None else tune(np.arange(len(y)))
        metrics["feature_std"] = feature_std(embed(encoder, to_model_rgb(crops, size))) if len(crops) > 1 else 0.0
    else:
        head = fit_head(feats, y, k, cfg, selection.winner)
    log.info("bundle %s: %s head serves (%s)", version, selection.winner,
             ", ".join(f"{kind} {acc:.3f}" for kind, acc in selection.accuracies.items()) or "no hold-out")
    return ModelBundle(version=version, encoder=encoder, image_size=size, classes=classes, head=head,
                       temperature=temperature, metrics=metrics, data_fingerprint=data_fingerprint,
                       train_config=train_config)
