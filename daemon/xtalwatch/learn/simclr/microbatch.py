"""A SimCLR step in micro-batches with the full batch's loss and gradient (GradCache).

NT-Xent couples every view with every other view of the batch, so a big step cannot simply be
split into smaller steps with accumulated gradients: that would change the loss (fewer
negatives). GradCache (Gao et al. 2021, arXiv:2101.06983) splits the *encoder* instead:

1. embed all views micro-batch by micro-batch without autograd (no activations kept);
2. compute the loss on the cached projections z and take dL/dz (cheap: z is (2B, 128));
3. per micro-batch, run the encoder again with autograd and backpropagate the cached dL/dz.

The loss and the parameter gradient are those of the full batch, given the projections; the
cost is one extra forward pass (about a third more compute). Memory holds the activations of one
micro-batch instead of all 2B views. Each micro-batch holds both views of its images, so
BatchNorm normalises over micro-batches (as it does per GPU under DDP without ``sync_bn``) and
its running statistics are updated once per micro-batch: the only difference from a whole step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["activation_bytes_per_view", "micro_batch_for", "step_splitter", "contrastive_backward", "PROCESS_FLOOR_BYTES"]

# The backward pass holds the saved activations plus the gradients of the layer it is in and a few
# temporaries; measured peak / saved bytes for ResNet-18 on CPU (bench/bench_memory.py) is below this.
_BACKWARD_OVERHEAD = 1.5

PROCESS_FLOOR_BYTES = 800 * 2**20  # a fresh process with the learning stack imported (docs/BENCHMARKS.md)


def _snapshot_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_buffers()}


def _restore_buffers(model: nn.Module, kept: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(kept[k])


def activation_bytes_per_view(model: nn.Module, image_size: int, channels_last: bool = True) -> int:
    """Bytes autograd saves for the backward pass per view of ``image_size`` px, counted exactly.

    Training-mode forwards of 2 and of 4 random views on the CPU, counting the distinct storages of
    the tensors autograd saves, parameters excluded; the difference is what one more view costs
    (what a forward saves once, whatever the batch, e.g. the kernel slices of ``small_map_conv``,
    is not per view). BatchNorm running statistics are restored afterwards, so the model is left as
    it was.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    device = next(model.parameters()).device
    kept = _snapshot_buffers(model)
    was_training = model.training
    model.train()

    def saved_bytes(views: int) -> int:
        seen: set[int] = set()
        alive: list[torch.UntypedStorage] = []  # so that no two saved tensors can share an address
        total = 0

        def pack(t: torch.Tensor) -> None:
            nonlocal total
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen and storage.data_ptr() not in params:
                seen.add(storage.data_ptr())
                alive.append(storage)
                total += storage.nbytes()
            # The storage is kept, not the tensor: a pack hook that returns an op's own output makes a
            # tensor <-> graph cycle that is never freed (measured: ~80 MB a call). No backward runs here.

        def unpack(_: None) -> torch.Tensor:
            raise RuntimeError("activation_bytes_per_view's graph only counts bytes; it has no backward")

        x = torch.rand(views, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            model(x)
        return total

    per_view = (saved_bytes(4) - saved_bytes(2)) // 2
    model.train(was_training)
    _restore_buffers(model, kept)
    return per_view


def micro_batch_for(batch: int, bytes_per_view: int, budget_bytes: float | None, views_per_image: int = 2) -> int:
    """Images per micro-batch so that a step's activations fit ``budget_bytes`` (None: the whole batch).

    Micro-batches are made equal (e.g. 256 images in 4 × 64, not 3 × 73 + 37), never below one
    image (``views_per_image`` views: 2 for SimCLR, 1 for a supervised step).
    """
    if budget_bytes is None:
        return batch
    most = max(1, int(budget_bytes // (views_per_image * bytes_per_view * _BACKWARD_OVERHEAD)))
    if most >= batch:
        return batch
    chunks = -(-batch // most)
    return -(-batch // chunks)


def step_splitter(max_memory_gb: float | None, model: nn.Module, image_size: int, *, views_per_image: int,
                  channels_last: bool = True, held_bytes: int = 0) -> Callable[[int], int]:
    """batch → images per micro-batch, so that a CPU training step stays under ``max_memory_gb`` GiB.

    What is left for activations: the budget less a fixed floor for the process
    (:data:`PROCESS_FLOOR_BYTES`), the gradients and optimiser state (about 3x the weights),
    ``held_bytes`` the caller keeps besides (a distillation's teacher and targets) and the step's
    float images (``2 + views_per_image`` per image: the float batch, its views and a micro-batch's
    copy). A constant, not the process's RSS now: the split, and so BatchNorm's batches and the
    losses, must be a function of the config alone, or a resumed run (a fresh process) would not
    replay the steps of an uninterrupted one. ``None`` or a model off the CPU: never split.
    """
    if max_memory_gb is None or next(model.parameters()).device.type != "cpu":
        return lambda batch: batch
    per_view = activation_bytes_per_view(model, image_size, channels_last)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    fixed = PROCESS_FLOOR_BYTES + 3 * weights + held_bytes
    image = 3 * image_size ** 2 * 4

    def micro(batch: int) -> int:
        left = max_memory_gb * 2**30 - fixed - (2 + views_per_image) * image * batch
        return micro_batch_for(batch, per_view, max(0.0, left), views_per_image)

    return micro


def contrastive_backward(forward: Callable[[torch.Tensor], torch.Tensor], v1: torch.Tensor, v2: torch.Tensor,
                         loss_of: Callable[[torch.Tensor], torch.Tensor], micro: int, *,
                         model: nn.Module | None = None,
                         no_sync: Callable[[], contextlib.AbstractContextManager] | None = None) -> torch.Tensor:
    """The loss of views ``v1``, ``v2`` (B, 3, S, S) each, with its gradient accumulated into the parameters.

    Args:
        forward: views (M, 3, S, S) → projections (M, D), in training mode (autocast included).
        loss_of: projections (2B, D), first views then second views → the scalar loss.
        micro: images per micro-batch; ``micro >= B`` is the plain step (one forward, one backward).
        model: the module behind ``forward``, whose BatchNorm running statistics the extra
            no-grad pass must not move (restored afterwards).
        no_sync: DDP's ``no_sync``: gradients are all-reduced once, after the last micro-batch.

    Returns:
        The detached loss.
    """
    b = v1.shape[0]
    if micro >= b:
        loss = loss_of(forward(torch.cat([v1, v2])))
        loss.backward()
        return loss.detach()
    spans = [(a, min(a + micro, b)) for a in range(0, b, micro)]
    # 1. projections of every view, without activations
    kept = _snapshot_buffers(model) if model is not None else None
    with torch.no_grad():
        parts = [forward(torch.cat([v1[a:e], v2[a:e]])) for a, e in spans]
    if model is not None and kept is not None:
        _restore_buffers(model, kept)
    z1 = torch.cat([p[: e - a] for p, (a, e) in zip(parts, spans, strict=True)])
    z2 = torch.cat([p[e - a:] for p, (a, e) in zip(parts, spans, strict=True)])
    # 2. the whole batch's loss and its gradient with respect to the projections
    z = torch.cat([z1, z2]).detach().requires_grad_(True)
    loss = loss_of(z)
    loss.backward()
    grad = z.grad
    assert grad is not None
    # 3. the encoder again, one micro-batch at a time, backpropagating the cached gradient
    for i, (a, e) in enumerate(spans):
        last = i == len(spans) - 1
        with no_sync() if (no_sync is not None and not last) else contextlib.nullcontext():
            out = forward(torch.cat([v1[a:e], v2[a:e]]))
            out.backward(torch.cat([grad[a:e], grad[b + a:b + e]]).to(out.dtype))
    return loss.detach()
