"""Projection heads: the SimCLR MLP and the deeper SimCLRv2 one.

The loss is computed on the head's output; the encoder's 512-d features are what later
classifiers use (SimCLR paper, section 4.2). The layers are kept in ``head.layers`` so that
SimCLRv2 fine-tuning can start from the first one (Chen et al. 2020b, arXiv:2006.10029).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

__all__ = ["ProjectionHead", "build_head"]


class ProjectionHead(nn.Module):
    """An MLP of ``len(dims) - 1`` layers: Linear → BatchNorm → ReLU, the last without ReLU.

    SimCLR: dims (512, 512, 128) and no BatchNorm after the last layer, as the issue asks for
    512→512→128 with BatchNorm and ReLU in between. SimCLRv2: (512, 512, 512, 128) with BatchNorm
    on every layer, as in the v2 paper.
    """

    def __init__(self, dims: tuple[int, ...], last_bn: bool):
        super().__init__()
        if len(dims) < 2 or min(dims) < 1:
            raise ValueError(f"dims must list at least an input and an output size, got {dims}")
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            last = i == len(dims) - 2
            block: list[nn.Module] = [nn.Linear(d_in, d_out, bias=last and not last_bn)]
            if not last or last_bn:
                block.append(nn.BatchNorm1d(d_out))
            if not last:
                block.append(nn.ReLU(inplace=True))
            layers.append(nn.Sequential(*block))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):  # noqa: D102 - (B, dims[0]) → (B, dims[-1])
        return self.layers(x)


def build_head(kind: Literal["simclr", "simclrv2"], in_dim: int = 512, out_dim: int = 128) -> ProjectionHead:
    """The SimCLR (2 layers) or SimCLRv2 (3 layers) projection head."""
    if kind == "simclr":
        return ProjectionHead((in_dim, in_dim, out_dim), last_bn=False)
    if kind == "simclrv2":
        return ProjectionHead((in_dim, in_dim, in_dim, out_dim), last_bn=True)
    raise ValueError(f"head must be 'simclr' or 'simclrv2', got {kind!r}")
