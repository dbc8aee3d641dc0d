"""The SimCLRv2 fine-tuned model as a serving head: encoder weights fine-tuned, plus a small MLP on their features.

SimCLRv2 (Chen et al. 2020, arXiv:2006.10029, §2) fine-tunes the encoder together with the first
layer of the projection head (Linear → BN → ReLU) and a linear classifier (``finetune.Classifier``).
Served, that model splits at the encoder's 512-d output: the fine-tuned encoder goes into the
bundle's ``encoder.pt`` and the rest is this head, so serving stays encoder → features →
``head.logits`` and the feature cache, keyed by the encoder's version, keeps working.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xtalwatch.config import ClassifyConfig
from xtalwatch.learn.heads.finetune import Classifier, FitConfig, fit_classifier
from xtalwatch.learn.simclr.encoder import FEATURE_DIM, Encoder

__all__ = ["FinetunedHead", "finetune", "projection_layer", "projection_layer_from_checkpoint"]


def projection_layer(in_dim: int = FEATURE_DIM, width: int = FEATURE_DIM, bias: bool = False) -> nn.Sequential:
    """A fresh first projection layer, shaped as ``simclr.heads.ProjectionHead``'s (Linear → BN → ReLU)."""
    return nn.Sequential(nn.Linear(in_dim, width, bias=bias), nn.BatchNorm1d(width), nn.ReLU(inplace=True))


def projection_layer_from_checkpoint(path: Path) -> nn.Module:
    """The first projection layer a SimCLR run trained, from its checkpoint: where fine-tuning starts (v2 §2)."""
    from xtalwatch.learn.simclr.checkpoint import load_checkpoint
    from xtalwatch.learn.simclr.heads import build_head

    state = load_checkpoint(path)
    info = state["model_info"]
    head = build_head(info["head"], info["feature_dim"], info["projection_dim"])
    head.load_state_dict({k[len("head."):]: v for k, v in state["model"].items() if k.startswith("head.")})
    return head.layers[0]


class FinetunedHead:
    """(N, 512) features of the fine-tuned encoder → projection layer 0 → Linear(K) → (N, K) logits."""

    kind = "finetuned"

    def __init__(self, proj: nn.Module, fc: nn.Linear):
        self.proj, self.fc = proj.eval(), fc.eval()

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, 512) raw features of the bundle's (fine-tuned) encoder → (N, K) logits, float32."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(features, np.float32))
            if len(x) == 0:
                return np.zeros((0, self.fc.out_features), np.float32)
            return self.fc(self.proj(x)).float().numpy()

    def state(self) -> dict:
        return {"kind": self.kind, "proj": self.proj.state_dict(), "fc": self.fc.state_dict()}

    @classmethod
    def from_state(cls, state: dict) -> FinetunedHead:
        proj_state, fc_state = state["proj"], state["fc"]
        width, in_dim = proj_state["0.weight"].shape
        proj = projection_layer(in_dim, width, bias="0.bias" in proj_state)
        proj.load_state_dict(proj_state)
        fc = nn.Linear(fc_state["weight"].shape[1], fc_state["weight"].shape[0])
        fc.load_state_dict(fc_state)
        return cls(proj, fc)


def finetune(encoder: Encoder, images: np.ndarray, labels: np.ndarray, n_classes: int, cfg: ClassifyConfig, *,
             proj_layer: nn.Module | None = None, seed: int = 0, max_memory_gb: float | None = None,
             progress: bool = False) -> tuple[Encoder, FinetunedHead]:
    """Fine-tune a copy of ``encoder`` with projection layer 0 and a linear layer on labelled crops.

    Args:
        encoder: the SimCLR encoder; left untouched (a copy is trained).
        images: (N, S, S, 3) uint8 RGB crops at the encoder's size (``features.to_model_rgb``).
        labels: (N,) ints in [0, n_classes).
        cfg: the ``classify`` section: ``finetune_steps`` and ``finetune_lr``.
        proj_layer: the SimCLR run's first projection layer (copied); None: a fresh one.
        max_memory_gb: ``train.max_memory_gb``, the CPU memory budget the steps are split to (None: never).

    Returns the fine-tuned encoder (eval mode) and the head that goes on its features.
    """
    proj = copy.deepcopy(proj_layer) if proj_layer is not None else projection_layer()
    torch.manual_seed(seed)  # the fresh classifier layer's initial weights
    model = Classifier(copy.deepcopy(encoder), n_classes, proj)
    fit_classifier(model, images, np.asarray(labels, np.int64),
                   FitConfig(steps=cfg.finetune_steps, lr=cfg.finetune_lr, seed=seed, max_memory_gb=max_memory_gb),
                   desc="finetune",
                   progress=progress)
    return model.encoder.eval(), FinetunedHead(model.proj, model.fc)
