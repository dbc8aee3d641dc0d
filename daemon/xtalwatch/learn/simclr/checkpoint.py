"""Self-describing checkpoints, written atomically.

A checkpoint holds everything needed to rebuild and resume: the model, optimiser and scheduler
states, the step, the full training config, the data fingerprint and the loss curve so far. It
is written to a temporary file in the same folder, fsynced and renamed, so a kill at any moment
leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xtalwatch.files import atomic_path

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "load_encoder"]

FORMAT = "xtalwatch-simclr/1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the format tag) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, durable=True) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, checking its format tag."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not an xtalwatch SimCLR checkpoint (format {state.get('format')!r})")
    return state


def load_encoder(path: Path):
    """Rebuild the trained encoder (eval mode, CPU) from a checkpoint alone."""
    from xtalwatch.learn.simclr.encoder import Encoder

    state = load_checkpoint(path)
    encoder = Encoder(small_stem=state["model_info"]["small_stem"])
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)})
    return encoder.eval()
