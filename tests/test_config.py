"""Config errors name the file and the key; precedence is flags > environment > file > defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from xtalwatch.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xtalwatch.yaml"
    path.write_text(text)
    return path


def test_settle_seconds_must_be_positive(tmp_path: Path) -> None:
    path = write(tmp_path, "watch:\n  settle_seconds: 0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value) == f"{path}: watch.settle_seconds: must be > 0"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "watch:\n  setle_seconds: 2\n")
    with pytest.raises(ConfigError, match=r"xtalwatch.yaml: watch.setle_seconds: unknown key"):
        load_settings(path)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "wach:\n  dir: /tmp\n")
    with pytest.raises(ConfigError, match=r"xtalwatch.yaml: wach: unknown key"):
        load_settings(path)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "ingest:\n  workers: many\n")
    with pytest.raises(ConfigError, match=r"xtalwatch.yaml: ingest.workers: .*integer"):
        load_settings(path)


def test_bad_choice_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "watch:\n  mode: inotify\n")
    with pytest.raises(ConfigError, match=r"watch.mode: must be 'native' or 'poll'"):
        load_settings(path)


def test_missing_folder_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, f"watch:\n  dir: {tmp_path / 'nope'}\n")
    with pytest.raises(ConfigError, match=r"xtalwatch.yaml: watch.dir: folder does not exist: .*nope"):
        load_settings(path)


def test_malformed_yaml_gives_line(tmp_path: Path) -> None:
    path = write(tmp_path, "watch:\n  dir: [unclosed\n")
    with pytest.raises(ConfigError, match=r"xtalwatch.yaml: line \d+: not valid YAML"):
        load_settings(path)


def test_state_inside_watch_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f"watch:\n  dir: {tmp_path}\nstate:\n  dir: {tmp_path / 'state'}\n")
    with pytest.raises(ConfigError, match="state.dir must not be inside watch.dir"):
        load_settings(path)


def test_precedence_flags_then_env_then_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "watch:\n  settle_seconds: 3\n  poll_interval_seconds: 4\nmetrics:\n  port: 9000\n")
    assert load_settings(path).watch.settle_seconds == 3
    monkeypatch.setenv("XTALWATCH_WATCH__SETTLE_SECONDS", "5")
    monkeypatch.setenv("XTALWATCH_METRICS__PORT", "9001")
    settings = load_settings(path, {"metrics.port": 9002})
    assert settings.watch.settle_seconds == 5  # env beats file
    assert settings.watch.poll_interval_seconds == 4  # file beats default
    assert settings.metrics.port == 9002  # flag beats env


def test_env_error_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XTALWATCH_WATCH__SETTLE_SECONDS", "-1")
    with pytest.raises(ConfigError, match="watch.settle_seconds: must be > 0"):
        load_settings(write(tmp_path, "{}\n"))


def test_shipped_default_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XTALWATCH_WATCH__DIR", str(tmp_path))
    monkeypatch.setenv("XTALWATCH_STATE__DIR", str(tmp_path.parent / "state-for-default-config"))
    settings = load_settings(REPO / "config" / "xtalwatch.yaml")
    assert settings.watch.dir == tmp_path


def test_default_config_file_is_current_and_documented() -> None:
    """The shipped YAML is exactly what the model renders, and every key has a description."""
    from pydantic import BaseModel
    from xtalwatch.config import Settings
    from xtalwatch.tools.config_doc import render_default_config

    assert (REPO / "config" / "xtalwatch.yaml").read_text() == render_default_config(), (
        "config/xtalwatch.yaml is stale: run `xtalwatch config default > config/xtalwatch.yaml`")

    def undocumented(model: type[BaseModel], prefix: str = "") -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                out += undocumented(ann, f"{prefix}{name}.")
            elif not field.description:
                out.append(prefix + name)
        return out

    assert undocumented(Settings) == []


def test_config_check_command(tmp_path: Path) -> None:
    bad = write(tmp_path, "watch:\n  settle_seconds: 0\n")
    proc = subprocess.run([sys.executable, "-m", "xtalwatch", "config", "check", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{bad}: watch.settle_seconds: must be > 0" in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text(f"watch:\n  dir: {tmp_path}\nstate:\n  dir: {tmp_path.parent / 'st'}\n")
    proc = subprocess.run([sys.executable, "-m", "xtalwatch", "config", "check", str(good)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_class_of_folds_sub_classes_and_refuses_the_unknown() -> None:
    from xtalwatch.config import ClassifyConfig

    cfg = ClassifyConfig()
    assert cfg.class_of("crystals") == "crystals" and cfg.class_of("needles") == "crystals"
    assert cfg.class_of("clear") == "clear" and cfg.class_of("sparkly") is None


# -- every bad file is one line, never a traceback ----------------------------------------------
def test_binary_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "xtalwatch.yaml"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe binary")
    with pytest.raises(ConfigError, match=r"xtalwatch.yaml: not a text file \(byte \d+ is not UTF-8\)$"):
        load_settings(path)


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "watch: " + "[" * 10_000 + "]" * 10_000 + "\n")
    with pytest.raises(ConfigError, match=r"xtalwatch.yaml: not valid YAML: nested too deeply$"):
        load_settings(path)


def test_bad_json_in_a_section_variable_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XTALWATCH_WATCH", "{settle_seconds: 3")
    with pytest.raises(ConfigError, match=r"^environment: XTALWATCH_WATCH: not valid JSON") as err:
        load_settings(write(tmp_path, "{}\n"))
    assert "\n" not in str(err.value)
    monkeypatch.delenv("XTALWATCH_WATCH")
    monkeypatch.setenv("XTALWATCH_ALERTS__SINKS", '[{"type": "webhook", ')
    with pytest.raises(ConfigError, match=r"^environment: XTALWATCH_ALERTS__SINKS: not valid JSON"):
        load_settings(write(tmp_path, "{}\n"))


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"xtalwatch.yaml: is empty: write at least watch.dir, or pass --watch"):
        load_settings(write(tmp_path, text))


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "watch:\n  settle_seconds: 2\n  mode: poll\n  settle_seconds: 5\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value) == f"{path}: line 4: not valid YAML: duplicate key 'settle_seconds' (first on line 2)"
    path = write(tmp_path, "watch: {}\nmetrics: {port: 1}\nwatch: {}\n")
    with pytest.raises(ConfigError, match=r"line 3: not valid YAML: duplicate key 'watch' \(first on line 1\)"):
        load_settings(path)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, "x-base: &b {settle_seconds: 3}\n")  # an unknown key, but no duplicate-key error
    with pytest.raises(ConfigError, match="x-base: unknown key"):
        load_settings(path)
    path = write(tmp_path, "watch:\n  <<: {settle_seconds: 3}\n  settle_seconds: 4\n")
    assert load_settings(path).watch.settle_seconds == 4


def _float_fields() -> list[str]:
    from pydantic import BaseModel
    from xtalwatch.config import Settings

    found = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            found += [f"{section}.{name}" for name, f in model.model_fields.items()
                      if f.annotation in (float, float | None)]
    return found


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_every_float_field_refuses_non_finite(tmp_path: Path, value: str) -> None:
    fields = _float_fields()
    assert "watch.settle_seconds" in fields and "retrain.interval_hours" in fields and len(fields) > 30
    sections: dict[str, list[str]] = {}
    for dotted in fields:
        section, key = dotted.split(".")
        sections.setdefault(section, []).append(f"  {key}: {value}")
    path = write(tmp_path, "".join(f"{s}:\n" + "\n".join(keys) + "\n" for s, keys in sections.items()))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    refused = {line.split(": ")[1] for line in str(err.value).splitlines()
               if line.endswith("must be a finite number (not inf or nan)")}
    assert refused == set(fields)


def test_non_finite_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XTALWATCH_ALERTS__RETRY_MAX_SECONDS", "inf")
    with pytest.raises(ConfigError, match="alerts.retry_max_seconds: must be a finite number"):
        load_settings(write(tmp_path, "{}\n"))


def test_absurd_worker_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ingest.workers: must be <= 1024"):
        load_settings(write(tmp_path, "ingest:\n  workers: 100000\n"))
