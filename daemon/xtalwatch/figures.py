"""Matplotlib for the PNGs people look at: the headless backend, and writing and closing a figure.

Imported lazily by the modules that draw, so that commands which draw nothing never load
matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display on a server)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path | str) -> Path:
    """Lay out, write ``fig`` as a PNG at ``path`` (folders created) and free it; returns the path."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
    return path
