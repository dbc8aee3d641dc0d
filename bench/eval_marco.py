"""What the DataFactory model calls the real MARCO frames (docs/RESULTS.md): too few to score, shown as-is.

Builds a bundle from the evaluation's SimCLR encoder (trained on the DataFactory train split,
no labels) with a linear head on every DataFactory training label (7 synthetic classes), then
classifies each frame of ``$XTALWATCH_REAL_IMAGES/marco-gsk/<folder>/*`` exactly as
``xtalwatch classify`` does. Prints a Markdown table.

    .venv/bin/python bench/eval_marco.py WORK_DIR [NAME]   # WORK_DIR of bench/eval_datafactory.sh; NAME of its --out
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from xtalwatch.commands.classify import classify_files
from xtalwatch.config import ClassifyConfig, Settings
from xtalwatch.learn.bundle import ModelBundle, build_bundle
from xtalwatch.learn.simclr import load_encoder
from xtalwatch.learn.simclr.data import list_images


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
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/xtalwatch-eval"), *sys.argv[2:3]))
