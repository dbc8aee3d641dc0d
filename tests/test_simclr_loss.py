"""NT-Xent against a slow reference double loop and its closed form."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import xtalwatch
from xtalwatch.learn.simclr.loss import nt_xent_loss, nt_xent_rows


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """The docstring formula, literally: views of image k at 2k-1 and 2k (0-based: 2k, 2k+1)."""
    n = z1.shape[0]
    z = [None] * (2 * n)
    for k in range(n):
        z[2 * k], z[2 * k + 1] = z1[k].double(), z2[k].double()

    def s(i: int, j: int) -> float:
        return float(F.cosine_similarity(z[i], z[j], dim=0))

    def loss(i: int, j: int) -> float:
        denominator = sum(math.exp(s(i, k) / temperature) for k in range(2 * n) if k != i)
        return -math.log(math.exp(s(i, j) / temperature) / denominator)

    return sum(loss(2 * k, 2 * k + 1) + loss(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("d", [3, 32])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_reference_loop(n: int, d: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert float(nt_xent_loss(z1, z2, temperature)) == pytest.approx(reference_nt_xent(z1, z2, temperature), abs=1e-5)


@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
def test_identical_embeddings_give_log_2n_minus_1(n: int, temperature: float) -> None:
    z = torch.randn(1, 8).repeat(n, 1)
    assert float(nt_xent_loss(z, z.clone(), temperature)) == pytest.approx(math.log(2 * n - 1), abs=1e-5)


def test_public_api_is_lazy_and_exported() -> None:
    assert xtalwatch.nt_xent_loss is nt_xent_loss
    assert "nt_xent_loss" in xtalwatch.__all__
    code = "import sys, xtalwatch; assert 'torch' not in sys.modules, 'import xtalwatch imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rows_split_averages_to_full_loss() -> None:
    # What each DDP rank computes: its own anchors against everything; the mean is the loss.
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    z = torch.cat([z1, z2])
    parts = [nt_xent_rows(z, torch.tensor([r * 3, r * 3 + 1, r * 3 + 2, 6 + r * 3, 7 + r * 3, 8 + r * 3]), 0.5)
             for r in range(2)]
    assert float(sum(parts) / 2) == pytest.approx(float(nt_xent_loss(z1, z2)), abs=1e-6)


def test_gradients_flow_and_bf16_inputs_work() -> None:
    z1 = torch.randn(4, 8, requires_grad=True)
    z2 = torch.randn(4, 8)
    nt_xent_loss(z1.bfloat16(), z2.bfloat16()).backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_bad_temperature_is_refused(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(torch.randn(2, 3), torch.randn(2, 3), temperature)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="z1 and z2"):
        nt_xent_loss(torch.randn(2, 3), torch.randn(3, 3))
