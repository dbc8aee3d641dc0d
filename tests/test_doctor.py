"""`xtalwatch doctor` on real temporary folders, real sockets and real /proc-style files."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from xtalwatch.cli import main
from xtalwatch.config import load_settings
from xtalwatch.observe.doctor import (
    check_disk,
    check_gpu,
    check_inotify,
    check_metrics_port,
    check_model,
    check_state_dir,
    check_watch_dir,
    count_folders,
    exit_code,
    format_check,
)
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.web import WebServer, build_app


@pytest.fixture(autouse=True)
def _drop_cli_log_handler() -> Iterator[None]:
    """The CLI points a log handler at this test's captured stderr; later tests must not write to it."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_xtalwatch", False):
            root.removeHandler(handler)


def write_config(path: Path, watch: Path, state: Path, port: int = 0) -> Path:
    path.write_text(f"watch:\n  dir: {watch}\nstate:\n  dir: {state}\nmetrics:\n  port: {port}\n")
    return path


def lines_by_check(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in {"OK", "WARN", "FAIL"}:
            found.setdefault(parts[1], []).append(parts[0])
    return found


def test_missing_watch_dir_fails_and_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "imager-share"
    config = write_config(tmp_path / "xtalwatch.yaml", missing, tmp_path / "state")
    assert main(["doctor", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    fail = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert fail and "watch.dir" in fail[0] and str(missing) in fail[0] and str(config) in fail[0]
    assert "fix:" in out


def test_fine_setup_prints_ok_lines_and_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    watch, state = tmp_path / "imager", tmp_path / "state"
    (watch / "plate1" / "A1").mkdir(parents=True)
    state.mkdir()
    config = write_config(tmp_path / "xtalwatch.yaml", watch, state)
    assert main(["doctor", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    checks = lines_by_check(out)
    for name in ("config", "watch", "state", "inotify", "metrics", "plugins"):
        assert checks[name] == ["OK"], out
    assert "(3 folders)" in out
    assert checks["model"] == ["WARN"] and "xtalwatch train --now" in out
    assert {"disk", "gpu", "user"} <= set(checks)
    assert "FAIL" not in checks["disk"]


def test_count_folders(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"p{i}" / "w").mkdir(parents=True)
    (tmp_path / "file.jpg").write_bytes(b"x")
    (tmp_path / "loop").symlink_to(tmp_path)  # not followed
    counted = count_folders(tmp_path)
    assert (counted.dirs, counted.unreadable, counted.truncated) == (11, (), False)
    assert count_folders(tmp_path, limit=4).truncated


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "max_user_instances").write_text("128\n")
    return proc


@pytest.mark.parametrize(("watches", "level"), [(100, "FAIL"), (16, "FAIL"), (30, "WARN"), (10_000, "OK")])
def test_inotify_limits_against_folder_count(tmp_path: Path, proc: Path, watches: int, level: str) -> None:
    watch = tmp_path / "imager"
    for i in range(15):
        (watch / f"plate{i}").mkdir(parents=True)
    (proc / "max_user_watches").write_text(f"{watches}\n")
    settings = load_settings(None, {"watch.dir": watch, "state.dir": tmp_path / "state"})
    if watches == 100:  # more folders than watches
        for i in range(100):
            (watch / f"more{i}").mkdir()
    check = check_inotify(settings, count_folders(watch), proc)
    assert check.level == level, check
    if level != "OK":
        assert "max_user_watches" in check.fix


def test_inotify_poll_mode_and_unreadable_limits(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    settings = load_settings(None, {"watch.dir": tmp_path / "w", "state.dir": tmp_path / "s", "watch.mode": "poll"})
    assert check_inotify(settings, None, tmp_path / "nowhere").level == "OK"
    settings = load_settings(None, {"watch.dir": tmp_path / "w", "state.dir": tmp_path / "s"})
    check = check_inotify(settings, None, tmp_path / "nowhere")
    assert check.level == "WARN" and "poll" in check.fix


def test_real_proc_limits_are_read() -> None:
    if not Path("/proc/sys/fs/inotify/max_user_watches").exists():
        pytest.skip("not Linux")
    settings = load_settings(None, {"state.dir": Path("/tmp/x")})
    check = check_inotify(settings, None)
    assert "max_user_watches=" in check.message


def test_model_present_missing_and_broken(tmp_path: Path) -> None:
    settings = load_settings(None, {"state.dir": tmp_path})
    assert check_model(settings).level == "WARN"
    models = tmp_path / "models"
    (models / "20260101-020000").mkdir(parents=True)
    (models / "current").symlink_to("20260101-020000")
    check = check_model(settings)
    assert (check.level, check.message) == ("OK", "serving 20260101-020000")
    (models / "20260101-020000").rmdir()
    check = check_model(settings)
    assert check.level == "FAIL" and "rollback" in check.fix


def test_state_dir_cases(tmp_path: Path) -> None:
    assert check_state_dir(load_settings(None, {"state.dir": tmp_path})).level == "OK"
    assert check_state_dir(load_settings(None, {"state.dir": tmp_path / "new" / "state"})).level == "WARN"
    (tmp_path / "afile").write_text("")
    assert check_state_dir(load_settings(None, {"state.dir": tmp_path / "afile"})).level == "FAIL"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read and write everything")
def test_permissions_as_an_ordinary_user(tmp_path: Path) -> None:
    watch, state = tmp_path / "imager", tmp_path / "state"
    (watch / "locked").mkdir(parents=True)
    state.mkdir()
    (watch / "locked").chmod(0)
    state.chmod(0o500)
    try:
        settings = load_settings(None, {"watch.dir": watch, "state.dir": state})
        assert check_watch_dir(settings, count_folders(watch)).level == "WARN"
        assert check_state_dir(settings).level == "FAIL"
    finally:
        (watch / "locked").chmod(0o700)
        state.chmod(0o700)


def test_watch_dir_not_set(tmp_path: Path) -> None:
    check = check_watch_dir(load_settings(None, {"state.dir": tmp_path}), None)
    assert check.level == "FAIL" and "watch.dir" in check.message


def test_disk_thresholds(tmp_path: Path) -> None:
    settings = load_settings(None, {"state.dir": tmp_path / "not-yet"})
    assert check_disk(settings, fail_bytes=10**18).level == "FAIL"
    assert check_disk(settings, fail_bytes=0, warn_bytes=10**18).level == "WARN"
    assert str(tmp_path) in check_disk(settings).message


def test_metrics_port_answered_by_xtalwatch_free_or_taken(tmp_path: Path) -> None:
    web = WebServer(build_app(Metrics(process_collectors=False)), "127.0.0.1", 0)
    web.start()
    try:
        settings = load_settings(None, {"state.dir": tmp_path, "metrics.port": web.port})
        check = check_metrics_port(settings)
        assert check.level == "OK" and "already serving" in check.message
    finally:
        web.stop()
    assert "is free" in check_metrics_port(settings).message

    with socket.socket() as other:  # something else: accepts and hangs up
        other.bind(("127.0.0.1", 0))
        other.listen()

        def hang_up() -> None:
            conn, _ = other.accept()
            conn.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        settings = load_settings(None, {"state.dir": tmp_path, "metrics.port": other.getsockname()[1]})
        check = check_metrics_port(settings)
        thread.join(timeout=5)
    assert check.level == "FAIL" and "another program" in check.message

    exposed = load_settings(None, {"state.dir": tmp_path, "metrics.port": 0, "metrics.host": "0.0.0.0"})
    assert check_metrics_port(exposed).level == "WARN"


def test_gpu_visibility_matches_torch(tmp_path: Path) -> None:
    auto = check_gpu(load_settings(None, {"state.dir": tmp_path}))
    forced = check_gpu(load_settings(None, {"state.dir": tmp_path, "train.device": "cuda"}))
    if torch.cuda.is_available():
        assert auto.level == forced.level == "OK" and "CUDA" in auto.message
    else:
        assert auto.level == "WARN" and forced.level == "FAIL" and "train.device" in forced.fix


def test_format_and_exit_code(tmp_path: Path) -> None:
    check = check_watch_dir(load_settings(None, {"state.dir": tmp_path}), None)
    text = format_check(check)
    assert text.startswith("FAIL  watch") and "\n" in text and "fix: set watch.dir" in text
    assert exit_code([check]) == 1
    assert exit_code([check_state_dir(load_settings(None, {"state.dir": tmp_path}))]) == 0


def test_plugins_that_run_could_not_load_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    watch, state = tmp_path / "imager", tmp_path / "state"
    watch.mkdir()
    config = write_config(tmp_path / "xtalwatch.yaml", watch, state)
    with config.open("a") as f:
        f.write("alerts:\n  sinks:\n    - {type: webhook, url: 'https://hooks.example.test/T0/B0/SECRET', "
                "headers_env: {X-Key: XTW_DOCTOR_UNSET}}\n    - {type: pager}\n")
    assert main(["doctor", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    [line] = [ln for ln in out.splitlines() if ln.startswith("FAIL") and "plugins" in ln]
    assert "alerts.sinks.0" in line and "XTW_DOCTOR_UNSET" in line and "(and 1 more)" in line
    assert "SECRET" not in out
