"""What the DataFactory model calls the real MARCO frames (docs/RESULTS.md): too few to score, shown as-is.

Builds a bundle from the evaluation's SimCLR encoder (trained on the DataFactory train split,
no labels) with a linear head on every DataFactory training label (7 synthetic classes), then
classifies each frame of ``$XTALWATCH_REAL_IMAGES/marco-gsk/<folder>/*`` exactly as
``xtalwatch classify`` does. Prints a Markdown table of the calls, then agreement per MARCO
folder: the crystal habits (needles, plates, prisms, microcrystals) fold onto ``crystals``;
MARCO's ``other`` (skins, phase separation) has no synthetic class, so it never agrees.

    .venv/bin/python bench/eval_marco.py WORK_DIR [NAME]   # WORK_DIR of bench/eval_datafactory.sh; NAME of its --out
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

from xtalwatch.commands.classify import classify_files
from xtalwatch.config import ClassifyConfig, Settings
from xtalwatch.learn.bundle import ModelBundle, build_bundle
from xtalwatch.learn.simclr import load_encoder
from xtalwatch.learn.simclr.data import list_images

# The synthetic class a MARCO folder agrees with; the habits all count as MARCO's "crystals".
FOLD = {"clear": "clear", "precipitate": "precipitate", "needles": "crystals", "plates": "crystals",
        "prisms": "crystals", "microcrystals": "crystals"}
FOLDERS = ("clear", "crystals", "precipitate", "other")


def agreement(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """MARCO folder -> (frames whose call folds onto the folder, labelled frames); unlabelled frames left out."""
    hits: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for r in rows:
        folder = Path(r["path"]).parent.name
        if folder not in FOLDERS:
            continue
        total[folder] += 1
        hits[folder] += "error" not in r and FOLD.get(r["class"]) == folder
    return {f: (hits[f], total[f]) for f in FOLDERS if total[f]}


def main(work: Path, name: str = "datafactory_eval") -> int:
    real = Path(os.environ.get("XTALWATCH_REAL_IMAGES", "/work/shared/real-images")) / "marco-gsk"
    result = json.loads((work / f"{name}.json").read_text())
    classes = result["classes"]
    settings = Settings(classify=ClassifyConfig(classes=classes, subclasses=[]))
    bundle_dir = work / f"bundle_{name}"
    if not bundle_dir.exists():
        from xtalwatch.learn.evaluate.pipeline import load_imagefolder

        size = result["config"]["train"]["image_size"]
        crops, labels, _, paths, _ = load_imagefolder(work / "datafactory", size, work / name / "cache",
                                                      settings.preprocess)
        train = set(json.loads((work / name / "split.json").read_text())["train"])
        keep = [i for i, p in enumerate(paths) if p in train]
        encoder = load_encoder(work / name / "simclr" / "checkpoint.pt")
        bundle = build_bundle(encoder, crops[keep][..., ::-1], [classes[labels[i]] for i in keep],
                              settings.classify, "datafactory-simclr", image_size=size)
        bundle.save(bundle_dir)
    bundle = ModelBundle.load(bundle_dir)
    files = list_images(real)
    rows = classify_files(bundle, files, settings)
    print(f"model {bundle.version}: T = {bundle.temperature:.2f}, metrics {bundle.metrics}\n")
    print("| frame | MARCO folder | called | confidence | flags |\n|---|---|---|---|---|")
    for r in rows:
        p = Path(r["path"])
        if "error" in r:
            print(f"| {p.name} | {p.parent.name} | error: {r['error']} | | |")
        else:
            print(f"| {p.name} | {p.parent.name} | {r['class']} | {r['confidence']:.2f} | {', '.join(r['flags']) or '-'} |")
    agree = agreement(rows)
    print("\n| MARCO folder | agree | frames |\n|---|---|---|")
    for folder, (hit, n) in agree.items():
        print(f"| {folder} | {hit} | {n} |")
    hit, n = sum(h for h, _ in agree.values()), sum(n for _, n in agree.values())
    print(f"| all labelled | {hit} | {n} |")
    calls = Counter(r.get("class", "error") for r in rows)
    print("\ncalls: " + ", ".join(f"{c} {calls[c]}" for c in sorted(calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/xtalwatch-eval"), *sys.argv[2:3]))
