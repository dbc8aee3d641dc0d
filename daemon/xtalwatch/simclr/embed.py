"""Features of the trained encoder, for kNN, linear probes, maps and drift checks."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from xtalwatch.simclr.augment import to_float_nchw

__all__ = ["embed"]


@torch.no_grad()
def embed(encoder: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, 512) float32 features of uint8 (N, S, S, 3) RGB crops, on the encoder's device.

    The crops should be the size the encoder was trained at. BatchNorm runs in eval mode; the
    encoder's own mode is restored afterwards.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        out = [encoder(to_float_nchw(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)))
               .float().cpu() for i in range(0, len(images), batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 512), np.float32)
