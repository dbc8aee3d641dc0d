"""xtalwatch: watches a crystallisation plate imager, catalogues every image once, and scores drops.

The data flow, one module per stage: ``watch`` → ``ingest`` → ``catalogue`` → ``preprocess`` →
classify → alerts and ``metrics``; ``service`` owns their life cycle.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "nt_xent_loss"]


def __getattr__(name: str):
    # Lazy, so that `import xtalwatch` (and every CLI command) does not pay for importing torch.
    if name == "nt_xent_loss":
        from xtalwatch.learn.simclr.loss import nt_xent_loss

        return nt_xent_loss
    raise AttributeError(f"module 'xtalwatch' has no attribute {name!r}")
