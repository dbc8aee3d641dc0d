"""The evaluation, read top to bottom: data, split, SimCLR, then every method at every label fraction.

Each method is a function of (features or crops, labelled subset) → test logits, so the table
is the same loop for all of them. The SimCLR encoder is trained once, on the training images
without their labels, and shared by every fraction: it never saw a label, so it cannot favour one.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from xtalwatch.config import PreprocessConfig, TrainConfig
from xtalwatch.learn.evaluate.split import labelled_subset, stratified_split
from xtalwatch.learn.features import embed
from xtalwatch.learn.heads.finetune import Classifier, FitConfig, distil, fit_classifier, predict_logits
from xtalwatch.learn.heads.knn import fit_knn
from xtalwatch.learn.heads.linear import fit_linear
from xtalwatch.learn.simclr.data import CropDataset, load_folder, take_rows
from xtalwatch.learn.simclr.encoder import build_encoder
from xtalwatch.learn.simclr.train import resolve_device, train

__all__ = ["METHODS", "EvalConfig", "EvalResult", "Row", "run_evaluation", "load_imagefolder"]

log = logging.getLogger(__name__)

METHODS = ["raw_pixels_logreg", "random_encoder_linear", "supervised_scratch", "supervised_imagenet",
           "simclr_linear", "simclr_knn", "simclrv2_finetune", "simclrv2_distill"]


@dataclass
class EvalConfig:
    """What to evaluate and how hard to train; see ``xtalwatch evaluate --help``."""

    data_dir: Path
    out_dir: Path  # confusion PNGs, SimCLR run folder, crop cache
    label_fractions: list[float] = field(default_factory=lambda: [0.1])
    train: TrainConfig = field(default_factory=TrainConfig)  # SimCLR: image_size, epochs, batch_size, seed...
    preprocess: PreprocessConfig | None = field(default_factory=PreprocessConfig)  # None: images are crops
    test_fraction: float = 0.2
    supervised_epochs: int = 10  # passes over the labelled images (supervised, fine-tune)
    min_supervised_steps: int = 60  # floor, so a 5 % fraction still gets trained
    distill_epochs: int = 2  # passes over all training images
    fit_batch_size: int = 64
    knn_k: int = 20
    knn_temperature: float = 0.07
    raw_pixel_size: int = 16  # raw pixels are area-downsampled to this side first
    imagenet_weights: Path | None = None
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    progress: bool = True
    probe_every: int = 0  # >0: a linear probe at every fraction each N SimCLR epochs (the epoch curve)


@dataclass
class Row:
    method: str
    label_fraction: float
    accuracy: float | None
    macro_f1: float | None
    epochs: float | None
    seconds: float
    n_labelled: int = 0
    absent_reason: str | None = None
    confusion_png: str | None = None


@dataclass
class EvalResult:
    rows: list[Row]
    classes: list[str]
    n_train: int
    n_test: int
    n_skipped: int
    simclr: dict
    config: dict

    def to_json(self) -> dict:
        return {"rows": [asdict(r) for r in self.rows], "classes": self.classes, "n_train": self.n_train,
                "n_test": self.n_test, "n_skipped": self.n_skipped, "simclr": self.simclr, "config": self.config}


# -- data -------------------------------------------------------------------------------------

def _load_labelled(root: Path, image_size: int, cache_dir: Path,
                   preprocess: PreprocessConfig | None) -> tuple[CropDataset, np.ndarray, list[str]]:
    """(crops, labels (N,), classes) of ``root/<class>/*``; the crops stay a memmap of the cache."""
    ds = load_folder(Path(root), image_size, cache_dir, preprocess=preprocess)
    names = [p.split("/")[0] for p in ds.paths]
    if any("/" not in p for p in ds.paths):
        raise ValueError(f"{root}: not an ImageFolder (images must sit in one subfolder per class)")
    classes = sorted(set(names))
    if len(classes) < 2:
        raise ValueError(f"{root}: needs at least two class subfolders, found {classes}")
    index = {c: i for i, c in enumerate(classes)}
    return ds, np.array([index[n] for n in names]), classes


def load_imagefolder(root: Path, image_size: int, cache_dir: Path,
                     preprocess: PreprocessConfig | None) -> tuple[np.ndarray, np.ndarray, list[str], list[str], int]:
    """(crops (N, S, S, 3) read-only memmap, labels (N,), classes, relative paths, n_skipped) of ``root/<class>/*``."""
    ds, labels, classes = _load_labelled(root, image_size, cache_dir, preprocess)
    return ds.images, labels, classes, ds.paths, len(ds.skipped)


# -- the methods ------------------------------------------------------------------------------

def _raw_pixels(crops: np.ndarray, side: int) -> np.ndarray:
    out = np.empty((len(crops), side * side * 3), np.float32)  # one crop at a time: crops may be a memmap
    for i, c in enumerate(crops):
        out[i] = cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA).reshape(-1) / np.float32(255)
    return out


def _probe(encoder: torch.nn.Module, epoch: int, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray,
           y_te: np.ndarray, k: int, cfg: EvalConfig) -> list[dict]:
    """Linear-probe test accuracy of the encoder as it is now, at every label fraction."""
    t0 = time.perf_counter()
    f_tr, f_te = embed(encoder, x_tr), embed(encoder, x_te)
    found = []
    for frac in cfg.label_fractions:
        sub = labelled_subset(y_tr, frac, cfg.train.seed)
        pred = fit_linear(f_tr[sub], y_tr[sub], k).logits(f_te).argmax(axis=1)
        found.append({"epoch": epoch, "label_fraction": frac, "accuracy": round(float(accuracy_score(y_te, pred)), 4)})
    log.info("evaluate: probe at epoch %d: %s (%.1f s)", epoch,
             ", ".join(f"{p['label_fraction']:g}: {p['accuracy']:.3f}" for p in found), time.perf_counter() - t0)
    return found


def _fit_steps(n: int, epochs: float, batch: int, floor: int) -> int:
    return max(floor, math.ceil(epochs * n / min(batch, n)))


def run_evaluation(cfg: EvalConfig, on_row: Callable[[Row], None] | None = None) -> EvalResult:
    """Run the whole table; ``on_row`` is called as each row is finished (for live output)."""
    from xtalwatch.learn.evaluate.report import save_confusion

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    size = cfg.train.image_size
    torch.manual_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)  # SimCLR, the probes and every trained row run there

    # -- data and split ----------------------------------------------------------------------
    # Every image set below (the split, each labelled fraction) is a uint8 memmap of the crop cache,
    # read a batch at a time: memory does not grow with the number of images (docs/simclr.md, Memory).
    cache = out / "cache"
    data, labels, classes = _load_labelled(cfg.data_dir, size, cache, cfg.preprocess)
    paths, n_skipped, k = data.paths, len(data.skipped), len(classes)
    tr, te = stratified_split(labels, cfg.test_fraction, cfg.train.seed)
    (out / "split.json").write_text(json.dumps({"train": [paths[i] for i in tr], "test": [paths[i] for i in te]}))
    train_set = take_rows(data, tr, cache)
    x_tr, y_tr, x_te, y_te = train_set.images, labels[tr], take_rows(data, te, cache).images, labels[te]
    log.info("evaluate: %d classes, %d train / %d test images", k, len(tr), len(te))

    # -- SimCLR on the training images, no labels --------------------------------------------
    need_simclr = any(m.startswith("simclr") for m in cfg.methods)
    simclr_info: dict = {}
    encoder = head_layer = None
    probes: list[dict] = []
    if need_simclr:
        tcfg = cfg.train.model_copy(update={"min_images": min(cfg.train.min_images, len(tr))})
        on_epoch = None
        if cfg.probe_every > 0:
            def on_epoch(epoch: int, enc: torch.nn.Module) -> None:
                if epoch % cfg.probe_every == 0 or epoch == tcfg.epochs:
                    probes.extend(_probe(enc, epoch, x_tr, y_tr, x_te, y_te, k, cfg))
                    (out / "probes.json").write_text(json.dumps(probes))
        res = train(tcfg, train_set, out / "simclr", resume=False, progress=cfg.progress, on_epoch=on_epoch)
        from xtalwatch.learn.heads.finetuned import projection_layer_from_checkpoint
        from xtalwatch.learn.simclr.checkpoint import load_encoder

        encoder = load_encoder(res.checkpoint)
        head_layer = projection_layer_from_checkpoint(res.checkpoint)  # where SimCLRv2 fine-tuning starts
        encoder.to(device).eval()
        simclr_info = {"epochs": tcfg.epochs, "steps": res.steps, "seconds": round(res.seconds, 1),
                       "final_loss": res.losses[-1] if res.losses else None, "losses": res.losses,
                       "views_per_second": round(res.views_per_second, 1), "batch_size": res.batch_size,
                       "loss_png": str(res.loss_png) if res.loss_png else None,
                       "pairs_png": str(res.pairs_png) if res.pairs_png else None, "probes": probes,
                       "micro_batch": res.micro_batch}
        log.info("evaluate: SimCLR done, %d steps in %.0f s", res.steps, res.seconds)
    feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def features(name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in feats:
            if name == "simclr":
                enc = encoder
            else:
                torch.manual_seed(cfg.train.seed)
                enc = build_encoder(size, cfg.train.small_stem).to(device)
            feats[name] = (embed(enc, x_tr), embed(enc, x_te))
        return feats[name]

    # -- every method, every fraction --------------------------------------------------------
    rows: list[Row] = []
    fit = FitConfig(batch_size=cfg.fit_batch_size, seed=cfg.train.seed, flip_rotate=cfg.train.flip_rotate,
                    device=device.type, max_memory_gb=cfg.train.max_memory_gb)
    jobs = [(f, m) for f in cfg.label_fractions for m in cfg.methods]
    bar = tqdm(jobs, desc="evaluate", disable=not cfg.progress, dynamic_ncols=True)
    teachers: dict[float, Classifier] = {}
    for frac, method in bar:
        bar.set_postfix_str(f"{method} @ {frac:g}")
        sub = labelled_subset(y_tr, frac, cfg.train.seed)
        xs, ys = take_rows(train_set, sub, cache).images, y_tr[sub]
        t0 = time.perf_counter()
        epochs: float | None = None
        logits: np.ndarray | None = None
        absent: str | None = None
        sup_steps = _fit_steps(len(sub), cfg.supervised_epochs, cfg.fit_batch_size, cfg.min_supervised_steps)
        sup_epochs = sup_steps * min(cfg.fit_batch_size, len(sub)) / len(sub)
        if method == "raw_pixels_logreg":
            scaler = StandardScaler().fit(_raw_pixels(xs, cfg.raw_pixel_size))
            clf = LogisticRegression(max_iter=2000, class_weight="balanced", C=0.1)
            clf.fit(scaler.transform(_raw_pixels(xs, cfg.raw_pixel_size)), ys)
            proba = np.full((len(x_te), k), 1e-9)
            proba[:, clf.classes_] = clf.predict_proba(scaler.transform(_raw_pixels(x_te, cfg.raw_pixel_size)))
            logits = np.log(proba)
        elif method in ("random_encoder_linear", "simclr_linear", "simclr_knn"):
            f_tr, f_te = features("simclr" if method.startswith("simclr") else "random")
            head_ = (fit_knn(f_tr[sub], ys, k, cfg.knn_k, cfg.knn_temperature) if method == "simclr_knn"
                     else fit_linear(f_tr[sub], ys, k))
            logits = head_.logits(f_te)
            epochs = simclr_info.get("epochs") if method.startswith("simclr") else None
        elif method in ("supervised_scratch", "supervised_imagenet"):
            if method == "supervised_imagenet" and cfg.imagenet_weights is None:
                absent = ("no local ImageNet ResNet-18 weights given (--imagenet-weights FILE); "
                          "weights are never downloaded")
            else:
                torch.manual_seed(cfg.train.seed)
                weights = cfg.imagenet_weights if method == "supervised_imagenet" else None
                model = Classifier(build_encoder(size, cfg.train.small_stem, weights), k)
                fit_classifier(model, xs, ys, FitConfig(**{**asdict(fit), "steps": sup_steps}),
                               desc=method, progress=cfg.progress)
                logits, epochs = predict_logits(model, x_te), sup_epochs
        elif method in ("simclrv2_finetune", "simclrv2_distill"):
            if frac not in teachers:
                torch.manual_seed(cfg.train.seed)
                teacher = Classifier(copy.deepcopy(encoder), k, copy.deepcopy(head_layer))
                fit_classifier(teacher, xs, ys, FitConfig(**{**asdict(fit), "steps": sup_steps, "lr": 3e-4}),
                               desc="finetune", progress=cfg.progress)
                teachers[frac] = teacher
            if method == "simclrv2_finetune":
                logits, epochs = predict_logits(teachers[frac], x_te), sup_epochs
            else:
                d_steps = _fit_steps(len(x_tr), cfg.distill_epochs, cfg.fit_batch_size, cfg.min_supervised_steps)
                student, _ = distil(teachers[frac], x_tr, FitConfig(**{**asdict(fit), "steps": d_steps, "lr": 3e-4}),
                                    progress=cfg.progress)
                logits = predict_logits(student, x_te)
                epochs = d_steps * min(cfg.fit_batch_size, len(x_tr)) / len(x_tr)
        seconds = time.perf_counter() - t0
        if logits is None:
            row = Row(method, frac, None, None, None, round(seconds, 2), len(sub), absent_reason=absent)
        else:
            pred = logits.argmax(axis=1)
            png = out / f"confusion_{method}_{frac:g}.png"
            save_confusion(confusion_matrix(y_te, pred, labels=list(range(k))), classes,
                           f"{method} @ {frac:.0%} labels", png)
            row = Row(method, frac, round(float(accuracy_score(y_te, pred)), 4),
                      round(float(f1_score(y_te, pred, average="macro", labels=list(range(k)), zero_division=0)), 4),
                      round(epochs, 2) if epochs is not None else None, round(seconds, 2), len(sub),
                      confusion_png=png.name)
        rows.append(row)
        log.info("evaluate: %s", row)
        if on_row is not None:
            on_row(row)
    if probes:
        from xtalwatch.learn.evaluate.report import save_epoch_curve

        baselines = {r.label_fraction: r.accuracy for r in rows
                     if r.method == "supervised_scratch" and r.accuracy is not None}
        simclr_info["epoch_png"] = str(save_epoch_curve(probes, baselines, out / "epoch_curve.png"))
    conf = {k_: (str(v) if isinstance(v, Path) else v) for k_, v in asdict(cfg).items() if k_ not in ("train", "preprocess")}
    conf["train"] = cfg.train.model_dump(mode="json")
    conf["preprocess"] = "drop" if cfg.preprocess is not None else "none"
    return EvalResult(rows, classes, len(tr), len(te), n_skipped, simclr_info, conf)
