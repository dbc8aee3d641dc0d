"""Pictures of a training run for a person to look at: augmented pairs and the loss curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["save_pair_grid", "save_loss_curve"]


def save_pair_grid(v1: torch.Tensor, v2: torch.Tensor, path: Path, max_pairs: int = 16) -> Path:
    """A PNG of pairs of views: each column is one image, top row view 1, bottom row view 2."""
    import cv2

    n = min(max_pairs, v1.shape[0])
    pad = 2

    def row(v: torch.Tensor) -> np.ndarray:
        tiles = (v[:n].detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy())
        tiles = [np.pad(t, ((pad, pad), (pad, pad), (0, 0)), constant_values=255) for t in tiles]
        return np.concatenate(tiles, axis=1)

    grid = np.concatenate([row(v1), row(v2)], axis=0)
    scale = max(1, 96 // v1.shape[-1])  # small crops are enlarged so that a person can see them
    grid = np.kron(grid, np.ones((scale, scale, 1), dtype=np.uint8))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path


def save_loss_curve(losses: list[float], path: Path, title: str = "SimCLR NT-Xent loss") -> Path:
    """A PNG of the per-step loss with a moving average."""
    from xtalwatch.figures import pyplot, save_figure

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="per step")
    if len(losses) >= 10:
        k = max(2, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=1.6, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
