"""A convolution whose CPU backward is fast when its output map is tiny (at most 2 x 2).

At 32-64 px crops, ResNet-18's last blocks run on 1 x 1 and 2 x 2 maps. There, oneDNN's CPU
backward for a 3 x 3 convolution costs 30-40 times its forward (measured: 320 ms against 9 ms for
512 channels at batch 512), and it was most of a 32 px SimCLR step. When the output map has at most
four positions, the convolution is computed exactly as one matrix product per output position: the
input window that position sees, times the slice of the kernel that lands on it. Same parameters,
same state dict, same result (to float rounding); only CPU training changes: GPUs keep cuDNN, and a
forward without autograd (inference, embedding) keeps oneDNN, whose forward is fast. Measured in
docs/BENCHMARKS.md ("The CPU step at small crops").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SmallMapConv2d", "use_small_map_convs", "MAX_POSITIONS"]

MAX_POSITIONS = 4  # output maps of up to 2 x 2; from 4 x 4 on, copying the windows costs more than it saves


def _window(out_index: int, size: int, kernel: int, stride: int, padding: int) -> tuple[int, int, int]:
    """Input rows [start, stop) that one output row sees, and the kernel row that lands on start."""
    first = out_index * stride - padding
    start, stop = max(0, first), min(size, first + kernel)
    return start, stop, start - first


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes tiny CPU output maps as per-position matrix products when training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Only a forward that will be backpropagated: oneDNN's forward alone is fast, and the per-position
        # products copy kernel slices on every call (inference at batch 1 and 64 px: 16 ms plain, 90 ms here).
        backward_follows = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if (not backward_follows or x.device.type != "cpu" or self.groups != 1 or self.dilation != (1, 1)
                or self.padding_mode != "zeros" or isinstance(self.padding, str)):
            return super().forward(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        height, width = x.shape[-2:]
        out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
        if out_h * out_w > MAX_POSITIONS:
            return super().forward(x)
        columns = []
        for i in range(out_h):
            r0, r1, kr = _window(i, height, kh, sh, ph)
            for j in range(out_w):
                c0, c1, kc = _window(j, width, kw, sw, pw)
                kernel = self.weight[:, :, kr:kr + r1 - r0, kc:kc + c1 - c0]
                columns.append(F.linear(x[:, :, r0:r1, c0:c1].flatten(1), kernel.flatten(1), self.bias))
        return torch.stack(columns, dim=-1).view(x.shape[0], self.out_channels, out_h, out_w)


def use_small_map_convs(module: nn.Module) -> nn.Module:
    """Replace every plain ``nn.Conv2d`` inside ``module`` by a ``SmallMapConv2d`` sharing its parameters."""
    for name, child in module.named_children():
        if type(child) is nn.Conv2d:
            replacement = SmallMapConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                         child.padding, child.dilation, child.groups, child.bias is not None,
                                         child.padding_mode)
            replacement.weight = child.weight
            replacement.bias = child.bias
            setattr(module, name, replacement)
        else:
            use_small_map_convs(child)
    return module
