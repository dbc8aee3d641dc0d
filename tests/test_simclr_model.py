"""Encoder, projection heads, local ImageNet weights and embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import resnet18
from xtalwatch.learn.features import embed
from xtalwatch.learn.simclr import build_encoder, build_head
from xtalwatch.learn.simclr.encoder import use_small_stem


@pytest.mark.parametrize("size", [16, 32, 64, 96])
def test_auto_stem_is_the_standard_one_at_every_size(size: int) -> None:
    # Chosen from measured speed and probe accuracy per CPU-minute (docs/simclr.md, "Speed").
    assert not use_small_stem(size) and not use_small_stem(size, "auto")
    enc = build_encoder(size)
    assert enc.small_stem is False and enc.backbone.conv1.kernel_size == (7, 7)
    assert isinstance(enc.backbone.maxpool, torch.nn.MaxPool2d)


def test_small_stem_is_there_when_asked_for() -> None:
    assert use_small_stem(96, True) and not use_small_stem(32, False)
    enc = build_encoder(32, small_stem=True)
    assert enc.backbone.conv1.kernel_size == (3, 3) and isinstance(enc.backbone.maxpool, torch.nn.Identity)


@pytest.mark.parametrize("size", [16, 96])
def test_encoder_gives_512_features(size: int) -> None:
    enc = build_encoder(size).eval()
    with torch.no_grad():
        assert enc(torch.rand(2, 3, size, size)).shape == (2, 512)


@pytest.mark.parametrize(("kind", "n_layers"), [("simclr", 2), ("simclrv2", 3)])
def test_heads(kind: str, n_layers: int) -> None:
    head = build_head(kind)
    assert len(head.layers) == n_layers
    assert head(torch.randn(4, 512)).shape == (4, 128)
    assert isinstance(head.layers[0][1], torch.nn.BatchNorm1d) and isinstance(head.layers[0][2], torch.nn.ReLU)
    with pytest.raises(ValueError, match="head"):
        build_head("byol")  # type: ignore[arg-type]


def test_imagenet_weights_come_from_a_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = resnet18(weights=None)
    weights = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), weights)
    big = build_encoder(96, imagenet_weights=weights)
    torch.testing.assert_close(big.backbone.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    torch.testing.assert_close(big.backbone.conv1.weight, reference.conv1.weight)
    small = build_encoder(32, small_stem=True, imagenet_weights=weights)  # no 7x7 stem; the rest is
    torch.testing.assert_close(small.backbone.layer4[1].bn2.weight, reference.layer4[1].bn2.weight)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_encoder(32, imagenet_weights=tmp_path / "missing.pth")
    torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision ResNet-18"):
        build_encoder(32, imagenet_weights=tmp_path / "bad.pth")


def test_embed_returns_features_and_restores_mode() -> None:
    enc = build_encoder(16).train()
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    feats = embed(enc, images, batch_size=2)
    assert feats.shape == (5, 512) and feats.dtype == np.float32
    assert enc.training
    np.testing.assert_allclose(embed(enc, images[:1], batch_size=8), feats[:1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        embed(enc, images.astype(np.float32))
