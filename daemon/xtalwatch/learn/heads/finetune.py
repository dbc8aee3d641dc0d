"""SimCLRv2 semi-supervised learning (Chen et al. 2020, arXiv:2006.10029), and plain supervised training.

*Fine-tune*: keep the encoder and the first layer of the projection head (Linear → BN → ReLU),
put a linear classifier on top, and train the whole network on the labelled fraction (v2 §2,
"fine-tuning from a middle layer of the projection head").

*Distil*: a student of the same architecture learns the fine-tuned teacher's softened
predictions on every training image, labelled or not (v2 eq. 2, self-distillation); the
unlabelled images finally carry label information.

Supervised baselines (ResNet-18 from scratch or ImageNet) are the same loop without the
projection layer. Every loop is class-balanced, mildly augmented and seeded.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from xtalwatch.learn.features import inference_batch_size
from xtalwatch.learn.heads.linear import class_weights
from xtalwatch.learn.simclr.augment import AugmentStrength, apply_view, sample_view_params, to_float_nchw
from xtalwatch.learn.simclr.encoder import FEATURE_DIM
from xtalwatch.learn.simclr.microbatch import step_splitter

__all__ = ["Classifier", "FitConfig", "fit_classifier", "distil", "predict_logits"]

log = logging.getLogger(__name__)

# Supervised augmentation: geometry (a crystal has no "up") and a little colour, no more; the
# strong SimCLR recipe would fight the labels.
_SUPERVISED_AUG = AugmentStrength(crop_scale=(0.5, 1.0), color_jitter=0.4, color_jitter_prob=0.5,
                                  grayscale_prob=0.0, blur_prob=0.0)


class Classifier(nn.Module):
    """encoder → [projection layer 0] → Linear(K): (B, 3, S, S) floats in [0, 1] → (B, K) logits."""

    def __init__(self, encoder: nn.Module, n_classes: int, proj_layer: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.proj = proj_layer if proj_layer is not None else nn.Identity()
        width = proj_layer[0].out_features if proj_layer is not None else FEATURE_DIM
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.proj(self.encoder(x)))


@dataclass(frozen=True)
class FitConfig:
    """Steps are counted, not epochs: a 5 % label fraction needs many passes, 100 % few."""

    steps: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    distill_temperature: float = 1.0  # v2 uses τ = 1 for self-distillation
    flip_rotate: bool = True  # train.flip_rotate: False where an image's orientation carries meaning
    device: str = "cpu"  # where the model trains; the crops stay on the host and go over one batch at a time
    # train.max_memory_gb, passed by the caller: on CPU a batch whose activations would not fit runs in
    # micro-batches whose gradients add up to the whole batch's (exact: these losses are sums over
    # images; BatchNorm sees the micro-batches). None: never split.
    max_memory_gb: float | None = None


def _batches(n: int, batch: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    order: np.ndarray = np.zeros(0, np.int64)
    for _ in range(steps):
        if len(order) < batch:
            order = np.concatenate([order, rng.permutation(n)])
        idx, order = order[:batch], order[batch:]
        yield idx


def _views(images: np.ndarray, idx: np.ndarray, size: int, gen: torch.Generator, cfg: FitConfig) -> torch.Tensor:
    x = to_float_nchw(torch.from_numpy(np.ascontiguousarray(images[np.sort(idx)])).to(cfg.device))
    strength = _SUPERVISED_AUG if cfg.flip_rotate else dataclasses.replace(_SUPERVISED_AUG, flip_rotate=False)
    views = apply_view(x, sample_view_params(len(idx), strength, size, gen), size)
    # NHWC: about 3x faster convolutions on CPU than NCHW for ResNet-18 (measured, docs/BENCHMARKS.md)
    return views.contiguous(memory_format=torch.channels_last)


def _spans(batch: int, micro: int) -> list[tuple[int, int]]:
    spans = [(a, min(a + micro, batch)) for a in range(0, batch, micro)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < 2:  # BatchNorm needs two rows: fold a lone one in
        spans[-2:] = [(spans[-2][0], batch)]
    return spans


def _accumulated_step(model: nn.Module, views: torch.Tensor, loss_share: Callable[[torch.Tensor, slice], torch.Tensor],
                      micro: int) -> float:
    """Backpropagate the whole batch's loss through ``model`` in micro-batches of ``micro`` images.

    ``loss_share(logits, rows)`` is the part of the batch's loss that the rows ``rows`` contribute
    (the loss is a sum over images, so the parts' gradients add up to the whole one's). Returns the loss.
    """
    total = 0.0
    for a, e in _spans(len(views), micro):
        part = loss_share(model(views[a:e]), slice(a, e))
        part.backward()
        total += float(part.detach())
    return total


def _optimiser(model: nn.Module, cfg: FitConfig, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    return opt, sched


def fit_classifier(model: Classifier, images: np.ndarray, labels: np.ndarray, cfg: FitConfig,
                   desc: str = "fit", progress: bool = True) -> list[float]:
    """Train ``model`` on uint8 (N, S, S, 3) crops and int labels; returns the loss per step."""
    if len(images) == 0:
        raise ValueError("no labelled images to train on")
    torch.manual_seed(cfg.seed)
    size = images.shape[1]
    n_classes = model.fc.out_features
    weight = torch.from_numpy(class_weights(np.asarray(labels), n_classes)).to(cfg.device)
    y_all = torch.from_numpy(np.asarray(labels, np.int64)).to(cfg.device)
    batch = min(cfg.batch_size, len(images))
    gen = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    model.to(cfg.device, memory_format=torch.channels_last)
    opt, sched = _optimiser(model, cfg, cfg.steps)  # after the move: AdamW state lives beside the weights
    micro_of = step_splitter(cfg.max_memory_gb, model, size, views_per_image=1)
    model.train()
    for idx in tqdm(_batches(len(images), batch, cfg.steps, cfg.seed), total=cfg.steps, desc=desc,
                    disable=not progress, leave=False, dynamic_ncols=True):
        idx = np.sort(idx)
        if len(idx) < 2:  # BatchNorm needs two rows
            continue
        y = y_all[idx]
        norm = weight[y].sum()  # cross_entropy's weighted mean, over the whole batch

        def share(logits: torch.Tensor, rows: slice, y: torch.Tensor = y, norm: torch.Tensor = norm) -> torch.Tensor:
            return F.cross_entropy(logits, y[rows], weight=weight, reduction="sum") / norm

        opt.zero_grad(set_to_none=True)
        losses.append(_accumulated_step(model, _views(images, idx, size, gen, cfg), share, micro_of(len(idx))))
        opt.step()
        sched.step()
    model.eval()
    return losses


@torch.inference_mode()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """(N, K) logits of uint8 (N, S, S, 3) crops (a memmap is read a batch at a time), eval mode.

    ``batch_size`` None: ``inference_batch_size`` of the crops' side, so large crops use small batches.
    """
    model.eval()
    device = next(model.parameters()).device
    batch_size = batch_size or inference_batch_size(images.shape[1])
    # np.array copies one batch: torch cannot wrap a read-only memmap slice
    out = [model(to_float_nchw(torch.from_numpy(np.array(images[i:i + batch_size])).to(device))
                 .contiguous(memory_format=torch.channels_last)).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.fc.out_features), np.float32)


def distil(teacher: Classifier, images: np.ndarray, cfg: FitConfig, desc: str = "distil",
           progress: bool = True) -> tuple[Classifier, list[float]]:
    """Self-distillation: a copy of the teacher learns its soft labels on every image in ``images``.

    The teacher's targets are computed once on the un-augmented crops; the student sees augmented
    views, so it must agree with the teacher under the same geometry changes the labels survive.
    """
    tau = cfg.distill_temperature
    targets = F.softmax(torch.from_numpy(predict_logits(teacher, images)) / tau, dim=1).to(cfg.device)
    student = copy.deepcopy(teacher).to(cfg.device)
    torch.manual_seed(cfg.seed)
    size = images.shape[1]
    batch = min(cfg.batch_size, len(images))
    opt, sched = _optimiser(student, cfg, cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses: list[float] = []
    student.to(memory_format=torch.channels_last)
    teacher_bytes = sum(p.numel() * p.element_size() for p in teacher.parameters()) + targets.numel() * 4
    micro_of = step_splitter(cfg.max_memory_gb, student, size, views_per_image=1, held_bytes=teacher_bytes)
    student.train()
    for idx in tqdm(_batches(len(images), batch, cfg.steps, cfg.seed + 1), total=cfg.steps, desc=desc,
                    disable=not progress, leave=False, dynamic_ncols=True):
        idx = np.sort(idx)
        if len(idx) < 2:
            continue
        target = targets[torch.from_numpy(idx).to(cfg.device)]

        def share(logits: torch.Tensor, rows: slice, target: torch.Tensor = target) -> torch.Tensor:
            return -(target[rows] * F.log_softmax(logits / tau, dim=1)).sum() / len(target)

        opt.zero_grad(set_to_none=True)
        losses.append(_accumulated_step(student, _views(images, idx, size, gen, cfg), share, micro_of(len(idx))))
        opt.step()
        sched.step()
    student.eval()
    return student, losses
