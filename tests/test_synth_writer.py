"""The synthetic imager on disk: paced partial writes, stopping, labels beside the tree, the CLI."""

from __future__ import annotations

import _thread
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from xtalwatch.cli import main
from xtalwatch.tools.synth import generate_plates, read_labels
from xtalwatch.tools.synth.writer import encode, write_partially


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_file_is_visible_partially_then_complete(tmp_path: Path) -> None:
    data = encode(np.full((64, 64, 3), 90, np.uint8), "jpg")
    path = tmp_path / "deep" / "x.jpg"
    seen: list[int] = []

    def watch() -> None:
        while not path.exists():
            time.sleep(0.005)
        time.sleep(0.1)
        seen.append(path.stat().st_size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    write_partially(path, data, 0.5)
    watcher.join()
    assert 0 < seen[0] < len(data), "the first chunk should be on disk, alone, during the pause"
    assert path.read_bytes() == data


def test_paced_run_writes_complete_files_and_labels_as_it_goes(tmp_path: Path) -> None:
    out = tmp_path / "imager"
    started = time.monotonic()
    ticks: list[int] = []
    rows = generate_plates(out, plates=1, layout="export", wells=24, drops=1, inspections=1, size=(48, 40),
                           seed=3, rate=100.0, workers=1, progress=ticks.append)
    elapsed = time.monotonic() - started
    assert len(rows) == 24 and elapsed >= 0.2  # 24 files at 100/s cannot take less than 0.23 s
    assert sum(ticks) == 24
    files = _files(out)
    assert [p.relative_to(out).as_posix() for p in files] == sorted(r.path for r in rows)
    assert all(cv2.imread(str(p)) is not None for p in files)
    assert read_labels(tmp_path / "imager_labels.csv") == rows


def test_ctrl_c_during_the_pause_still_completes_the_file(tmp_path: Path) -> None:
    data = encode(np.full((64, 64, 3), 90, np.uint8), "jpg")
    path = tmp_path / "x.jpg"
    # A test run started in the background by a shell inherits SIGINT ignored, and interrupt_main
    # then does nothing: give this test the handler an interactive Ctrl-C meets.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        timer = threading.Timer(0.1, _thread.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            write_partially(path, data, 2.0)
            time.sleep(5)  # the interrupt may land just after the wait returns
    finally:
        signal.signal(signal.SIGINT, previous)
    assert path.read_bytes() == data


def test_stop_ends_a_paced_run_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "imager"
    stop = threading.Event()
    done: list[int] = []

    def tick(n: int) -> None:  # stop from outside once five files are complete, as Ctrl-C would
        done.append(n)
        if len(done) == 5:
            stop.set()

    rows = generate_plates(out, plates=1, layout="rockmaker", wells=96, drops=3, size=(48, 40), seed=1,
                           rate=50.0, workers=2, stop=stop, progress=tick)
    assert len(rows) == 5
    files = _files(out)
    assert len(files) == len(rows) == len(read_labels(tmp_path / "imager_labels.csv"))
    assert all(cv2.imread(str(p)) is not None for p in files), "a stopped run left a truncated file"


def test_cli_writes_labels_beside_the_tree(tmp_path: Path, capsys) -> None:
    out = tmp_path / "plates"
    code = main(["synth", str(out), "--plates", "1", "--layout", "rockmaker", "--wells", "24", "--drops", "1",
                 "--inspections", "2", "--image-size", "40x32", "--seed", "4", "--workers", "1"])
    assert code == 0
    labels = tmp_path / "plates_labels.csv"
    assert labels.exists() and not list(out.rglob("*.csv"))
    rows = read_labels(labels)
    assert len(rows) == 48 and {r.inspection for r in rows} == {1, 2}
    assert all((out / r.path).is_file() for r in rows)
    assert "wrote 48 images" in capsys.readouterr().out
    header = labels.read_text().splitlines()[0]
    assert header == "path,class,plate,well,drop,inspection"


def test_cli_imagefolder_and_explicit_labels(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    labels = out / "labels.csv"  # inside, because asked
    code = main(["synth", str(out), "--imagefolder", "--wells", "24", "--drops", "2", "--image-size", "32x32",
                 "--labels", str(labels), "--class-balance", "clear=0,dark=0.2", "--workers", "1"])
    assert code == 0
    rows = read_labels(labels)
    assert len(rows) == 48 and "clear" not in {r.label for r in rows}
    for r in rows:
        assert r.path.startswith(f"{r.label}/") and r.path.endswith(".png")
        assert (out / r.path).is_file()


def test_cli_refuses_bad_arguments(tmp_path: Path, capsys) -> None:
    assert main(["synth", str(tmp_path / "x"), "--class-balance", "needle=1"]) == 2
    assert "unknown class 'needle'" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "x"), "--class-balance", "realistic"]) == 2
    assert "screen or even" in capsys.readouterr().err


def test_cli_takes_a_named_mix(tmp_path: Path) -> None:
    """``even`` brings back every class at any inspection, for callers that want crystals early."""
    out = tmp_path / "even"
    code = main(["synth", str(out), "--layout", "export", "--wells", "24", "--drops", "2", "--image-size", "32x32",
                 "--class-balance", "even,dark=0", "--workers", "1"])
    assert code == 0
    labels = {r.label for r in read_labels(tmp_path / "even_labels.csv")}
    assert "dark" not in labels and {"needles", "plates", "prisms"} <= labels
