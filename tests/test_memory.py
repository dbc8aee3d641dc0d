"""Memory: micro-batched SimCLR steps equal the whole step, and evaluation streams from uint8 caches.

Resident-memory figures are in bench/bench_memory.py; these tests prove the mechanisms, exactly.
"""

from __future__ import annotations

import copy
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from xtalwatch.config import TrainConfig
from xtalwatch.learn.evaluate import EvalConfig, run_evaluation
from xtalwatch.learn.simclr.data import from_arrays, load_folder, take_rows
from xtalwatch.learn.simclr.loss import nt_xent_loss
from xtalwatch.learn.simclr.microbatch import activation_bytes_per_view, contrastive_backward, micro_batch_for
from xtalwatch.learn.simclr.train import train


def _tiny(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, stride=2, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(8))
    return nn.Sequential(*layers, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16))


def _views(b: int = 6, s: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, s, s, generator=g), torch.rand(b, 3, s, s, generator=g)


def _step(model: nn.Module, micro: int) -> tuple[float, list[torch.Tensor]]:
    v1, v2 = _views()
    b = v1.shape[0]
    model.zero_grad(set_to_none=True)
    loss = contrastive_backward(model, v1, v2, lambda z: nt_xent_loss(z[:b], z[b:], 0.5), micro, model=model)
    return float(loss), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_micro_batched_step_has_the_whole_steps_loss_and_gradient(micro: int) -> None:
    model = _tiny(batchnorm=False)
    whole_loss, whole_grads = _step(model, micro=6)
    loss, grads = _step(model, micro=micro)
    assert loss == pytest.approx(whole_loss, abs=1e-6)
    for g, w in zip(grads, whole_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_the_extra_no_grad_pass_leaves_batchnorm_statistics_alone() -> None:
    """Running statistics move once per micro-batch, as the gradient pass alone would move them."""
    model = _tiny(batchnorm=True)
    reference = copy.deepcopy(model)
    _step(model, micro=2)
    v1, v2 = _views()
    with torch.no_grad():
        for a in range(0, 6, 2):
            reference(torch.cat([v1[a:a + 2], v2[a:a + 2]]))
    for (name, got), (_, want) in zip(model.named_buffers(), reference.named_buffers(), strict=True):
        torch.testing.assert_close(got, want, msg=name)


def test_activation_bytes_are_what_autograd_saves() -> None:
    # conv saves its input (3 channels), ReLU its output (4 channels); weights are not activations
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU())
    assert activation_bytes_per_view(model, 10, channels_last=False) == (3 + 4) * 10 * 10 * 4


def test_counting_activations_keeps_no_tensor_alive() -> None:
    """Counting runs once per training run and per supervised fit: nothing of its graph may outlive it
    (a pack hook that returned the tensor kept every counted forward alive, ~80 MB a call at 32 px)."""
    import gc
    import weakref

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU())  # ReLU saves its own output
    outputs: list[weakref.ref] = []
    model[1].register_forward_hook(lambda _m, _i, out: outputs.append(weakref.ref(out)))
    activation_bytes_per_view(model, 10, channels_last=False)
    gc.collect()
    assert len(outputs) == 2 and all(ref() is None for ref in outputs)


def test_micro_batches_are_equal_and_fit_the_budget() -> None:
    assert micro_batch_for(256, 1000, None) == 256
    assert micro_batch_for(256, 1000, 1e12) == 256
    # 10 MB fits 33 images of 2 views x 100 kB (x 1.5 for the backward): 8 equal pieces of 32, not 7 x 33 + 25
    assert micro_batch_for(256, 100_000, 10_000_000) == 32
    assert micro_batch_for(256, 10**9, 1.0) == 1  # never below one image (two views)


def test_training_splits_steps_that_would_not_fit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = from_arrays(rng.integers(0, 256, (12, 24, 24, 3), np.uint8))
    base = dict(image_size=24, batch_size=8, max_steps=2, min_images=4, seed=3, checkpoint_every_steps=100)
    split = train(TrainConfig(**base, max_memory_gb=0.001), data, tmp_path / "split", progress=False)
    whole = train(TrainConfig(**base, max_memory_gb=None), data, tmp_path / "whole", progress=False)
    assert split.micro_batch == 1 and whole.micro_batch is None
    # (BatchNorm normalises each micro-batch on its own, so the losses are not the whole step's)
    assert split.steps == whole.steps == 2 and all(np.isfinite(split.losses))


def _folder(root: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = ("clear", "needles", "plates")[i % 3]
        (root / cls).mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 256, (size, size, 3), np.uint8)
        cv2.circle(img, (size // 2, size // 2), 4 + 4 * (i % 3), (255, 255, 255), -1)
        assert cv2.imwrite(str(root / cls / f"{i:04d}.png"), img)
    return root


def test_subsets_are_memory_mapped_rows_of_the_cache(tmp_path: Path) -> None:
    data = load_folder(_folder(tmp_path / "img", 30, 16), 16, tmp_path / "cache")
    idx = np.array([5, 1, 29, 7])
    rows = take_rows(data, idx, tmp_path / "cache", block=3)
    assert isinstance(rows.images, np.memmap) and not rows.images.flags.writeable
    np.testing.assert_array_equal(rows.images, data.images[idx])
    assert rows.paths == [data.paths[i] for i in idx] and rows.fingerprint != data.fingerprint
    assert take_rows(data, idx, tmp_path / "cache").fingerprint == rows.fingerprint  # found again
    assert take_rows(data, np.arange(30), tmp_path / "cache") is data
    with pytest.raises(ValueError, match="positions"):
        take_rows(data, np.array([30]), tmp_path / "cache")


def test_evaluation_never_holds_the_images_in_memory(tmp_path: Path) -> None:
    """Numpy's allocations (traced by tracemalloc) stay far below one uint8 copy of the images.

    Torch's own allocations are not traced; what this catches is ``crops[index]`` copies, a list of
    decoded crops, or float copies of the whole set, which all go through numpy.
    """
    size, n = 64, 1200  # many images, so that one batch (256 x 12 KiB) is far below the whole (14 MiB)
    methods = ["simclr_linear", "simclrv2_distill"]

    def evaluate(folder: Path, out: Path) -> None:
        tcfg = TrainConfig(image_size=size, batch_size=8, max_steps=1, min_images=2, small_stem=False)
        run_evaluation(EvalConfig(data_dir=folder, out_dir=out, label_fractions=[0.5], train=tcfg, preprocess=None,
                                  supervised_epochs=0, min_supervised_steps=1, distill_epochs=0,
                                  fit_batch_size=8, methods=methods, progress=False))

    evaluate(_folder(tmp_path / "warm", 12, size), tmp_path / "warm-out")  # imports happen outside the trace
    folder = _folder(tmp_path / "img", n, size)
    tracemalloc.start()
    try:
        evaluate(folder, tmp_path / "traced")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    images_bytes = n * size * size * 3
    assert peak < images_bytes / 2, f"numpy peaked at {peak / 2**20:.1f} MiB; the images are {images_bytes / 2**20:.1f} MiB"


def test_the_split_depends_on_the_config_not_on_what_the_process_holds() -> None:
    """A resumed run is a fresh, small process: its micro-batches (and so its BatchNorm batches and
    losses) must be those of the long-lived process it replaces."""
    from xtalwatch.learn.simclr.encoder import build_encoder
    from xtalwatch.learn.simclr.heads import build_head
    from xtalwatch.learn.simclr.microbatch import step_splitter
    from xtalwatch.learn.simclr.train import SimCLRModel

    cfg = TrainConfig(image_size=64, max_memory_gb=1.2)
    model = SimCLRModel(build_encoder(64, False), build_head("simclr"))
    before = step_splitter(cfg.max_memory_gb, model, 64, views_per_image=2)(256)
    hog = np.ones(400 * 2**20, np.uint8)  # 400 MiB more resident
    after = step_splitter(cfg.max_memory_gb, model, 64, views_per_image=2)(256)
    assert hog.sum() > 0 and before == after and 1 <= before < 256


def _tiny_classifier() -> nn.Module:
    from xtalwatch.learn.heads.finetune import Classifier
    from xtalwatch.learn.simclr.encoder import FEATURE_DIM

    torch.manual_seed(0)
    return Classifier(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(8 * 6 * 6, FEATURE_DIM)), 3)


@pytest.mark.parametrize("loop", ["fit", "distil"])
def test_supervised_steps_in_micro_batches_learn_what_whole_steps_learn(loop: str) -> None:
    """Cross-entropy and distillation are sums over images: with a budget too small for any batch
    (one image per micro-batch) the weights after a few steps are those of whole steps."""
    from xtalwatch.learn.heads.finetune import FitConfig, distil, fit_classifier

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    labels = np.arange(40) % 3
    trained = {}
    for name, budget in (("whole", None), ("split", 1e-9)):
        cfg = FitConfig(steps=3, batch_size=16, max_memory_gb=budget)
        model = _tiny_classifier()
        if loop == "fit":
            losses = fit_classifier(model, images, labels, cfg, progress=False)
        else:
            fit_classifier(model, images, labels, FitConfig(steps=1, batch_size=16, max_memory_gb=None), progress=False)
            model, losses = distil(model, images, cfg, progress=False)
        trained[name] = (losses, [p.detach().clone() for p in model.parameters()])
    assert trained["split"][0] == pytest.approx(trained["whole"][0], rel=1e-5)
    for got, want in zip(trained["split"][1], trained["whole"][1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_supervised_step_splits_only_when_its_activations_do_not_fit() -> None:
    from xtalwatch.learn.heads.finetune import Classifier
    from xtalwatch.learn.simclr.encoder import build_encoder
    from xtalwatch.learn.simclr.microbatch import step_splitter

    model = Classifier(build_encoder(128), 7)
    assert step_splitter(2.0, model, 128, views_per_image=1)(64) == 64  # ~7 MiB a view: 64 fit in 2 GiB
    assert step_splitter(2.0, model, 128, views_per_image=1)(512) < 512
    assert step_splitter(None, model, 128, views_per_image=1)(512) == 512
