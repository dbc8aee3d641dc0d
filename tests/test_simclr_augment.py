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
