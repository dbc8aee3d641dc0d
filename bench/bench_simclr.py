"""SimCLR training throughput: augmented views/s, augmentation overhead, peak memory.

For each image size and batch size, on the same batches in the same run:
  full step   = uint8 batch → two augmented views → forward → NT-Xent → backward → optimiser step
  model only  = the same views, augmented beforehand → forward → NT-Xent → backward → step
ratio = full-step views/s ÷ model-only views/s (1.0 means augmentation costs nothing).
Peak memory: CUDA max_memory_allocated, or on CPU the process's peak RSS (VmHWM, reset per case).

    .venv/bin/python bench/bench_simclr.py --sizes 32,64,96 --batch-sizes 16,32 --steps 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from xtalwatch.learn.simclr.augment import AugmentStrength, apply_view, sample_view_params, to_float_nchw
from xtalwatch.learn.simclr.encoder import build_encoder, use_small_stem
from xtalwatch.learn.simclr.heads import build_head
from xtalwatch.learn.simclr.loss import nt_xent_loss
from xtalwatch.learn.simclr.optim import build_optimizer
from xtalwatch.learn.simclr.train import SimCLRModel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
        except OSError:
            pass


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_case(size: int, batch: int, steps: int, warmup: int, device: torch.device, amp: bool,
               channels_last: bool, compile_: bool, small_stem: bool) -> dict:
    torch.manual_seed(0)
    encoder = build_encoder(size, small_stem)
    model = SimCLRModel(encoder, build_head("simclr")).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, "adamw", 1e-3, 1e-4, 0.9)
    fwd = torch.compile(model) if compile_ else model
    strength = AugmentStrength()
    n_batches = warmup + steps
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)).to(device)
              for _ in range(n_batches)]
    params = [(sample_view_params(batch, strength, size, g), sample_view_params(batch, strength, size, g))
              for g in [torch.Generator().manual_seed(i) for i in range(n_batches)]]

    def views_of(i: int) -> torch.Tensor:
        x = to_float_nchw(images[i])
        with torch.no_grad():
            v = torch.cat([apply_view(x, params[i][0], size), apply_view(x, params[i][1], size)])
        return v.contiguous(memory_format=torch.channels_last) if channels_last else v

    def model_step(v: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            z = fwd(v)
        loss = nt_xent_loss(z[:batch], z[batch:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    _reset_peak(device)
    for i in range(warmup):
        model_step(views_of(i))
    _sync(device)
    t = time.perf_counter()
    for i in range(warmup, n_batches):
        model_step(views_of(i))
    _sync(device)
    full = time.perf_counter() - t
    peak = _peak_mib(device)
    pre = [views_of(i) for i in range(warmup, n_batches)]
    _sync(device)
    t = time.perf_counter()
    for v in pre:
        model_step(v)
    _sync(device)
    model_only = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(warmup, n_batches):
        views_of(i)
    _sync(device)
    aug_only = time.perf_counter() - t
    views = 2 * batch * steps
    return {"image_size": size, "small_stem": encoder.small_stem, "batch_images": batch, "views_per_step": 2 * batch,
            "full_views_per_s": views / full, "model_only_views_per_s": views / model_only,
            "augment_only_views_per_s": views / aug_only, "ratio_full_to_model": model_only / full,
            "peak_memory_mib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,64,96")
    ap.add_argument("--batch-sizes", default="16,32", help="images per step (views = 2x)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--stem", default="small<=64", choices=["small<=64", "auto", "small", "standard"],
                    help="encoder stem: small<=64 (the GPU goal's setting), auto (train.small_stem's default), ...")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    print(f"device: {device} ({name}); torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"amp={a.amp} channels_last={not a.no_channels_last} compile={a.compile}")
    print(f"{'px':>4} {'stem':>5} {'batch':>6} {'views/s full':>13} {'model only':>11} {'aug only':>9} "
          f"{'ratio':>6} {'peak MiB':>9}")
    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        for batch in [int(b) for b in a.batch_sizes.split(",")]:
            try:
                stem = {"small<=64": size <= 64, "auto": "auto", "small": True, "standard": False}[a.stem]
                r = bench_case(size, batch, a.steps, a.warmup, device, a.amp, not a.no_channels_last, a.compile,
                               use_small_stem(size, stem))
            except torch.OutOfMemoryError:
                print(f"{size:>4} batch {batch}: out of memory")
                torch.cuda.empty_cache()
                continue
            rows.append(r)
            print(f"{size:>4} {'small' if r['small_stem'] else 'std':>5} {batch:>6} {r['full_views_per_s']:>13.1f} "
                  f"{r['model_only_views_per_s']:>11.1f} {r['augment_only_views_per_s']:>9.0f} "
                  f"{r['ratio_full_to_model']:>6.3f} {r['peak_memory_mib']:>9.0f}", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"device": name, "amp": a.amp, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
