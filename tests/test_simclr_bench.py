"""bench/bench_vs_lightly.py runs end to end on a tiny ImageFolder (lightly is a bench-only extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_vs_lightly.py"


def test_bench_vs_lightly_writes_one_row_per_size(tmp_path: Path) -> None:
    pytest.importorskip("lightly", reason="lightly is the bench-only extra: pip install 'lightly==1.6.0'")
    rng = np.random.default_rng(0)
    for cls in ("clear", "needles"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(8):
            cv2.imwrite(str(tmp_path / "images" / cls / f"{i}.png"), rng.integers(0, 256, (24, 24, 3), np.uint8))
    table = tmp_path / "table.md"
    subprocess.run([sys.executable, str(BENCH), "--images", str(tmp_path / "images"), "--sizes", "16",
                    "--batch", "8", "--epochs", "1", "--threads", "1", "--markdown", str(table)],
                   check=True, capture_output=True, timeout=300)
    rows = [line for line in table.read_text().splitlines() if line.startswith("| 16 |")]
    assert len(rows) == 1 and "auto → standard" in rows[0]
    lightly_vps, xtalwatch_vps = float(rows[0].split("|")[5]), float(rows[0].split("|")[7])
    assert lightly_vps > 0 and xtalwatch_vps > 0
