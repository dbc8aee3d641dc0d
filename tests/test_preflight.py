"""`config check` runs every check `run` makes before it starts, and both say each problem in one line.

Each case here once passed `config check` and then failed in `run` with a traceback. Now both
commands refuse it with exit status 2 and the same ``file: key.path: message`` line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from xtalwatch.config import load_settings
from xtalwatch.observe.preflight import preflight


def xtalwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xtalwatch", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    """The valid start of a config: a watch folder, a state folder beside it, any free metrics port."""
    (tmp_path / "imager").mkdir()
    yield f"watch: {{dir: {tmp_path / 'imager'}}}\nstate: {{dir: {tmp_path / 'state'}}}\nmetrics: {{port: 0}}\n"


def assert_refused_by_both(tmp_path: Path, text: str, expected: str, env: dict[str, str] | None = None) -> None:
    path = tmp_path / "xtalwatch.yaml"
    path.write_text(text)
    for command in (["config", "check", str(path)], ["run", "--config", str(path)]):
        proc = xtalwatch(*command, env=env)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{path}: ")]
        assert expected in line, (command, proc.stderr)


def test_a_good_config_passes(tmp_path: Path, base: str) -> None:
    path = tmp_path / "xtalwatch.yaml"
    path.write_text(base)
    assert preflight(load_settings(path), str(path)) == []
    assert not (tmp_path / "state").exists()  # checked, not created


def test_unknown_adapter(tmp_path: Path, base: str) -> None:
    assert_refused_by_both(tmp_path, base + "adapters: {order: [rockmaker, imagr]}\n",
                           "adapters.order: no adapter plugin named 'imagr'")


def test_unknown_sink_and_missing_module_attr(tmp_path: Path, base: str) -> None:
    assert_refused_by_both(tmp_path, base + "alerts: {sinks: [{type: pager}]}\n",
                           "alerts.sinks.0: no sink plugin named 'pager'")
    assert_refused_by_both(tmp_path, base + "alerts: {sinks: [{type: 'lab_nowhere.sinks:Pager'}]}\n",
                           "alerts.sinks.0: plugin 'lab_nowhere.sinks:Pager': cannot import")


def test_unset_secret_variable(tmp_path: Path, base: str) -> None:
    sink = ("alerts: {sinks: [{type: email, host: localhost, from_address: a@lab.test, to: [b@lab.test], "
            "username_env: XTW_SMTP_USER, password_env: XTW_UNSET_SMTP_PASS}]}\n")
    assert_refused_by_both(tmp_path, base + sink, "alerts.sinks.0: alert sink 'email' (email): ValueError: "
                           "environment variable XTW_UNSET_SMTP_PASS is not set", env={"XTW_SMTP_USER": "robot"})


def test_state_dir_that_is_a_file(tmp_path: Path, base: str) -> None:
    (tmp_path / "state").write_text("not a folder")
    assert_refused_by_both(tmp_path, base, "state.dir: ")
    assert (tmp_path / "state").read_text() == "not a folder"


def test_metrics_address_that_cannot_be_bound(tmp_path: Path, base: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_refused_by_both(tmp_path, base.replace("port: 0", f"port: {port}"),
                               f"metrics.host/metrics.port: cannot bind 127.0.0.1:{port}")
    assert_refused_by_both(tmp_path, base.replace("{port: 0}", "{port: 0, host: no-such-host.invalid}"),
                           "metrics.host/metrics.port: cannot resolve 'no-such-host.invalid'")


def test_too_many_workers_is_a_config_error(tmp_path: Path, base: str) -> None:
    assert_refused_by_both(tmp_path, base + "ingest: {workers: 1.0e+30}\n", "ingest.workers: ")


def test_webhook_url_never_printed(tmp_path: Path, base: str) -> None:
    secret = "https://hooks.example.test/services/T000/B000/SECRETPATH?token=SECRETTOKEN"
    path = tmp_path / "xtalwatch.yaml"
    path.write_text(base + f"alerts: {{sinks: [{{type: webhook, url: '{secret}', headers_env: {{X-Key: XTW_UNSET}}}}]}}\n")
    proc = xtalwatch("config", "check", str(path))
    assert proc.returncode == 2 and "XTW_UNSET" in proc.stderr
    path.write_text(base + f"alerts: {{sinks: [{{type: webhook, url: '{secret}'}}]}}\n")
    proc = xtalwatch("config", "check", "--show", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "https://hooks.example.test/…" in proc.stdout
    assert "SECRET" not in proc.stdout + proc.stderr
