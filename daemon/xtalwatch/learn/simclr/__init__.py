"""SimCLR on drop crops: encoder, projection heads, NT-Xent loss, augmentations and training.

Modules, in the order data flows: ``data`` (crop cache) → ``augment`` (two views) → ``encoder``
and ``heads`` → ``loss`` → ``train`` (the loop, with ``optim``, ``checkpoint``, ``distributed``,
``plots``). Features for classifiers come from ``learn/features.py``. See docs/simclr.md.
"""

from __future__ import annotations

from xtalwatch.learn.simclr.augment import AugmentStrength, augment_pair
from xtalwatch.learn.simclr.checkpoint import load_checkpoint, load_encoder
from xtalwatch.learn.simclr.data import CropDataset, from_arrays, load_folder
from xtalwatch.learn.simclr.encoder import Encoder, build_encoder
from xtalwatch.learn.simclr.heads import ProjectionHead, build_head
from xtalwatch.learn.simclr.loss import nt_xent_loss
from xtalwatch.learn.simclr.train import (
    DatasetTooSmall,
    TrainingDiverged,
    TrainResult,
    train,
)

__all__ = [
    "AugmentStrength", "augment_pair", "load_checkpoint", "load_encoder", "CropDataset", "from_arrays",
    "load_folder", "Encoder", "build_encoder", "ProjectionHead", "build_head", "nt_xent_loss",
    "DatasetTooSmall", "TrainingDiverged", "TrainResult", "train",
]
