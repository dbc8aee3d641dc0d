"""The tiny-map convolution: the same numbers as nn.Conv2d, forward and backward, at every shape."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from xtalwatch.learn.simclr import build_encoder
from xtalwatch.learn.simclr.small_map_conv import SmallMapConv2d, use_small_map_convs


@pytest.mark.parametrize(("in_hw", "kernel", "stride", "padding", "bias"), [
    ((1, 1), 3, 1, 1, False),   # layer4 at 32 px: only the kernel's centre sees the input
    ((2, 2), 3, 1, 1, False),   # layer4 at 64 px
    ((2, 2), 3, 2, 1, True),    # stride 2 down to 1 x 1
    ((4, 4), 3, 2, 1, False),   # stride 2 down to 2 x 2, windows cut by the padding
    ((2, 2), 1, 2, 0, False),   # a downsample shortcut
    ((3, 2), 3, 2, 1, True),    # not square
    ((8, 8), 3, 1, 1, False),   # large map: falls back to nn.Conv2d
])
def test_it_computes_what_conv2d_computes(in_hw, kernel, stride, padding, bias) -> None:
    torch.manual_seed(0)
    ref = nn.Conv2d(6, 5, kernel, stride, padding, bias=bias)
    fast = use_small_map_convs(nn.Sequential(copy.deepcopy(ref)))[0]
    assert isinstance(fast, SmallMapConv2d)
    x = torch.randn(4, 6, *in_hw)
    for layout in (torch.contiguous_format, torch.channels_last):
        xr = x.detach().clone().contiguous(memory_format=layout).requires_grad_(True)
        xf = x.detach().clone().contiguous(memory_format=layout).requires_grad_(True)
        yr, yf = ref(xr), fast(xf)
        assert yf.shape == yr.shape
        torch.testing.assert_close(yf, yr, rtol=1e-5, atol=1e-5)
        grad = torch.randn_like(yr)
        yr.backward(grad)
        yf.backward(grad)
        torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
        ref.zero_grad()
        fast.zero_grad()
    with torch.inference_mode():  # no backward follows: oneDNN's own forward, the same numbers
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [32, 64])
def test_the_encoder_uses_it_and_keeps_torchvision_state_dicts(size: int) -> None:
    enc = build_encoder(size)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, SmallMapConv2d) for m in convs)
    plain = resnet18(weights=None)
    plain.fc = nn.Identity()
    assert enc.backbone.load_state_dict(plain.state_dict()) is not None  # strict: same keys
    x = torch.rand(8, 3, size, size)
    enc.eval()
    plain.eval()  # train-mode BatchNorm on 1 x 1 maps would magnify float rounding past any tolerance
    with torch.no_grad():
        torch.testing.assert_close(enc(x), plain((x - enc.mean) / enc.std), rtol=1e-4, atol=1e-4)
