"""The command line: --help everywhere, status --json, and journald-friendly logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import jpeg_bytes
from xtalwatch.cli import build_parser

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def xtalwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xtalwatch", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    proc = xtalwatch(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: xtalwatch {command}" in proc.stdout


def test_core_subcommands_exist() -> None:
    assert {"run", "ingest", "status", "config"} <= set(SUBCOMMANDS)


def test_status_json_of_a_stopped_service(tmp_path: Path) -> None:
    watch = tmp_path / "imager" / "P1" / "inspection_02"
    watch.mkdir(parents=True)
    (watch / "P1_01A_1.jpg").write_bytes(jpeg_bytes(seed=1))
    (watch / "P1_02A_1.jpg").write_bytes(jpeg_bytes(seed=2))
    (watch / "broken.jpg").write_bytes(b"")
    state = tmp_path / "state"
    assert xtalwatch("ingest", str(tmp_path / "imager"), "--state", str(state)).returncode == 0
    proc = xtalwatch("status", "--json", "--state", str(state))
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["images_total"] == 2
    assert status["rejected_total"] == 1
    assert status["rejected_by_reason"] == {"empty_file": 1}
    assert status["plates"] == ["P1"]
    assert status["wells_total"] == 2
    assert status["newest_images"][0]["inspection"] == 2
    assert status["model"] is None and status["model_status"] == "no model yet"
    text = xtalwatch("status", "--state", str(state)).stdout
    assert "images: 2 in 1 plates, 2 wells" in text and "broken.jpg: empty_file" in text
    assert "model: no model yet" in text


def test_status_without_state_says_so(tmp_path: Path) -> None:
    proc = xtalwatch("status", "--state", str(tmp_path / "none"))
    assert proc.returncode == 1 and "no catalogue here" in proc.stderr


def test_logs_under_journald_have_priorities_and_no_colour(tmp_path: Path) -> None:
    import os

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "bad.jpg").write_bytes(b"")
    env = {**os.environ, "JOURNAL_STREAM": "8:1234"}
    proc = xtalwatch("ingest", str(tmp_path / "img"), "--state", str(tmp_path / "s"), env=env)
    lines = [line for line in proc.stderr.splitlines() if line]
    assert lines and all(line.startswith("<") for line in lines), proc.stderr
    assert any(line.startswith("<4>WARNING xtalwatch.stages.ingest: rejected") for line in lines)
    assert "\033[" not in proc.stderr


def test_log_level_is_honoured(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "bad.jpg").write_bytes(b"")
    proc = xtalwatch("ingest", str(tmp_path / "img"), "--state", str(tmp_path / "s"), "--log-level", "ERROR")
    assert "rejected" not in proc.stderr
