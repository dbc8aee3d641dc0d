"""The model registry: whole folders, atomic `current`, promote, rollback, prune, catalogue mirror."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from xtalwatch.learn.registry import ModelRegistry, RegistryError, new_version
from xtalwatch.store.catalogue import Catalogue


class FileBundle:
    """The smallest thing the registry stores: writes one weights file into the folder it is given."""

    def __init__(self, payload: bytes = b"weights", fail: bool = False):
        self.payload, self.fail = payload, fail

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "encoder.pt").write_bytes(self.payload)
        if self.fail:
            raise OSError("disk full")


def _add(reg: ModelRegistry, name: str, at: float, **kw) -> str:
    reg.add(FileBundle(name.encode()), version=name, created_at=at, data_fingerprint=f"fp-{name}",
            metrics={"feature_std": 0.01}, **kw)
    return name


def test_version_names_sort_by_time_and_are_unique() -> None:
    a, b = new_version(1_700_000_000), new_version(1_700_000_001)
    assert a < b and len(a) == len("20231114-221320-ab12cd")
    assert new_version(5.0) != new_version(5.0)


def test_add_writes_whole_folder_with_meta_and_mirrors_catalogue(tmp_path: Path) -> None:
    cat = Catalogue(tmp_path)
    reg = ModelRegistry(tmp_path, cat)
    _add(reg, "v1", 1.0)
    meta = json.loads((tmp_path / "models" / "v1" / "meta.json").read_text())
    assert meta["status"] == "candidate" and meta["data_fingerprint"] == "fp-v1" and meta["created_at"] == 1.0
    assert (tmp_path / "models" / "v1" / "encoder.pt").read_bytes() == b"v1"
    assert reg.current() is None
    row = cat.query("SELECT status, metrics, path FROM models WHERE version='v1'")[0]
    assert row["status"] == "candidate" and json.loads(row["metrics"])["feature_std"] == 0.01
    with pytest.raises(RegistryError, match="already exists"):
        _add(reg, "v1", 2.0)


def test_failed_save_leaves_no_model_behind(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        reg.add(FileBundle(fail=True), version="broken")
    assert reg.list() == [] and sorted(os.listdir(reg.root)) == []


def test_promote_switches_current_atomically_and_retires_the_old(tmp_path: Path) -> None:
    cat = Catalogue(tmp_path)
    reg = ModelRegistry(tmp_path, cat)
    _add(reg, "v1", 1.0)
    _add(reg, "v2", 2.0)
    reg.promote("v1")
    link = reg.root / "current"
    assert link.is_symlink() and os.readlink(link) == "v1"  # relative: the state folder can move
    assert (link / "encoder.pt").read_bytes() == b"v1"
    reg.promote("v2", reason="passed the gate")
    assert reg.current().version == "v2" and reg.current().reason == "passed the gate"
    assert reg.get("v1").status == "retired" and "replaced by v2" in reg.get("v1").reason
    assert {r["version"]: r["status"] for r in cat.query("SELECT version, status FROM models")} == \
        {"v1": "retired", "v2": "promoted"}
    assert not [p for p in os.listdir(reg.root) if p.startswith(".current")]  # no temporary link left over


def test_readers_never_see_current_missing_while_switching(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    for i in range(2):
        _add(reg, f"v{i}", float(i))
    reg.promote("v0")
    seen, stop = set(), threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add((reg.root / "current" / "encoder.pt").read_bytes())
            except OSError:
                seen.add(b"MISSING")

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(40):
        reg.promote(f"v{i % 2}")
    stop.set()
    reader.join()
    assert b"MISSING" not in seen and seen <= {b"v0", b"v1"}


def test_rollback_walks_back_through_promotions(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path, Catalogue(tmp_path))
    for i, name in enumerate(["a", "b", "c"]):
        _add(reg, name, float(i))
        reg.promote(name)
    _add(reg, "rejected-one", 9.0)
    reg.reject("rejected-one", "collapsed: feature std 0")
    assert reg.rollback().version == "b"
    assert reg.get("c").status == "retired" and reg.get("c").reason == "rolled back to b"
    assert reg.get("b").status == "promoted"
    assert reg.rollback().version == "a"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback()
    assert reg.current().version == "a"


def test_rollback_without_a_model_says_so(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no model is serving"):
        ModelRegistry(tmp_path).rollback()


def test_unknown_version_is_a_clear_error(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    _add(reg, "v1", 1.0)
    with pytest.raises(RegistryError, match=r"no model 'nope' .*newest: v1"):
        reg.promote("nope")
    with pytest.raises(RegistryError):
        reg.get("../v1")


def test_prune_keeps_current_and_the_rollback_target(tmp_path: Path) -> None:
    cat = Catalogue(tmp_path)
    reg = ModelRegistry(tmp_path, cat)
    for i in range(6):
        _add(reg, f"v{i}", float(i))
    reg.promote("v0")
    reg.promote("v1")
    deleted = reg.prune(keep=3)
    assert deleted == ["v2", "v3", "v4"][:len(deleted)] and len(deleted) == 3
    assert [r.version for r in reg.list()] == ["v0", "v1", "v5"]
    assert reg.rollback().version == "v0"
    assert cat.query("SELECT path FROM models WHERE version='v2'")[0]["path"] is None


def test_sync_catalogue_rebuilds_rows(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    _add(reg, "v1", 1.0)
    reg.promote("v1")
    cat = Catalogue(tmp_path)
    assert reg.sync_catalogue(cat) == 1
    assert cat.query("SELECT status FROM models")[0]["status"] == "promoted"


def test_models_command_lists_promotes_and_rolls_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xtalwatch.cli import main

    reg = ModelRegistry(tmp_path, Catalogue(tmp_path))
    assert main(["models", "--state", str(tmp_path), "list"]) == 0
    assert "no models yet" in capsys.readouterr().out
    reg.add(FileBundle(), version="20260101-020000-aaaaaa", created_at=1.0,
            metrics={"gate": {"feature_std": 0.0123, "accuracy": 0.8, "head": "linear"}, "n_images": 600})
    reg.promote("20260101-020000-aaaaaa", "first model")
    reg.add(FileBundle(), version="20260102-020000-bbbbbb", created_at=2.0, metrics={"gate": {"feature_std": 0.0}})
    reg.reject("20260102-020000-bbbbbb", "collapsed: feature std 0.000000 < collapse_std_min 0.001")
    reg.add(FileBundle(), version="20260103-020000-cccccc", created_at=3.0)

    assert main(["models", "--state", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["VERSION", "STATUS", "CREATED"]
    assert out[1].split()[:3] == ["*", "20260101-020000-aaaaaa", "promoted"] and "0.800" in out[1] and "0.0123" in out[1]
    assert "linear" in out[1] and "HEAD" in out[0]
    assert "rejected" in out[2] and out[2].endswith("collapsed: feature std 0.000000 < collapse_std_min 0.001")

    assert main(["models", "--state", str(tmp_path), "promote", "20260102-020000-bbbbbb"]) == 1
    assert "was rejected" in capsys.readouterr().err and reg.current_version() == "20260101-020000-aaaaaa"
    assert main(["models", "--state", str(tmp_path), "promote", "20260103-020000-cccccc"]) == 0
    assert "20260103-020000-cccccc is now serving (was 20260101-020000-aaaaaa)" in capsys.readouterr().out
    assert main(["models", "--state", str(tmp_path), "rollback"]) == 0
    assert "20260101-020000-aaaaaa is serving again" in capsys.readouterr().out
    assert main(["models", "--state", str(tmp_path), "promote", "nope"]) == 1
    assert "no model 'nope'" in capsys.readouterr().err
    assert main(["models", "--state", str(tmp_path), "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["current"] for m in listed] == [True, False, False] and listed[2]["status"] == "retired"


def test_models_command_takes_state_after_the_action(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--state`` works after ``models`` and after its action, as it does for ``status``."""
    from xtalwatch.cli import main

    reg = ModelRegistry(tmp_path, Catalogue(tmp_path))
    reg.add(FileBundle(), version="20260101-020000-aaaaaa", created_at=1.0)
    reg.promote("20260101-020000-aaaaaa", "first model")
    reg.add(FileBundle(), version="20260102-020000-bbbbbb", created_at=2.0)
    other = tmp_path / "elsewhere"
    assert main(["models", "list", "--state", str(tmp_path)]) == 0
    assert "20260101-020000-aaaaaa" in capsys.readouterr().out
    assert main(["models", "list", "--json", "--state", str(tmp_path)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["models", "promote", "20260102-020000-bbbbbb", "--state", str(tmp_path)]) == 0
    assert reg.current_version() == "20260102-020000-bbbbbb"
    assert main(["models", "rollback", "--state", str(tmp_path)]) == 0
    assert reg.current_version() == "20260101-020000-aaaaaa"
    capsys.readouterr()
    # Given before the action and not after it, the first --state stands; given after, the later one wins.
    assert main(["models", "--state", str(tmp_path), "list", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["models", "--state", str(tmp_path), "list", "--state", str(other)]) == 0
    assert "no models yet" in capsys.readouterr().out


def test_a_shared_registry_serves_what_any_host_promotes(tmp_path: Path) -> None:
    """site.models_dir: every host's <state>/models links to one folder, so one promotion reaches all."""
    from xtalwatch.learn.registry import link_shared_registry, serving_key

    shared, host_a, host_b = tmp_path / "shared", tmp_path / "a", tmp_path / "b"
    for host in (host_a, host_b):
        link_shared_registry(host, shared)
        link_shared_registry(host, shared)  # a restart finds the link in place
    trainer = ModelRegistry(host_a)
    reg_b = ModelRegistry(host_b)
    _add(trainer, "v1", 1.0)
    trainer.promote("v1")
    assert reg_b.current_version() == "v1" and serving_key(host_b) == serving_key(host_a)
    _add(trainer, "v2", 2.0)
    trainer.promote("v2")
    assert reg_b.current_version() == "v2" and (host_b / "models" / "current" / "encoder.pt").read_bytes() == b"v2"
    own = tmp_path / "c"
    _add(ModelRegistry(own), "mine", 3.0)  # a host with models of its own is not silently relinked
    with pytest.raises(RegistryError, match="holds this host's own models"):
        link_shared_registry(own, shared)
