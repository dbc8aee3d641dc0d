"""The NT-Xent contrastive loss of SimCLR (Chen et al. 2020, arXiv:2002.05709, eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["nt_xent_loss", "nt_xent_rows"]


def nt_xent_rows(z: torch.Tensor, rows: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent averaged over the anchors ``rows`` of ``z``, contrasted against every row of ``z``.

    ``z`` is (2N, D): rows ``0..N-1`` are the first views and ``N..2N-1`` the second views, so the
    positive of row ``i`` is row ``(i + N) mod 2N``. ``rows`` (M,) are the anchor indices; with all
    2N rows this is :func:`nt_xent_loss`. Under DDP each rank passes the gathered ``z`` and its own
    rows, and the mean over ranks is the global loss.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if z.ndim != 2 or z.shape[0] % 2 or z.shape[0] < 2:
        raise ValueError(f"z must be (2N, D) with N >= 1, got shape {tuple(z.shape)}")
    two_n = z.shape[0]
    # The exponentials overflow bf16 long before float32; the loss always runs in float32.
    with torch.autocast(z.device.type, enabled=False):
        zn = F.normalize(z.float(), dim=1)
        logits = zn[rows] @ zn.T / temperature  # (M, 2N) cosine similarities s_ik / T
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
        self_mask[torch.arange(rows.numel(), device=z.device), rows] = True
        logits = logits.masked_fill(self_mask, float("-inf"))  # the sum runs over k != i
        positives = (rows + two_n // 2) % two_n
        return F.cross_entropy(logits, positives)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy between two views of the same N images.

    With the 2N embeddings ordered so that images k's views are 2k-1 and 2k::

        L = (1/2N) · Σ_k [ l(2k−1, 2k) + l(2k, 2k−1) ],
        l(i, j) = −log( exp(s_ij/T) / Σ_{k≠i} exp(s_ik/T) ),  s = cosine similarity,  T = temperature

    Args:
        z1: (N, D) embeddings of the first views; ``z1[i]`` and ``z2[i]`` are views of image i.
        z2: (N, D) embeddings of the second views.
        temperature: T > 0.

    Returns:
        The scalar loss (float32). Identical embeddings everywhere give log(2N − 1).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z = torch.cat([z1, z2], dim=0)
    return nt_xent_rows(z, torch.arange(z.shape[0], device=z.device), temperature)
