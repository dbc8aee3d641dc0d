"""Linear-probe accuracy against SimCLR epochs for several ``evaluate --probe-every`` runs on one picture.

Each run is LABEL=PATH to its ``probes.json`` (in the evaluate ``--out`` folder); one line per run and
label fraction, so runs that differ in one knob (crop size, temperature) can be read side by side.

    .venv/bin/python bench/plot_probe_curves.py "32 px, 100 ep=WORK/long32/probes.json" \\
        "48 px, 60 ep=WORK/long48/probes.json" --fractions 0.1,1 --out docs/img/probe_curve_32_vs_48.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xtalwatch.figures import pyplot, save_figure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="LABEL=PROBES_JSON")
    ap.add_argument("--fractions", default="0.1,1", help="label fractions to draw")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    fractions = [float(f) for f in a.fractions.split(",")]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    for i, spec in enumerate(a.runs):
        label, _, path = spec.rpartition("=")
        probes = json.loads(Path(path).read_text(encoding="utf-8"))
        for frac, style in zip(fractions, ("o-", "s--", "^:"), strict=False):
            pts = sorted((p["epoch"], 100 * p["accuracy"]) for p in probes if p["label_fraction"] == frac)
            ax.plot([e for e, _ in pts], [v for _, v in pts], style, color=f"C{i}", label=f"{label}, {frac:.0%} labels")
    ax.set_xlabel("SimCLR epochs")
    ax.set_ylabel("linear probe, test accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    print(save_figure(fig, a.out))


if __name__ == "__main__":
    main()
