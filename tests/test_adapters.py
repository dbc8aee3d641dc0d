"""Instrument adapters on realistic paths, plugin discovery, and the unassigned fallback."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from xtalwatch.config import load_settings
from xtalwatch.plate import parse_well, well_from_index
from xtalwatch.plugins import PluginError, PluginRegistry
from xtalwatch.stages.adapters import AdapterChain
from xtalwatch_plugins.adapters.export import ExportAdapter
from xtalwatch_plugins.adapters.minstrel import MinstrelAdapter
from xtalwatch_plugins.adapters.regex import RegexAdapter
from xtalwatch_plugins.adapters.rockmaker import RockMakerAdapter


@pytest.mark.parametrize(("index", "wells", "name"), [
    (1, 96, "A1"), (12, 96, "A12"), (13, 96, "B1"), (96, 96, "H12"),
    (1, 384, "A1"), (25, 384, "B1"), (384, 384, "P24"),
    (48, 1536, "A48"), (49, 1536, "B1"), (1536, 1536, "AF48"), (26 * 48 + 1, 1536, "AA1"),
])
def test_well_from_index(index: int, wells: int, name: str) -> None:
    assert well_from_index(index, wells) == name


@pytest.mark.parametrize(("text", "name"), [("a01", "A1"), ("H12", "H12"), ("p24", "P24"), ("AF48", "AF48"), ("B007", "B7")])
def test_parse_well(text: str, name: str) -> None:
    assert parse_well(text) == name


@pytest.mark.parametrize("text", ["Z", "A0", "A49", "AG1", "12"])
def test_parse_well_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_well(text)


def test_rockmaker_image_store() -> None:
    path = "WellImages/523/plateID_1523/batchID_88172/wellNum_37/profileID_2/d3_r40211_ef.jpg"
    identity = RockMakerAdapter().parse(path)
    assert identity is not None
    assert (identity.plate, identity.well, identity.drop, identity.inspection, identity.imaging) == (
        "1523", "D1", 3, 88172, "visible")
    uv = RockMakerAdapter(plate_wells=384).parse(path.replace("_ef.jpg", "_uv.png").replace("wellNum_37", "wellNum_384"))
    assert uv is not None and uv.well == "P24" and uv.imaging == "uv"
    assert RockMakerAdapter().parse("WellImages/523/plateID_1523/d3_r1_ef.jpg") is None


def test_export_names() -> None:
    identity = ExportAdapter().parse("90j8/inspection_03/90j8_01A_1.jpg")
    assert identity is not None
    assert (identity.plate, identity.well, identity.drop, identity.inspection) == ("90j8", "A1", 1, 3)
    flat = ExportAdapter().parse("90j8_12H_2.jpg")
    assert flat is not None and (flat.well, flat.drop, flat.inspection) == ("H12", 2, None)
    assert ExportAdapter().parse("90j8_99Z_1.jpg") is None  # no such column
    assert ExportAdapter().parse("holiday-photo.jpg") is None


def test_minstrel_names() -> None:
    name = "RMM3_01_470_RGKU_Test1_Clon1_FB_0000FB000000_003_081218_01_03_02_E0_99_030_001_RDI.jpg"
    identity = MinstrelAdapter().parse(f"some/folder/{name}")
    assert identity is not None
    assert (identity.plate, identity.well, identity.drop, identity.inspection) == ("0000FB000000", "A3", 2, 3)
    assert identity.imaged_at == datetime(2008, 12, 18)
    other = MinstrelAdapter().parse("RMM3_01_470_RGKU_Test1_Clon1_FE_0000FE000001_001_090408_09_02_01_E0_99_030_001_RDI.jpg")
    assert other is not None and (other.plate, other.well, other.drop, other.inspection) == ("0000FE000001", "I2", 1, 1)


@pytest.mark.realdata
def test_shared_rigaku_names(real_images: Path) -> None:
    folder = real_images / "rigaku-minstrel"
    names = sorted(os.listdir(folder))
    assert names, f"{folder} is empty"
    adapter = MinstrelAdapter()
    wells = set()
    for name in names:
        identity = adapter.parse(name)
        assert identity is not None, f"{name} not understood"
        assert identity.plate in {"0000FB000000", "0000FE000001"}
        assert identity.inspection in {1, 3}
        assert identity.drop in {1, 2, 3}
        wells.add((identity.plate, identity.well, identity.drop))
    assert len(wells) == len(names), "two files mapped to the same plate, well and drop"


def test_regex_adapter_from_config(tmp_path: Path) -> None:
    config = tmp_path / "x.yaml"
    config.write_text(
        "adapters:\n  regex:\n    - name: mylab\n"
        "      pattern: '(?P<plate>[A-Z0-9]+)/(?P<well>[A-P]\\d{2})_d(?P<drop>\\d)_t(?P<inspection>\\d+)\\.png$'\n"
        "  order: [export]\n")
    settings = load_settings(config)
    chain = AdapterChain.from_config(settings.adapters, PluginRegistry.discover())
    identity = chain.identify("PLATE7/C05_d2_t4.png")
    assert (identity.plate, identity.well, identity.drop, identity.inspection, identity.adapter) == (
        "PLATE7", "C5", 2, 4, "mylab")
    assert chain.identify("90j8_01A_1.jpg").adapter == "export"


def test_regex_without_required_groups_is_a_config_error(tmp_path: Path) -> None:
    from xtalwatch.config import ConfigError

    config = tmp_path / "x.yaml"
    config.write_text("adapters:\n  regex:\n    - name: broken\n      pattern: '(?P<plate>\\w+)'\n")
    with pytest.raises(ConfigError, match=r"adapters.regex.0.pattern: pattern needs the named groups \['well'\]"):
        load_settings(config)


def test_unknown_path_is_unassigned_with_reason() -> None:
    chain = AdapterChain([RockMakerAdapter(), ExportAdapter()])
    identity = chain.identify("random/holiday.jpg")
    assert identity.plate == "unassigned" and identity.well is None
    assert "no adapter understood the path (tried rockmaker, export)" == identity.note


def test_names_adapters_cannot_use_are_not_understood_rather_than_raising() -> None:
    """Well numbers off the plate, digits beyond SQLite's INTEGER, digits that are not ASCII: None."""
    store = "plateID_1/batchID_{batch}/wellNum_{well}/profileID_1/d{drop}_r1_ef.jpg"
    rockmaker = RockMakerAdapter()
    assert rockmaker.parse(store.format(batch=1, well=0, drop=1)) is None
    assert rockmaker.parse(store.format(batch=1, well=97, drop=1)) is None
    assert rockmaker.parse(store.format(batch="9" * 30, well=1, drop=1)) is None
    assert rockmaker.parse(store.format(batch="\u0663", well=1, drop=1)) is None  # ARABIC-INDIC DIGIT THREE
    assert ExportAdapter().parse("90j8_01A_" + "1" * 5000 + ".jpg") is None
    long_folder = ExportAdapter().parse("i" + "9" * 5000 + "/90j8_01A_1.jpg")
    assert long_folder is not None and long_folder.inspection is None  # no such inspection folder
    assert RegexAdapter(r"(?P<plate>\w+)_(?P<well>[A-H]\d+)_(?P<drop>\w+)").parse("P_A1_x.jpg") is None
    assert RegexAdapter(r"(?:(?P<plate>\w+)/)?(?P<well>[A-H]\d+)").parse("A1.jpg") is None  # no plate group


def test_chain_shows_bytes_that_are_not_utf8_and_survives_bad_adapters() -> None:
    """A Latin-1 plate folder reaches the catalogue as ``\\xe9``; an adapter that raises or answers
    nonsense is skipped, never fatal."""
    class Raises:
        name = "raises"

        def parse(self, relpath: str) -> None:
            raise RuntimeError("boom")

    class Nonsense:
        name = "nonsense"

        def parse(self, relpath: str) -> object:
            return "not an identity"

    relpath = os.fsdecode(b"plateID_caf\xe9/batchID_7/wellNum_13/profileID_1/d1_r1_ef.jpg")
    identity = AdapterChain([Raises(), Nonsense(), RockMakerAdapter()]).identify(relpath)  # type: ignore[list-item]
    assert (identity.plate, identity.well, identity.adapter) == ("caf\\xe9", "B1", "rockmaker")
    identity.plate.encode("utf-8")  # storable
    fallback = AdapterChain([Raises()]).identify(os.fsdecode(b"\xff.jpg"))  # type: ignore[list-item]
    assert fallback.plate == "unassigned"


def test_builtins_come_from_entry_points() -> None:
    registry = PluginRegistry.discover()
    assert {"rockmaker", "export", "minstrel", "regex"} <= set(registry.names("adapter"))
    assert registry.get("adapter", "regex") is RegexAdapter


def test_plugin_folder_drop_in_and_broken_plugin(tmp_path: Path) -> None:
    (tmp_path / "lab.py").write_text(
        "from xtalwatch.plate import ImageIdentity\n"
        "class LabAdapter:\n"
        "    name = 'lab'\n    kind = 'adapter'\n"
        "    def parse(self, relpath):\n"
        "        return ImageIdentity(plate='LAB', well='A1', adapter='lab') if relpath.endswith('.lab.jpg') else None\n"
        "PLUGINS = [LabAdapter]\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('oops')\n")
    registry = PluginRegistry.discover([tmp_path])
    assert any("broken.py" in e and "oops" in e for e in registry.errors)
    settings = load_settings(None, {"adapters.order": ["lab", "export"]})
    chain = AdapterChain.from_config(settings.adapters, registry)
    assert chain.identify("x/1.lab.jpg").plate == "LAB"
    with pytest.raises(PluginError, match="no adapter plugin named 'nope'; known: .*export"):
        registry.get("adapter", "nope")
    assert registry.get("adapter", "xtalwatch_plugins.adapters.export:ExportAdapter") is ExportAdapter
