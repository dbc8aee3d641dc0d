"""Batched two-view augmentations: ranges, exact geometry, determinism, slicing."""

from __future__ import annotations

import pytest
import torch
from xtalwatch.learn.simclr.augment import (
    AugmentStrength,
    apply_view,
    augment_pair,
    sample_view_params,
    to_float_nchw,
)

NONE = AugmentStrength(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_rotate=False, color_jitter=0.0,
                       color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, noise_std=0.0)


def _images(b: int = 6, size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, size, size, 3), generator=g, dtype=torch.uint8)


def test_views_have_the_right_shape_and_range() -> None:
    v1, v2 = augment_pair(_images(), AugmentStrength(noise_std=0.1), 16, torch.Generator().manual_seed(1))
    for v in (v1, v2):
        assert v.shape == (6, 3, 16, 16) and v.dtype == torch.float32
        assert float(v.min()) >= 0 and float(v.max()) <= 1
    assert not torch.equal(v1, v2)


def test_no_augmentation_is_the_identity() -> None:
    x = to_float_nchw(_images())
    p = sample_view_params(6, NONE, 24, torch.Generator().manual_seed(0))
    torch.testing.assert_close(apply_view(x, p, 24), x, atol=1e-5, rtol=0)


def test_rotations_and_flips_are_exact_pixel_permutations() -> None:
    x = to_float_nchw(_images(b=64))
    geometry_only = AugmentStrength(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_rotate=True, color_jitter=0.0,
                                    color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    y = apply_view(x, sample_view_params(64, geometry_only, 24, torch.Generator().manual_seed(2)), 24)
    candidates = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(2, 3))
        candidates += [r, torch.flip(r, dims=(3,))]
    for i in range(64):
        assert min(float((y[i] - c[i]).abs().max()) for c in candidates) < 1e-5


def test_greyscale_views_have_equal_channels() -> None:
    grey = AugmentStrength(grayscale_prob=1.0, color_jitter_prob=0.0, blur_prob=0.0)
    v, _ = augment_pair(_images(), grey, 16, torch.Generator().manual_seed(0))
    torch.testing.assert_close(v[:, 0], v[:, 1])
    torch.testing.assert_close(v[:, 1], v[:, 2])


def test_blur_smooths() -> None:
    x = to_float_nchw(_images())
    blur = AugmentStrength(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_rotate=False, color_jitter_prob=0.0,
                           grayscale_prob=0.0, blur_prob=1.0, blur_sigma_max=200.0)
    y = apply_view(x, sample_view_params(6, blur, 24, torch.Generator().manual_seed(0)), 24)
    assert float(y.diff(dim=3).abs().mean()) < 0.5 * float(x.diff(dim=3).abs().mean())


def test_same_seed_same_views_and_slices_match_the_global_batch() -> None:
    x = to_float_nchw(_images(b=8))
    s = AugmentStrength(noise_std=0.05)
    p = sample_view_params(8, s, 16, torch.Generator().manual_seed(5))
    q = sample_view_params(8, s, 16, torch.Generator().manual_seed(5))
    torch.testing.assert_close(apply_view(x, p, 16), apply_view(x, q, 16))
    no_noise = AugmentStrength()
    p = sample_view_params(8, no_noise, 16, torch.Generator().manual_seed(5))
    whole = apply_view(x, p, 16)
    torch.testing.assert_close(apply_view(x[4:], p.slice(4, 8), 16), whole[4:])


def test_bad_strength_is_refused() -> None:
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentStrength(crop_scale=(0.8, 0.5))
    with pytest.raises(ValueError, match="grayscale_prob"):
        AugmentStrength(grayscale_prob=1.5)
    with pytest.raises(ValueError, match="uint8"):
        to_float_nchw(torch.zeros(2, 8, 8, 3))


def test_colour_ramp_scales_channels_along_one_direction() -> None:
    """The polariser ramp: a flat grey image becomes a per-channel linear ramp, brighter on one side."""
    ramp = AugmentStrength(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_rotate=False, color_jitter=0.0,
                           color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, gradient=0.25, gradient_prob=1.0)
    x = torch.full((8, 3, 24, 24), 0.5)
    p = sample_view_params(8, ramp, 24, torch.Generator().manual_seed(3))
    y = apply_view(x, p, 24)
    assert bool((p.gradient != 0).all()) and float(p.gradient.abs().max()) <= 0.25
    # the ramp x*cos + y*sin spans +-(|cos| + |sin|) over the view, times the slope, times the grey 0.5
    reach = (p.gradient_angle.cos().abs() + p.gradient_angle.sin().abs()).view(-1, 1)
    spread = y.amax(dim=(2, 3)) - y.amin(dim=(2, 3))
    torch.testing.assert_close(spread, p.gradient.abs() * reach, atol=1e-4, rtol=1e-3)
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_gamma_keeps_black_and_white_and_moves_the_middle() -> None:
    gamma = AugmentStrength(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_rotate=False, color_jitter=0.0,
                            color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, gamma=(0.5, 2.0), gamma_prob=1.0)
    x = torch.zeros(16, 3, 8, 8)
    x[:, :, :, 4:] = 1.0
    x[:, :, 0, 0] = 0.5
    p = sample_view_params(16, gamma, 8, torch.Generator().manual_seed(4))
    y = apply_view(x, p, 8)
    assert float(p.gamma.min()) >= 0.5 and float(p.gamma.max()) <= 2.0
    torch.testing.assert_close(y[:, :, :, 5:], torch.ones(16, 3, 8, 3))
    assert float(y[:, :, 1:, :3].max()) < 1e-3
    torch.testing.assert_close(y[:, 0, 0, 0], 0.5 ** p.gamma, atol=1e-4, rtol=0)


def test_the_new_draws_leave_the_old_ones_alone() -> None:
    """Ramp and gamma are drawn after everything else: the geometry and colour draws do not move."""
    base = AugmentStrength()
    more = AugmentStrength(gradient=0.25, gradient_prob=0.5, gamma=(0.6, 1.6), gamma_prob=0.5)
    a = sample_view_params(5, base, 16, torch.Generator().manual_seed(9))
    b = sample_view_params(5, more, 16, torch.Generator().manual_seed(9))
    assert torch.equal(a.theta, b.theta) and torch.equal(a.brightness, b.brightness) and a.noise_seed == b.noise_seed
