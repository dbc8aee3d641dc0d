"""DDP helpers for ``torchrun``: process-group set-up, all-gather and all-reduce that keep
gradients, and a BatchNorm synchronised across ranks that also works on CPU (gloo).

Gradient bookkeeping: every rank computes the loss of its own anchors against the gathered
embeddings of all ranks, taking its anchors *from the gathered tensor*. The backward of the
gather sums over ranks, so each rank's embeddings get W times the gradient of the global mean
loss; DDP's gradient averaging divides by W again. The result is exactly the single-process
gradient on the global batch, which tests/test_simclr_ddp.py checks.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "init_distributed", "shutdown_distributed", "gather_with_grad", "all_reduce_with_grad",
           "GlobalBatchNorm", "convert_sync_batchnorm", "mean_across_ranks"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistContext:
    """Join the process group that torchrun describes in the environment (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        owns = True
    return DistContext(rank, world, local, owns)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss depends on this rank's rows
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]


class _AllReduceWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-sized (n, ...) tensors from all ranks into (W·n, ...), keeping gradients."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, differentiable."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllReduceWithGrad.apply(x)


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics cover the global batch; works with gloo on CPU.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors, so this is the CPU alternative (two
    differentiable all-reduces per layer: the mean, then the centred second moment).
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.ndim not in (2, 3, 4):  # replaces BatchNorm1d (heads) as well as BatchNorm2d
            raise ValueError(f"expected 2-D to 4-D input, got {x.ndim}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0] + list(range(2, x.ndim))
        count = x.numel() // x.shape[1] * dist.get_world_size()
        mean = all_reduce_with_grad(x.sum(dim=dims)) / count
        shape = [1, -1] + [1] * (x.ndim - 2)
        centred = x - mean.view(shape)
        var = all_reduce_with_grad((centred * centred).sum(dim=dims)) / count
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * count / max(1, count - 1), alpha=m)
            self.num_batches_tracked.add_(1)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def convert_sync_batchnorm(model: nn.Module, device_type: str) -> nn.Module:
    """torch's SyncBatchNorm on GPU; :class:`GlobalBatchNorm` on CPU, where torch's refuses."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device_type)
    return model


def mean_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of a detached tensor over ranks (for logging)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


