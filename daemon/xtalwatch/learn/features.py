"""From stored crops to encoder features: the one path shared by training, serving, the gate and the CLI.

The catalogue stores each drop crop as the preprocessing wrote it: a PNG at the model size, BGR
(OpenCV's order) or grey. The encoder was trained on RGB. So every consumer reads crops with
:func:`read_crop`, turns them into the model's input with :func:`to_model_rgb` and embeds them
with :func:`embed`; heads, the gate and the drift alarm compare features after
:func:`l2_normalise`. Writing any of these a second time is how serving and training drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CropUnreadable", "l2_normalise", "unit_mean", "read_crop", "read_crops",
           "to_model_rgb", "read_model_rgb", "embed", "inference_batch_size"]

class CropUnreadable(ValueError):
    """A stored crop is missing or not an image."""


# -- features ---------------------------------------------------------------------------------
def l2_normalise(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows scaled to unit length (``dtype``, float32 unless asked); zero rows stay zero."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def unit_mean(features: np.ndarray) -> np.ndarray:
    """(N, D) → (D,): the mean of the L2-normalised rows (its direction is what drift compares)."""
    return l2_normalise(features).mean(axis=0)


# -- crops ------------------------------------------------------------------------------------
def read_crop(path: str, channels: int) -> np.ndarray:
    """A stored crop: BGR (S, S, 3) or grey (S, S) uint8. Raises :class:`CropUnreadable`."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if image is None:
        raise CropUnreadable(f"unreadable crop {path}")
    return image


def read_crops(paths: Sequence[str], channels: int) -> np.ndarray:
    """Stored crops of one size stacked: (N, S, S[, 3]) uint8."""
    return np.stack([read_crop(p, channels) for p in paths])


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    out = cv2.resize(crop, (size, size), interpolation=interp)
    return out[..., None] if out.ndim == 2 else out


def to_model_rgb(crops: np.ndarray, size: int) -> np.ndarray:
    """Service-layout crops (N, S, S[, 1|3]) BGR/grey uint8 → (N, size, size, 3) RGB uint8."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim not in (3, 4):
        raise ValueError(f"crops must be uint8 (N, S, S[, C]), got {crops.dtype} {crops.shape}")
    if crops.ndim == 3:
        crops = crops[..., None]
    if crops.shape[3] not in (1, 3):
        raise ValueError(f"crops must have 1 or 3 channels, got {crops.shape[3]}")
    if crops.shape[1:3] != (size, size):
        crops = np.stack([_resize(c, size) for c in crops]) if len(crops) \
            else np.zeros((0, size, size, crops.shape[3]), np.uint8)
    if crops.shape[3] == 1:
        return np.ascontiguousarray(np.repeat(crops, 3, axis=3))
    return np.ascontiguousarray(crops[..., ::-1])


def read_model_rgb(paths: Sequence[str], size: int, out_file: Path | None = None) -> np.ndarray:
    """(N, size, size, 3) RGB uint8 from stored crops, read one at a time (what SimCLR trains on).

    With ``out_file``, each crop goes straight into a memory-mapped ``.npy`` there and the result
    maps it read-only: memory holds one crop, never the whole catalogue's (the caller deletes it).
    """
    shape = (len(paths), size, size, 3)
    out = np.lib.format.open_memmap(out_file, mode="w+", dtype=np.uint8, shape=shape) if out_file is not None \
        else np.empty(shape, np.uint8)
    for i, path in enumerate(paths):
        out[i] = to_model_rgb(read_crop(path, 3)[None], size)[0]
    if out_file is None:
        return out
    out.flush()
    del out
    return np.load(out_file, mmap_mode="r")


# -- the encoder ------------------------------------------------------------------------------
def inference_batch_size(image_size: int) -> int:
    """Images per inference batch at ``image_size`` px: 256 up to 90 px, fewer above (8 at 512 px).

    ResNet-18's first feature map is 64 channels at S/2 (S with the small stem), and a batch holds
    two or three such maps at once: at 128 px, 256 images would be about 0.7 GB. Keeping the
    batch's pixels under 2**21 keeps an inference step near 0.3 GB at any size.
    """
    return max(8, min(256, 2**21 // max(1, image_size) ** 2))


def embed(encoder: nn.Module, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """(N, 512) float32 features of uint8 (N, S, S, 3) RGB images, on the encoder's device.

    The images should be the size the encoder was trained at; they may be a read-only memmap
    (one batch is read at a time). ``batch_size`` None: :func:`inference_batch_size`. BatchNorm
    runs in eval mode; the encoder's own mode is restored afterwards.
    """
    import torch

    from xtalwatch.learn.simclr.augment import to_float_nchw
    from xtalwatch.learn.simclr.encoder import FEATURE_DIM

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    if batch_size is None:
        batch_size = inference_batch_size(images.shape[1])
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():  # np.array copies: torch cannot wrap a read-only memmap slice
            out = [encoder(to_float_nchw(torch.from_numpy(np.array(images[i:i + batch_size])).to(device))
                           .contiguous(memory_format=torch.channels_last)).float().cpu()
                   for i in range(0, len(images), batch_size)]
    finally:
        encoder.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float32)
