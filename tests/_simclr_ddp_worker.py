"""Run by tests/test_simclr_ddp.py under ``torchrun --nproc_per_node=2`` (gloo, CPU), and imported
by it for the single-process reference, so both sides run the very same code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from xtalwatch.config import TrainConfig
from xtalwatch.learn.simclr.data import from_arrays
from xtalwatch.learn.simclr.distributed import convert_sync_batchnorm, gather_with_grad, init_distributed
from xtalwatch.learn.simclr.encoder import build_encoder
from xtalwatch.learn.simclr.heads import build_head
from xtalwatch.learn.simclr.loss import nt_xent_rows
from xtalwatch.learn.simclr.train import SimCLRModel, train

GLOBAL_BATCH = 8
# A small lr: see the comment on float noise in the test.
CFG = TrainConfig(image_size=16, batch_size=GLOBAL_BATCH, max_steps=3, min_images=8, checkpoint_every_steps=100,
                  sync_bn=True, device="cpu", seed=3, lr=1e-5)


def images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)


def training_losses(out_dir: Path) -> list[float]:
    return train(CFG, from_arrays(images()), out_dir, progress=False).losses


def loss_and_gradient() -> tuple[float, torch.Tensor]:
    """Global loss and gradient on one fixed global batch, the way train() computes them."""
    ctx = init_distributed("cpu")
    torch.manual_seed(0)
    model = SimCLRModel(build_encoder(16), build_head("simclr"))
    if ctx.enabled:
        model = convert_sync_batchnorm(model, "cpu")
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.rand(GLOBAL_BATCH, 3, 16, 16, generator=g), torch.rand(GLOBAL_BATCH, 3, 16, 16, generator=g)
    n = GLOBAL_BATCH // ctx.world_size
    lo, hi = ctx.rank * n, (ctx.rank + 1) * n
    ddp = torch.nn.parallel.DistributedDataParallel(model) if ctx.enabled else model
    z = ddp(torch.cat([v1[lo:hi], v2[lo:hi]]))
    z_all = torch.cat([gather_with_grad(z[:n]), gather_with_grad(z[n:])])
    rows = torch.cat([torch.arange(lo, hi), torch.arange(GLOBAL_BATCH + lo, GLOBAL_BATCH + hi)])
    loss = nt_xent_rows(z_all, rows, 0.5)
    loss.backward()
    total = loss.detach().clone()
    if ctx.enabled:
        torch.distributed.all_reduce(total)
        total /= ctx.world_size
    return float(total), torch.cat([p.grad.flatten() for p in model.parameters()])


if __name__ == "__main__":
    out = Path(sys.argv[1])
    loss, grad = loss_and_gradient()  # joins the process group; train() reuses it
    losses = training_losses(out / "run")
    if torch.distributed.get_rank() == 0:
        torch.save(grad, out / "grad.pt")
        (out / "result.json").write_text(json.dumps({"loss": loss, "losses": losses}))
    torch.distributed.destroy_process_group()
