"""Where a CPU training step goes at small crops: the tiny-map convolution and the fused optimiser.

Three comparisons, each side by side in one run (the ratio is the figure to read on a noisy VM):
  layers     every ResNet-18 convolution whose output map is at most 2 x 2 at 32 or 64 px, forward
             + backward: oneDNN's ``nn.Conv2d`` against ``SmallMapConv2d`` (learn/simclr/small_map_conv.py)
  network    a whole torchvision ResNet-18 step (forward, backward, SGD) at 32 and 64 px, plain
             against the same network with its convolutions replaced
  optimiser  one AdamW step over ResNet-18's 11.2 M parameters: PyTorch's default against fused=True
  allocator  the SimCLR step with glibc's mmap threshold at 32 MiB (where glibc's own rule ends up) against
             1 MiB (learn/allocator.py), alternated A/B/A/B... so that drift in the machine's speed cancels
  inference  the encoder's forward in serving (eval, inference_mode) at batch 1 and 64: plain convolutions
             against SmallMapConv2d, which must take oneDNN's own forward when no backward follows
  simclr     the trainer's SimCLR step (encoder, projection head, NT-Xent, AdamW) on pre-augmented views:
             plain convolutions and default AdamW (as before issue 14), tiny-map convolutions, both

    .venv/bin/python bench/bench_cpu_step.py --threads 2 --batches 64,512
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet18
from xtalwatch.learn.simclr.encoder import build_encoder
from xtalwatch.learn.simclr.heads import build_head
from xtalwatch.learn.simclr.loss import nt_xent_loss
from xtalwatch.learn.simclr.small_map_conv import SmallMapConv2d, use_small_map_convs
from xtalwatch.learn.simclr.train import SimCLRModel

# (in, out, input side, stride, kernel, where) for ResNet-18's convolutions with <= 2 x 2 outputs
LAYERS = [
    (256, 256, 2, 1, 3, "layer3 at 32 px"),
    (128, 256, 4, 2, 3, "layer3.0.conv1 at 32 px"),
    (512, 512, 1, 1, 3, "layer4 at 32 px"),
    (256, 512, 2, 2, 3, "layer4.0.conv1 at 32 px"),
    (256, 512, 2, 2, 1, "layer4.0.downsample at 32 px"),
    (512, 512, 2, 1, 3, "layer4 at 64 px"),
    (256, 512, 4, 2, 3, "layer4.0.conv1 at 64 px"),
]


def _ms(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1000


def bench_layers(batch: int, repeats: int) -> list[str]:
    rows = []
    for c_in, c_out, side, stride, kernel, where in LAYERS:
        conv = SmallMapConv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        x = torch.randn(batch, c_in, side, side).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        times = {}
        for name, forward in (("oneDNN", lambda t, conv=conv: nn.Conv2d.forward(conv, t)), ("small-map", conv)):
            def step(forward=forward, x=x, conv=conv) -> None:
                x.grad, conv.weight.grad = None, None
                y = forward(x)
                y.backward(torch.ones_like(y))
            times[name] = _ms(step, repeats)
        rows.append(f"| {batch} | {where} | {c_in}→{c_out}, {side}x{side}, stride {stride}, {kernel}x{kernel} "
                    f"| {times['oneDNN']:.1f} | {times['small-map']:.1f} | {times['oneDNN'] / times['small-map']:.1f} |")
    return rows


def bench_network(batch: int, size: int, repeats: int) -> str:
    torch.manual_seed(0)
    plain = resnet18(num_classes=128).to(memory_format=torch.channels_last)
    fast = use_small_map_convs(copy.deepcopy(plain))
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    rates = {}
    for name, model in (("plain", plain), ("small-map", fast)):
        opt = torch.optim.SGD(model.parameters(), 0.01)

        def step(model=model, opt=opt) -> None:
            loss = model(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates[name] = batch / (_ms(step, repeats) / 1000)
    return (f"| {batch} | {size} | {rates['plain']:.0f} | {rates['small-map']:.0f} "
            f"| {rates['small-map'] / rates['plain']:.2f} |")


def bench_optimiser(repeats: int) -> str:
    model = resnet18()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    times = {}
    for name, kwargs in (("default", {}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(model.parameters(), 1e-3, **kwargs)
        times[name] = _ms(opt.step, repeats)
    return f"| {times['default']:.1f} | {times['fused']:.1f} | {times['default'] / times['fused']:.1f} |"


def _plain_convs(module: nn.Module) -> nn.Module:
    """The encoder as it was before: every ``SmallMapConv2d`` back to ``nn.Conv2d``, same weights."""
    for name, child in module.named_children():
        if isinstance(child, SmallMapConv2d):
            plain = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                              child.padding, bias=child.bias is not None)
            plain.weight, plain.bias = child.weight, child.bias
            setattr(module, name, plain)
        else:
            _plain_convs(child)
    return module


def bench_simclr(batch: int, size: int, repeats: int) -> str:
    views = torch.rand(2 * batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    rates = {}
    for name, small_map, fused in (("before", False, False), ("small-map", True, False), ("both", True, True)):
        torch.manual_seed(0)
        encoder = build_encoder(size)
        model = SimCLRModel(encoder if small_map else _plain_convs(encoder), build_head("simclr"))
        model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), 1e-3, fused=fused)

        def step(model=model, opt=opt) -> None:
            z = model(views)
            loss = nt_xent_loss(z[:batch], z[batch:])
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates[name] = 2 * batch / (_ms(step, repeats) / 1000)
    return (f"| {batch} | {size} | {rates['before']:.0f} | {rates['small-map']:.0f} | {rates['both']:.0f} "
            f"| {rates['both'] / rates['before']:.2f} |")


def bench_inference(batch: int, size: int, repeats: int) -> str:
    fast = build_encoder(size).eval().to(memory_format=torch.channels_last)
    plain = _plain_convs(copy.deepcopy(fast))
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    best = {"plain": float("inf"), "small-map": float("inf")}
    with torch.inference_mode():
        for _ in range(repeats):  # alternated, best of each
            for name, model in (("plain", plain), ("small-map", fast)):
                best[name] = min(best[name], _ms(lambda model=model: model(x), 10))
    return f"| {batch} | {size} | {best['plain']:.1f} | {best['small-map']:.1f} | {best['small-map'] / best['plain']:.2f} |"


def bench_allocator(batch: int, size: int, rounds: int) -> str:
    import ctypes

    from xtalwatch.learn.allocator import hand_back_freed_memory

    views = torch.rand(2 * batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    model = SimCLRModel(build_encoder(size), build_head("simclr")).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, fused=True)

    def step() -> None:
        z = model(views)
        loss = nt_xent_loss(z[:batch], z[batch:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    totals = {"32 MiB": 0.0, "1 MiB": 0.0}
    for _ in range(rounds):
        for name, threshold in (("32 MiB", 32 << 20), ("1 MiB", 1 << 20)):
            if not hand_back_freed_memory(threshold):
                return "| (glibc's mallopt is not available here) |"
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # start each side without the other's free pages
            totals[name] += _ms(step, 2)
    return (f"| {batch} | {size} | {totals['32 MiB'] / rounds:.0f} | {totals['1 MiB'] / rounds:.0f} "
            f"| {totals['1 MiB'] / totals['32 MiB']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="64,512", help="images per step")
    ap.add_argument("--sizes", default="32,64", help="crop sides for the whole-network step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", default="layers,network,optimiser,inference,allocator,simclr", help="which comparisons to run")
    ap.add_argument("--simclr-batch", type=int, default=256, help="images per SimCLR step (2 views each)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    batches = [int(b) for b in a.batches.split(",")]
    sizes = [int(s) for s in a.sizes.split(",")]
    parts = set(a.parts.split(","))
    print(f"torch {torch.__version__}, {a.threads} threads, {a.repeats} timed repeats after one warm-up")
    if "layers" in parts:
        print("\n| batch | layer | shape | oneDNN ms | small-map ms | speed-up |\n| --: | --- | --- | --: | --: | --: |")
        for batch in batches:
            print("\n".join(bench_layers(batch, a.repeats)), flush=True)
    if "network" in parts:
        print("\n| batch | px | plain img/s | small-map img/s | speed-up |\n| --: | --: | --: | --: | --: |")
        for batch in batches:
            for size in sizes:
                print(bench_network(batch, size, a.repeats), flush=True)
    if "optimiser" in parts:
        print("\n| AdamW default ms | fused ms | speed-up |\n| --: | --: | --: |")
        print(bench_optimiser(a.repeats * 3), flush=True)
    if "inference" in parts:
        print("\n| batch | px | plain ms | small-map ms | ratio |\n| --: | --: | --: | --: | --: |")
        for batch in (1, 64):
            for size in sizes:
                print(bench_inference(batch, size, a.repeats), flush=True)
    if "allocator" in parts:
        print("\n| SimCLR batch | px | ms/step, threshold 32 MiB | ms/step, 1 MiB | cost |\n| --: | --: | --: | --: | --: |")
        for size in sizes:
            print(bench_allocator(a.simclr_batch, size, a.repeats), flush=True)
    if "simclr" not in parts:
        return
    print("\n| SimCLR batch | px | before views/s | small-map views/s | + fused AdamW views/s | speed-up |\n"
          "| --: | --: | --: | --: | --: | --: |")
    for size in sizes:
        print(bench_simclr(a.simclr_batch, size, a.repeats), flush=True)


if __name__ == "__main__":
    main()
