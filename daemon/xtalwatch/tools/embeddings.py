"""Encoder features out of the service: a ``.npy`` matrix with a CSV index, and a 2-D map PNG.

The map is PCA (fast, deterministic) or t-SNE (slower, keeps neighbourhoods) from scikit-learn,
each point coloured by its label where there is one, or by the model's prediction.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from xtalwatch.files import atomic_path

__all__ = ["write_embeddings", "project_2d", "save_map"]


def write_embeddings(features: np.ndarray, index: Sequence[dict], out: Path) -> tuple[Path, Path]:
    """Write ``out`` (.npy, (N, D) float32) and ``out`` with .csv (one row per feature row, ``row`` first).

    ``index``: one dict per row (image id, path, label, prediction...); keys of the first row are the columns.
    """
    out = Path(out).with_suffix(".npy")
    if len(index) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(index)} index rows")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(features, np.float32))
    csv_path = out.with_suffix(".csv")
    cols = ["row"] + [k for k in (index[0] if index else {}) if k != "row"]
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for i, rec in enumerate(index):
            w.writerow({"row": i, **rec})
    return out, csv_path


def project_2d(features: np.ndarray, method: Literal["pca", "tsne"] = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) → (N, 2) on L2-normalised features (the geometry the heads use)."""
    from xtalwatch.learn.features import l2_normalise

    x = l2_normalise(features)
    if len(x) < 3:
        return np.zeros((len(x), 2), np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(x)
    from sklearn.decomposition import PCA

    return PCA(2, random_state=seed).fit_transform(x)


def save_map(points: np.ndarray, colour_by: Sequence[str], path: Path, title: str = "") -> Path:
    """A scatter of (N, 2) points, one colour per distinct value of ``colour_by`` ('' shows as 'unlabelled')."""
    from xtalwatch.figures import pyplot, save_figure

    plt = pyplot()

    names = [c or "unlabelled" for c in colour_by]
    fig, ax = plt.subplots(figsize=(6, 5), dpi=90)
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(sorted(set(names))):
        m = np.array([n == name for n in names])
        ax.scatter(points[m, 0], points[m, 1], s=6, alpha=0.7, color="lightgrey" if name == "unlabelled" else cmap(i % 10),
                   label=f"{name} ({int(m.sum())})")
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
