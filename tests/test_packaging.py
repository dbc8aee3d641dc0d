"""The wheel installs `xtalwatch` and `xtalwatch_plugins`, never a top-level `daemon` package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("xtalwatch-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "daemon" not in tops
    assert {"xtalwatch", "xtalwatch_plugins"} <= tops
    assert "xtalwatch/cli.py" in names and "xtalwatch_plugins/adapters/minstrel.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[xtalwatch.plugins]" in text and "xtalwatch = xtalwatch.cli:main" in text
