"""SimCLR training, read top to bottom: device, data, model, resume, optimiser, loop, finish.

One function, :func:`train`, takes a config and a dataset and returns a :class:`TrainResult`; no
globals. It starts from random weights, a local ImageNet state dict (``train.imagenet_weights``)
or a given encoder's weights (``init_encoder``: retraining's warm start from the serving model).
Everything random is a pure function of ``(seed, epoch)`` (data order) or ``(seed, step)``
(augmentations), so a run resumed from a checkpoint at step k replays exactly the batches and
views that an uninterrupted run would have seen. Run it under ``torchrun`` and
each rank takes its slice of the same global batch (see ``distributed.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from xtalwatch.config import TrainConfig
from xtalwatch.learn.simclr.augment import AugmentStrength, apply_view, sample_view_params, to_float_nchw
from xtalwatch.learn.simclr.checkpoint import load_checkpoint, save_checkpoint
from xtalwatch.learn.simclr.data import CropDataset
from xtalwatch.learn.simclr.distributed import (
    convert_sync_batchnorm,
    gather_with_grad,
    init_distributed,
    mean_across_ranks,
    shutdown_distributed,
)
from xtalwatch.learn.simclr.encoder import FEATURE_DIM, Encoder, build_encoder, use_small_stem
from xtalwatch.learn.simclr.heads import build_head
from xtalwatch.learn.simclr.loss import nt_xent_rows
from xtalwatch.learn.simclr.microbatch import contrastive_backward, step_splitter
from xtalwatch.learn.simclr.optim import build_optimizer, warmup_cosine

__all__ = ["SimCLRModel", "TrainResult", "DatasetTooSmall", "TrainingDiverged", "resolve_device", "train"]

log = logging.getLogger(__name__)


class DatasetTooSmall(ValueError):
    """Fewer usable images than ``train.min_images``; the message says how many of each."""


class TrainingDiverged(RuntimeError):
    """The loss (or a weight) stopped being finite; the last good checkpoint is left in place."""


class SimCLRModel(nn.Module):
    """Encoder then projection head: views (B, 3, S, S) in [0, 1] → projections (B, projection_dim)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path  # self-describing; xtalwatch.learn.simclr.load_encoder(checkpoint) rebuilds the encoder
    steps: int  # optimiser steps done in total, including those before a resume
    total_steps: int  # steps the plan asked for
    losses: list[float]  # one per step, from step 1
    batch_size: int  # global images per step at the end (smaller than asked after an OOM)
    seconds: float
    views_per_second: float  # augmented views per second over this process's steps
    data_fingerprint: str
    resumed_from_step: int = 0
    pairs_png: Path | None = None
    loss_png: Path | None = None
    warnings: list[str] = field(default_factory=list)
    micro_batch: int | None = None  # images per micro-batch when train.max_memory_gb split the steps


@dataclass
class _Plan:
    """How many images per step and how many steps; mutable because an OOM halves the batch."""

    batch_size: int
    n_images: int
    epochs: int
    max_steps: int | None

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n_images // self.batch_size)  # the last partial batch is dropped

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps is not None else self.epochs * self.steps_per_epoch


def resolve_device(choice: str) -> torch.device:
    """``train.device`` as a torch device: auto means CUDA when there is one."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _step_generator(seed: int, step: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, 0x51C1]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def _step_input(images: np.ndarray, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    """The step's crops, uint8 (B, S, S, 3) → float (B, 3, S, S) in [0, 1] on ``device``.

    The first allocation of each step on the device: where a batch too big for it first fails.
    """
    return to_float_nchw(torch.from_numpy(np.ascontiguousarray(images[idx])).to(device))


def train(cfg: TrainConfig, dataset: CropDataset, out_dir: Path, *, resume: bool = True,
          init_encoder: Encoder | None = None, stop_after_step: int | None = None,
          progress: bool = True, on_epoch: Callable[[int, Encoder], None] | None = None) -> TrainResult:
    """Train SimCLR on ``dataset``, writing checkpoints and pictures into ``out_dir``.

    Args:
        cfg: the ``train`` config section.
        dataset: model-size uint8 crops (see ``xtalwatch.learn.simclr.data``).
        out_dir: gets ``checkpoint.pt``, ``losses.json``, ``augment_pairs.png``, ``loss_curve.png``.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (same data required); a
            checkpoint wins over ``init_encoder``.
        init_encoder: start from this encoder's weights (copied; the projection head and the
            optimiser start fresh) instead of random or ImageNet ones. It must have the stem
            ``train.small_stem`` gives at ``train.image_size`` (ValueError otherwise), and should
            have been trained at that image size.
        stop_after_step: stop (with a checkpoint) once this many steps are done, as a kill would.
        progress: show the tqdm bar (rank 0 only).
        on_epoch: called as ``on_epoch(epoch, encoder)`` after each finished epoch (rank 0 only), e.g.
            to probe the features while training runs; it must leave the encoder as it found it.
    """
    if init_encoder is not None and init_encoder.small_stem != use_small_stem(cfg.image_size, cfg.small_stem):
        raise ValueError(f"init_encoder has small_stem={init_encoder.small_stem}, but train.small_stem "
                         f"{cfg.small_stem!r} at image_size {cfg.image_size} px gives "
                         f"{use_small_stem(cfg.image_size, cfg.small_stem)}; train from scratch instead")
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    warned: list[str] = []

    # -- device and processes -----------------------------------------------------------
    device = resolve_device(cfg.device)
    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    amp = cfg.amp and device.type == "cuda"  # bf16 autocast; CPU bf16 is slower than fp32
    try:
        # -- data ---------------------------------------------------------------------------
        n = len(dataset)
        if n < max(cfg.min_images, 2 * ctx.world_size):
            raise DatasetTooSmall(f"{n} usable images, at least {max(cfg.min_images, 2 * ctx.world_size)} "
                                  f"needed (train.min_images = {cfg.min_images})")
        if dataset.image_size != cfg.image_size:
            raise ValueError(f"dataset crops are {dataset.image_size} px but train.image_size is {cfg.image_size}")
        batch = min(cfg.batch_size, n)
        batch -= batch % ctx.world_size
        if batch != cfg.batch_size:
            warned.append(f"batch_size {cfg.batch_size} lowered to {batch} "
                          f"({n} images, {ctx.world_size} processes)")
            log.warning("train: %s", warned[-1])
        plan = _Plan(batch, n, cfg.epochs, cfg.max_steps)

        # -- model --------------------------------------------------------------------------
        torch.manual_seed(cfg.seed)
        encoder = build_encoder(cfg.image_size, cfg.small_stem, None if init_encoder else cfg.imagenet_weights)
        model = SimCLRModel(encoder, build_head(cfg.head, FEATURE_DIM, cfg.projection_dim))
        if init_encoder is not None:
            encoder.load_state_dict({k: v.detach().cpu() for k, v in init_encoder.state_dict().items()})
        if ctx.enabled and cfg.sync_bn:
            model = convert_sync_batchnorm(model, device.type)
        model_info = {"arch": "resnet18", "small_stem": encoder.small_stem, "image_size": cfg.image_size,
                      "head": cfg.head, "feature_dim": FEATURE_DIM, "projection_dim": cfg.projection_dim}

        # -- resume -------------------------------------------------------------------------
        ckpt_path = out_dir / "checkpoint.pt"
        step, losses, state = 0, [], None
        if resume and ckpt_path.is_file():
            state = load_checkpoint(ckpt_path)
            if state["data_fingerprint"] != dataset.fingerprint:
                raise ValueError(f"{ckpt_path} was trained on other data (fingerprint {state['data_fingerprint']}, "
                                 f"this dataset {dataset.fingerprint}); use another out_dir or resume=False")
            model.load_state_dict(state["model"])
            step, losses, plan.batch_size = state["step"], list(state["losses"]), state["batch_size"]
            log.info("train: resuming from %s at step %d", ckpt_path, step)
        resumed_from = step
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        micro_batch_of = step_splitter(cfg.max_memory_gb, model, cfg.image_size, views_per_image=2,
                                       channels_last=cfg.channels_last)

        # -- optimiser and schedule ---------------------------------------------------------
        optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(lambda: plan.total_steps, cfg.warmup_fraction))
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            del state
        raw_model = model
        if ctx.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        forward = torch.compile(model) if cfg.compile else model

        def save(at_step: int) -> None:
            if not all(bool(torch.isfinite(p).all()) for p in raw_model.parameters()):
                raise TrainingDiverged(f"a weight became non-finite by step {at_step}; "
                                       f"the last good checkpoint is kept at {ckpt_path}")
            if ctx.is_main:
                save_checkpoint(ckpt_path, {
                    "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": at_step, "batch_size": plan.batch_size,
                    "losses": losses, "config": cfg.model_dump(mode="json"), "model_info": model_info,
                    "data_fingerprint": dataset.fingerprint, "n_images": n, "world_size": ctx.world_size,
                    "torch_version": str(torch.__version__), "saved_at": time.time()})

        # -- the loop -----------------------------------------------------------------------
        strength = AugmentStrength.from_config(cfg)
        size, temperature = cfg.image_size, cfg.temperature
        pending: list[torch.Tensor] = []  # losses not yet copied to the host (saves a sync per step)

        def flush() -> None:
            if not pending:
                return
            values = torch.stack(pending).cpu().tolist()
            first = len(losses) + 1
            pending.clear()
            for k, v in enumerate(values):
                if not np.isfinite(v):
                    raise TrainingDiverged(f"loss became {v} at step {first + k}; the last good checkpoint "
                                           f"is kept at {ckpt_path} (try a lower train.lr)")
            losses.extend(values)

        bar = tqdm(total=plan.total_steps, initial=step, unit="step", dynamic_ncols=True,
                   disable=not (progress and ctx.is_main), desc="simclr")
        pairs_png = None
        micro_used: int | None = None

        def project(v: torch.Tensor) -> torch.Tensor:
            if cfg.channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                return forward(v)

        views_done, t_loop = 0, time.perf_counter()
        model.train()
        while step < plan.total_steps and (stop_after_step is None or step < stop_after_step):
            gbatch = plan.batch_size
            local_n = gbatch // ctx.world_size
            lo, hi = ctx.rank * local_n, (ctx.rank + 1) * local_n
            epoch, i = divmod(step, plan.steps_per_epoch)
            order = _epoch_order(n, cfg.seed, epoch)[i * gbatch:(i + 1) * gbatch]
            gen = _step_generator(cfg.seed, step)
            p1 = sample_view_params(gbatch, strength, size, gen).slice(lo, hi)
            p2 = sample_view_params(gbatch, strength, size, gen).slice(lo, hi)
            rows = torch.cat([torch.arange(lo, hi), torch.arange(gbatch + lo, gbatch + hi)]).to(device)

            def loss_of(z: torch.Tensor, rows: torch.Tensor = rows, local_n: int = local_n) -> torch.Tensor:
                # Anchors are taken from the gathered tensor: see distributed.py for why.
                z_all = torch.cat([gather_with_grad(z[:local_n]), gather_with_grad(z[local_n:])])
                return nt_xent_rows(z_all, rows, temperature)

            try:
                x = _step_input(dataset.images, order[lo:hi], device)
                with torch.no_grad():
                    v1, v2 = apply_view(x, p1, size), apply_view(x, p2, size)
                del x
                micro = micro_batch_of(local_n)
                if micro < local_n and micro != micro_used:
                    micro_used = micro
                    log.info("train: %d images per step run in micro-batches of %d (train.max_memory_gb %s)",
                             local_n, micro, cfg.max_memory_gb)
                optimizer.zero_grad(set_to_none=True)
                loss = contrastive_backward(project, v1, v2, loss_of, micro, model=raw_model,
                                            no_sync=model.no_sync if ctx.enabled else None)
                optimizer.step()
                scheduler.step()
            except torch.OutOfMemoryError as exc:
                optimizer.zero_grad(set_to_none=True)
                if ctx.enabled or gbatch < 4:
                    raise  # ranks cannot agree on a new batch size here; the error says which rank
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                plan.batch_size = gbatch // 2
                warned.append(f"out of memory at batch {gbatch} (step {step + 1}); retrying with "
                              f"{plan.batch_size}: {str(exc).splitlines()[0]}")
                log.warning("train: %s", warned[-1])
                bar.total = plan.total_steps
                continue
            if pairs_png is None and ctx.is_main:
                pairs_png = _pairs_png(v1, v2, out_dir)
            del v1, v2
            pending.append(mean_across_ranks(loss.detach()))
            step += 1
            views_done += 2 * gbatch
            bar.update(1)
            if step % cfg.log_every_steps == 0 or step == plan.total_steps:
                flush()
                rate = views_done / max(1e-9, time.perf_counter() - t_loop)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", views_s=f"{rate:.0f}",
                                lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
            if step % cfg.checkpoint_every_steps == 0:
                flush()
                save(step)
            if on_epoch is not None and ctx.is_main and cfg.max_steps is None and step % plan.steps_per_epoch == 0:
                t_hook = time.perf_counter()
                on_epoch(step // plan.steps_per_epoch, raw_model.encoder)
                t_loop += time.perf_counter() - t_hook  # views/s counts training, not the probe
        bar.close()

        # -- finish -------------------------------------------------------------------------
        flush()
        if step > resumed_from and step % cfg.checkpoint_every_steps != 0:
            save(step)
        elapsed = time.perf_counter() - t_loop
        loss_png = None
        if ctx.is_main:
            (out_dir / "losses.json").write_text(json.dumps({"losses": losses, "batch_size": plan.batch_size}))
            if losses:
                from xtalwatch.learn.simclr.plots import save_loss_curve
                loss_png = save_loss_curve(losses, out_dir / "loss_curve.png")
        return TrainResult(out_dir=out_dir, checkpoint=ckpt_path, steps=step, total_steps=plan.total_steps,
                           losses=losses, batch_size=plan.batch_size, seconds=time.perf_counter() - t0,
                           views_per_second=views_done / elapsed if elapsed > 0 else 0.0,
                           data_fingerprint=dataset.fingerprint, resumed_from_step=resumed_from,
                           pairs_png=pairs_png, loss_png=loss_png, warnings=warned, micro_batch=micro_used)
    finally:
        shutdown_distributed(ctx)


def _pairs_png(v1: torch.Tensor, v2: torch.Tensor, out_dir: Path) -> Path:
    from xtalwatch.learn.simclr.plots import save_pair_grid

    return save_pair_grid(v1, v2, out_dir / "augment_pairs.png")

