"""Draw docs/img/architecture.png: the package as the data flow (run: .venv/bin/python docs/img/make_architecture.py)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from xtalwatch.figures import pyplot, save_figure

OUT = Path(__file__).with_name("architecture.png")

STAGE, STORE, LEARN, ALERT, LIFE = "#dbe9f6", "#f3e3c3", "#dcefd9", "#f6d5d5", "#e6e0f3"


def box(ax, x: float, y: float, w: float, h: float, title: str, lines: str, colour: str) -> None:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=colour, ec="#555"))
    ax.text(x + w / 2, y + h - 0.17, title, ha="center", va="top", fontsize=10.5, weight="bold", family="monospace")
    ax.text(x + w / 2, y + h - 0.45, lines, ha="center", va="top", fontsize=8, linespacing=1.35)


def arrow(ax, start: tuple[float, float], end: tuple[float, float], label: str = "", rad: float = 0.0,
          at: tuple[float, float] | None = None) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=13, lw=1.3, color="#333",
                                 connectionstyle=f"arc3,rad={rad}"))
    if label:
        x, y = at or ((start[0] + end[0]) / 2 + 0.08, (start[1] + end[1]) / 2)
        ax.text(x, y, label, ha="left", va="center", fontsize=7.5, color="#333", style="italic")


def main() -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(13, 7.2), dpi=110)
    ax.set_xlim(0, 13)
    ax.set_ylim(0, 7.2)
    ax.axis("off")

    # the stages, left to right: an image's way
    stages = [("watch.py", "observer, scans,\nsettling"), ("ingest.py", "read once, sha256,\nprobe, adapters"),
              ("preprocess.py", "process pool:\nwell, drop, crop,\nquality flags"),
              ("classify.py", "serving bundle,\none call per image\nand model version"),
              ("outcomes.py", "per-well outcome,\ncrystal hits")]
    ax.text(3.0, 6.85, "stages/  (an image's way)", fontsize=11, weight="bold")
    xs = [0.3 + i * 2.55 for i in range(len(stages))]
    for x, (name, lines) in zip(xs, stages, strict=True):
        box(ax, x, 5.25, 2.0, 1.45, name, lines, STAGE)
    for a, b in zip(xs, xs[1:], strict=False):
        arrow(ax, (a + 2.0, 5.95), (b, 5.95))
    arrow(ax, (1.3, 7.15), (1.3, 6.7), "the imager's folder", at=(1.4, 6.95))

    # the store, under everything
    box(ax, 0.3, 3.05, 10.2, 1.0, "store/  (SQLite catalogue: every SQL statement, as named queries)",
        "images, files, rejected, preprocess  ·  predictions  ·  well_outcomes  ·  labels  ·  events  ·  models",
        STORE)
    for x in xs[1:4]:
        arrow(ax, (x + 1.0, 5.25), (x + 1.0, 4.05))

    # alerts, from outcomes
    box(ax, 10.7, 3.05, 2.1, 1.0, "alerts/", "events stored,\nthen sent to sinks", ALERT)
    arrow(ax, (xs[4] + 1.0, 5.25), (xs[4] + 1.0, 4.05))
    arrow(ax, (10.7, 3.55), (10.5, 3.55))

    # the model's way, bottom
    ax.text(0.3, 2.25, "learn/  (a model's way)", fontsize=11, weight="bold")
    learn = [("scheduler.py", "nightly, or the first\ntraining; nice'd child"),
             ("retrain/", "usable crops + labels →\nSimCLR → head → gate"),
             ("registry.py", "versions; `current`\nswitched atomically"),
             ("training_metrics.py", "metrics from the\nruns' outcome events")]
    lx = [0.3, 2.85, 5.4, 7.95]
    width = 2.3
    for x, (name, lines) in zip(lx, learn, strict=True):
        box(ax, x, 0.65, width, 1.25, name, lines, LEARN)
    arrow(ax, (lx[0] + width, 1.25), (lx[1], 1.25))
    arrow(ax, (lx[1] + width, 1.25), (lx[2], 1.25))

    # the review app, beside /metrics: pages read the store; a label re-fits the head in seconds
    box(ax, 10.45, 0.65, 2.35, 1.25, "review/  (web app)",
        "plates, wells, hits;\nlabel → refit.py →\nnew head, promoted", LIFE)
    arrow(ax, (10.1, 3.05), (10.9, 1.9), "pages read", at=(10.55, 2.55))
    arrow(ax, (11.6, 0.65), (lx[2] + 1.6, 0.65), rad=-0.18)
    ax.text(10.0, 0.45, "head-only version, promoted", ha="center", va="center", fontsize=7.5, color="#333",
            style="italic")
    arrow(ax, (lx[1] + 0.5, 3.05), (lx[1] + 0.5, 1.9), "crops, labels")
    arrow(ax, (lx[1] + 1.9, 1.9), (lx[1] + 1.9, 3.05), "outcome\nevent")
    arrow(ax, (lx[3] + 0.5, 3.05), (lx[3] + 0.5, 1.9), "events")
    arrow(ax, (lx[2] + 2.0, 1.9), (xs[3] + 1.6, 5.25), "hot swap\nbetween\nbatches", rad=0.3, at=(7.35, 2.6))

    # the life cycle
    ax.text(0.3, -0.05, "service.py starts the stages in this order and stops them in order;  "
                       "stages/pipeline.py builds the chain for the service and `xtalwatch ingest`",
            ha="left", va="bottom", fontsize=8, color="#444")
    save_figure(fig, OUT)
    print(OUT)


if __name__ == "__main__":
    main()
