"""Whatever the config file or the XTALWATCH_* environment holds, loading it ends one of two ways:
settings, or a ConfigError whose every line is one problem. Never another exception, never a
traceback, never a line break inside a problem (a key or value from the file may hold one).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xtalwatch.config import ConfigError, Settings, load_settings
from xtalwatch.observe.preflight import preflight

FUZZ = settings(database=None, deadline=None, max_examples=100,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SECTIONS = sorted(Settings.model_fields)
KEYS = sorted({k for s in SECTIONS for k in getattr(Settings.model_fields[s].annotation, "model_fields", {})})
SPECIALS = ["", ".inf", "-.inf", ".nan", "1e30", "1.0e+30", "~", "[", "{", "&a", "*a", "<<", "2024-13-45",
            "!!python/object:os.system", "\x00", "\ufeff", "0x10", "- -", "? |\n  a\n  b\n: 1"]

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=20) | st.sampled_from(SPECIALS))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=3), max_leaves=12)
documents = st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8),
                            st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=4)
                            | values, max_size=4)


def dumped(doc: dict, cut: int, insert: str) -> str:
    """``doc`` as YAML, then damaged: ``insert`` written at character ``cut``."""
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    cut = cut % (len(text) + 1)
    return text[:cut] + insert + text[cut:]


def assert_loads_or_one_line_per_problem(path: Path | None) -> None:
    try:
        loaded = load_settings(path)
    except ConfigError as exc:
        lines = str(exc).split("\n")
        assert lines and all(line.strip() for line in lines), repr(str(exc))
        assert all("Traceback" not in line and "\r" not in line for line in lines), repr(str(exc))
        return
    for section in loaded.model_dump().values():  # anything that loaded is finite
        for value in section.values() if isinstance(section, dict) else []:
            assert not (isinstance(value, float) and not math.isfinite(value))
    if not loaded.plugins.dirs:  # never run code from folders a fuzzer named
        assert all("\n" not in problem for problem in preflight(loaded, str(path)))


@FUZZ
@given(doc=documents, cut=st.integers(0, 10_000), insert=st.sampled_from(SPECIALS) | st.text(max_size=10))
def test_yaml_ish_files(tmp_path: Path, doc: dict, cut: int, insert: str) -> None:
    path = tmp_path / "xtalwatch.yaml"
    path.write_text(dumped(doc, cut, insert), encoding="utf-8")
    assert_loads_or_one_line_per_problem(path)


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "xtalwatch.yaml"
    path.write_bytes(data)
    assert_loads_or_one_line_per_problem(path)


ENV_NAMES = (["XTALWATCH_" + s.upper() for s in SECTIONS]
             + ["XTALWATCH_WATCH__SETTLE_SECONDS", "XTALWATCH_INGEST__WORKERS", "XTALWATCH_ALERTS__SINKS",
                "XTALWATCH_METRICS__PORT", "XTALWATCH_RETRAIN__INTERVAL_HOURS", "XTALWATCH_WATCH__IGNORE_GLOBS",
                "XTALWATCH_TRAIN__SMALL_STEM", "XTALWATCH_NOT_A_SECTION", "XTALWATCH_WATCH__NOPE"])
env_values = (st.text(max_size=40) | st.sampled_from(SPECIALS + ["{", "[1,", '{"settle_seconds": "inf"}', "[" * 5000,
                                                                  '{"dir": 1}', "null", "NaN", "Infinity"])
              | documents.map(lambda d: yaml.safe_dump(d, default_flow_style=True)))


@FUZZ
@given(env=st.dictionaries(st.sampled_from(ENV_NAMES), env_values.map(lambda v: v.replace("\x00", "")), max_size=3))
def test_arbitrary_environment(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "xtalwatch.yaml"
    path.write_text("{}\n")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            try:
                mp.setenv(name, value)
            except (ValueError, UnicodeEncodeError):  # the OS refuses it: no process could be given it either
                continue
        assert_loads_or_one_line_per_problem(path)
