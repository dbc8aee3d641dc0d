"""The ResNet-18 encoder: torchvision's network without its classifier, 512-d features.

Images go in as float RGB in [0, 1], (B, 3, H, W); the ImageNet normalisation is part of the
module, so whoever embeds images later cannot forget it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18

from xtalwatch.learn.simclr.small_map_conv import use_small_map_convs

__all__ = ["Encoder", "build_encoder", "use_small_stem", "FEATURE_DIM"]

log = logging.getLogger(__name__)

FEATURE_DIM = 512
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def use_small_stem(image_size: int, small_stem: bool | str = "auto") -> bool:
    """Whether to use the 3x3 stride-1 stem; ``"auto"`` chooses torchvision's standard stem.

    Measured, not habit (docs/simclr.md, "Speed"): at 32-64 px the small stem keeps 16x the
    pixels through every residual block, so a CPU step costs about 9x more, and on the same wall
    time the standard stem's features probe better. It stays available as ``small_stem: true``
    (e.g. long GPU runs). ``image_size`` is kept so that callers need not know the rule.
    """
    if small_stem == "auto":
        return False
    return bool(small_stem)


class Encoder(nn.Module):
    """ResNet-18 trunk with ``fc`` removed: (B, 3, H, W) floats in [0, 1] → (B, 512) features."""

    def __init__(self, small_stem: bool):
        super().__init__()
        self.small_stem = small_stem
        self.backbone = resnet18(weights=None)
        self.backbone.fc = nn.Identity()
        if small_stem:
            # CIFAR-style stem (SimCLR paper, appendix B.9): a 32 px input keeps its resolution
            # into layer1 instead of shrinking to 8 px, where a crystal is a fraction of a pixel.
            self.backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.backbone.maxpool = nn.Identity()
        use_small_map_convs(self.backbone)  # layer3/4 run on 1-2 px maps at 32-64 px: see the module
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def _load_imagenet(encoder: Encoder, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"imagenet_weights: no such file: {path} (weights are never downloaded)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if encoder.small_stem:
        state.pop("conv1.weight", None)  # a 7x7 kernel does not fit the 3x3 stem
    missing, unexpected = encoder.backbone.load_state_dict(state, strict=False)
    expected_missing = {"conv1.weight"} if encoder.small_stem else set()
    if set(missing) - expected_missing or unexpected:
        raise ValueError(f"{path}: not a torchvision ResNet-18 state dict "
                         f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    log.info("encoder: ImageNet weights loaded from %s%s", path, " (stem re-initialised)" if missing else "")


def build_encoder(image_size: int, small_stem: bool | str = "auto", imagenet_weights: Path | None = None) -> Encoder:
    """Build the encoder for ``image_size`` px inputs: random init, or a local ImageNet state dict."""
    encoder = Encoder(use_small_stem(image_size, small_stem))
    if imagenet_weights is not None:
        _load_imagenet(encoder, Path(imagenet_weights))
    return encoder
