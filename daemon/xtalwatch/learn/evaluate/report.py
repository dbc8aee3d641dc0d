"""Pictures and the HTML page of an evaluation: confusion matrices, the table, the loss curve."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

__all__ = ["save_confusion", "save_epoch_curve", "write_html"]


def save_confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """A row-normalised confusion matrix (rows: truth) with counts in the cells, as a PNG."""
    from xtalwatch.figures import pyplot, save_figure

    plt = pyplot()

    m = np.asarray(matrix, dtype=np.float64)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=90)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(title, fontsize=8)
    return save_figure(fig, path)


def save_epoch_curve(probes: list[dict], baselines: dict[float, float], path: Path) -> Path:
    """Linear-probe accuracy against SimCLR epochs, one line per label fraction; the supervised
    from-scratch accuracy at the same fraction as a dashed line of the same colour."""
    from xtalwatch.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    fractions = sorted({p["label_fraction"] for p in probes})
    for i, frac in enumerate(fractions):
        pts = sorted((p["epoch"], 100 * p["accuracy"]) for p in probes if p["label_fraction"] == frac)
        colour = f"C{i}"
        ax.plot([e for e, _ in pts], [a for _, a in pts], "o-", color=colour, label=f"SimCLR + linear, {frac:.0%} labels")
        if frac in baselines:
            ax.axhline(100 * baselines[frac], color=colour, ls="--", lw=1,
                       label=f"supervised from scratch, {frac:.0%}")
    ax.set_xlabel("SimCLR epochs")
    ax.set_ylabel("test accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).name)}">'


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def write_html(result: dict, image_dir: Path, path: Path) -> Path:
    """One self-contained page (images inlined) from ``EvalResult.to_json()``."""
    rows = result["rows"]
    body = [f"<h1>xtalwatch evaluation</h1><p>{len(result['classes'])} classes "
            f"({html.escape(', '.join(result['classes']))}); {result['n_train']} train / {result['n_test']} test "
            f"images; {result['n_skipped']} skipped. SimCLR: {html.escape(str({k: v for k, v in result['simclr'].items() if k not in ('losses', 'probes')}))}</p>",
            "<table><tr><th>method</th><th>label fraction</th><th>labelled images</th><th>accuracy %</th>"
            "<th>macro-F1 %</th><th>epochs</th><th>seconds</th><th>note</th></tr>"]
    for r in rows:
        body.append(f"<tr><td>{r['method']}</td><td>{r['label_fraction']:g}</td><td>{r['n_labelled']}</td>"
                    f"<td>{_pct(r['accuracy'])}</td><td>{_pct(r['macro_f1'])}</td><td>{r['epochs'] or '—'}</td>"
                    f"<td>{r['seconds']:.1f}</td><td>{html.escape(r.get('absent_reason') or '')}</td></tr>")
    body.append("</table>")
    loss_png = result["simclr"].get("loss_png")
    if loss_png and Path(loss_png).is_file():
        body.append("<h2>SimCLR loss</h2>" + _img(Path(loss_png)))
    epoch_png = result["simclr"].get("epoch_png")
    if epoch_png and Path(epoch_png).is_file():
        body.append("<h2>Linear probe against SimCLR epochs</h2>" + _img(Path(epoch_png)))
    pairs_png = result["simclr"].get("pairs_png")
    if pairs_png and Path(pairs_png).is_file():
        body.append("<h2>Augmented pairs</h2>" + _img(Path(pairs_png)))
    body.append("<h2>Confusion matrices</h2><div>")
    body += [_img(Path(image_dir) / r["confusion_png"]) for r in rows if r.get("confusion_png")]
    body.append("</div>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{margin:4px;vertical-align:top}")
    Path(path).write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>xtalwatch evaluation</title>"
                          f"<style>{style}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")
    return Path(path)
