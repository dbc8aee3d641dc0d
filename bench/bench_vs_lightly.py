"""xtalwatch's SimCLR trainer against lightly's SimCLR pieces: views/s and wall time, same images.

For each image size, on the same uint8 crops (one crop cache, as ``xtalwatch train`` builds it),
the same batch, epochs, optimiser (AdamW, lr 1e-3, wd 1e-4) and temperature, one after the other
in one process with the same torch thread count:
  lightly   = lightly.transforms.SimCLRTransform on PIL images in a 1-worker DataLoader, a
              torchvision ResNet-18 (fc removed), lightly's SimCLRProjectionHead(512, 512, 128)
              and NTXentLoss;
  xtalwatch = ``xtalwatch.learn.simclr.train`` with ``TrainConfig`` defaults for everything not
              named above: the very function ``xtalwatch train`` calls (stem, augmentation, loop,
              checkpoints and pictures included).
views/s = 2 x images per step x steps / loop seconds; wall = the whole run including set-up.
ratio = xtalwatch views/s / lightly views/s (the issue's goal: >= 1.5 on 2 CPU cores).

    pip install "lightly==1.6.0"   # bench-only dependency
    .venv/bin/python bench/bench_vs_lightly.py --sizes 32,64 --batch 256 --epochs 2 --threads 2
    .venv/bin/python bench/bench_vs_lightly.py --images DIR ...   # an ImageFolder of your own

Without ``--images``, ``xtalwatch synth --imagefolder`` renders the images into a temporary folder.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from xtalwatch.config import TrainConfig
from xtalwatch.learn.simclr.data import CropDataset, load_folder
from xtalwatch.learn.simclr.encoder import use_small_stem
from xtalwatch.learn.simclr.train import train


def synth_folder(out: Path, n_wells: int, frame_px: int, seed: int) -> Path:
    """Render an ImageFolder of synthetic drops with the product's own imager (3 drops per well)."""
    subprocess.run([sys.executable, "-m", "xtalwatch", "synth", str(out), "--imagefolder", "--plates", "1",
                    "--wells", str(n_wells), "--drops", "3", "--image-size", f"{frame_px}x{frame_px}",
                    "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
    return out


def run_lightly(crops: np.ndarray, size: int, batch: int, epochs: int, temperature: float, seed: int) -> dict:
    """lightly's SimCLR recipe on the crops; returns views/s, loop and wall seconds, final loss."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from PIL import Image
    from torch import nn
    from torchvision.models import resnet18

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    transform = SimCLRTransform(input_size=size)

    class Crops(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(crops)

        def __getitem__(self, i: int):
            return transform(Image.fromarray(np.asarray(crops[i])))

    loader = torch.utils.data.DataLoader(Crops(), batch_size=batch, shuffle=True, num_workers=1,
                                         drop_last=True, persistent_workers=True)
    backbone = resnet18(weights=None)
    backbone.fc = nn.Identity()
    model = nn.Sequential(backbone, SimCLRProjectionHead(512, 512, 128))
    criterion = NTXentLoss(temperature=temperature)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    steps, loss = 0, torch.tensor(float("nan"))
    t_loop = time.perf_counter()
    for _ in range(epochs):
        for v1, v2 in loader:
            z = model(torch.cat([v1, v2]))
            loss = criterion(z[:len(v1)], z[len(v1):])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    loop = time.perf_counter() - t_loop
    return {"views_per_s": 2 * batch * steps / loop, "loop_s": loop, "wall_s": time.perf_counter() - t0,
            "steps": steps, "loss": float(loss.detach())}


def run_xtalwatch(dataset: CropDataset, size: int, batch: int, epochs: int, seed: int, out: Path,
                  small_stem: bool | str, max_memory_gb: float | None) -> dict:
    """``xtalwatch.learn.simclr.train`` with config defaults apart from the shared settings."""
    t0 = time.perf_counter()
    cfg = TrainConfig(image_size=size, batch_size=batch, epochs=epochs, device="cpu", seed=seed,
                      min_images=2, small_stem=small_stem, log_every_steps=10_000,
                      checkpoint_every_steps=10_000, max_memory_gb=max_memory_gb)
    r = train(cfg, dataset, out, resume=False, progress=False)
    return {"views_per_s": r.views_per_second, "micro_batch": r.micro_batch, "loop_s": 2 * r.batch_size * r.steps / max(r.views_per_second, 1e-9),
            "wall_s": time.perf_counter() - t0, "steps": r.steps, "loss": r.losses[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="ImageFolder to read (default: render one with xtalwatch synth)")
    ap.add_argument("--wells", type=int, default=384, choices=[24, 48, 96, 384, 1536],
                    help="synthetic plate size; 3 drops per well (384 -> 1,152 images)")
    ap.add_argument("--frame-px", type=int, default=160, help="synthetic frame side, px")
    ap.add_argument("--sizes", default="32,64", help="crop sizes, px")
    ap.add_argument("--batch", type=int, default=256, help="images per step (2 views each)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for both (the machine's cores)")
    ap.add_argument("--stems", default="auto", help="xtalwatch train.small_stem values to run, e.g. auto,true")
    ap.add_argument("--budgets", default=str(TrainConfig().max_memory_gb),
                    help="xtalwatch train.max_memory_gb values to run, e.g. 2,none (none: never split a step, "
                         "lightly's memory; 2: the default, which splits a 64 px step of 256 in micro-batches)")
    ap.add_argument("--temperature", type=float, default=TrainConfig().temperature)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    stems = [{"auto": "auto", "true": True, "false": False}[s.strip().lower()] for s in a.stems.split(",")]
    budgets = [None if b.strip().lower() == "none" else float(b) for b in a.budgets.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-vs-lightly-") as tmp:
        root = a.images or synth_folder(Path(tmp) / "images", a.wells, a.frame_px, a.seed)
        lines = [f"torch {torch.__version__}, {a.threads} threads, batch {a.batch}, {a.epochs} epochs, "
                 f"images: {a.images or f'xtalwatch synth --imagefolder --wells {a.wells} --image-size {a.frame_px}'}",
                 "", "| px | images | xtalwatch stem | max_memory_gb (micro-batch) | lightly views/s | lightly wall s "
                 "| xtalwatch views/s | xtalwatch wall s | ratio |",
                 "| --: | --: | --- | --- | --: | --: | --: | --: | --: |"]
        print("\n".join(lines), flush=True)
        for size in [int(s) for s in a.sizes.split(",")]:
            dataset = load_folder(root, size, Path(tmp) / "cache", preprocess=None)
            crops = np.asarray(dataset.images)
            lt = run_lightly(crops, size, a.batch, a.epochs, a.temperature, a.seed)
            for stem in stems:
                for budget in budgets:
                    xw = run_xtalwatch(dataset, size, a.batch, a.epochs, a.seed,
                                       Path(tmp) / f"run-{size}-{stem}-{budget}", stem, budget)
                    label = f"{stem} → {'small' if use_small_stem(size, stem) else 'standard'}"
                    split = f"{budget} ({xw['micro_batch'] or 'whole'})"
                    lines.append(f"| {size} | {len(dataset)} | {label} | {split} | {lt['views_per_s']:.0f} "
                                 f"| {lt['wall_s']:.1f} | {xw['views_per_s']:.0f} | {xw['wall_s']:.1f} "
                                 f"| {xw['views_per_s'] / lt['views_per_s']:.2f} |")
                    print(lines[-1], flush=True)
    if a.markdown:
        a.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
