"""The synthetic imager's pure core: layouts, timelines, class content, determinism."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from xtalwatch.tools.synth import (
    CLASSES,
    MIXES,
    generate_plates,
    is_allowed,
    parse_balance,
    parse_mix,
    plan_jobs,
    render_drop,
)
from xtalwatch.tools.synth.crystals import content_transmission
from xtalwatch.tools.synth.layouts import make_plates, relpath
from xtalwatch.tools.synth.render import drop_region
from xtalwatch.tools.synth.scene import sample_scene
from xtalwatch.tools.synth.timeline import ALLOWED, sample_timeline
from xtalwatch_plugins.adapters.export import ExportAdapter
from xtalwatch_plugins.adapters.minstrel import MinstrelAdapter
from xtalwatch_plugins.adapters.rockmaker import RockMakerAdapter

# ---------------------------------------------------------------- layouts

ADAPTERS = {"rockmaker": RockMakerAdapter, "export": ExportAdapter, "minstrel": MinstrelAdapter}


@pytest.mark.parametrize("layout", sorted(ADAPTERS))
@pytest.mark.parametrize("wells", [96, 384])
def test_every_layout_is_parsed_by_its_adapter(layout: str, wells: int) -> None:
    adapter = ADAPTERS[layout](plate_wells=wells) if layout == "rockmaker" else ADAPTERS[layout]()
    jobs = plan_jobs(plates=2, layout=layout, wells=wells, drops=3, inspections=2, size=(32, 32), seed=5)
    assert len(jobs) == 2 * wells * 3 * 2
    assert len({j.row.path for j in jobs}) == len(jobs), "two frames share a path"
    for job in jobs:
        ident = adapter.parse(job.row.path)
        assert ident is not None, job.row.path
        got = (ident.plate, ident.well, ident.drop, ident.inspection)
        assert got == (job.row.plate, job.row.well, job.row.drop, job.row.inspection), job.row.path


def test_layouts_match_the_documented_examples() -> None:
    rm, ex, mi = (make_plates(1, name, 1)[0] for name in ("rockmaker", "export", "minstrel"))
    # Rock Maker numbers wells row-major from 1: B1 is wellNum 13 on a 96-well plate.
    path = relpath("rockmaker", rm, 1, 0, 2, 4)
    assert path == (f"WellImages/{rm.plate_id % 1000:03d}/plateID_{rm.plate_id}/batchID_4/wellNum_13/"
                    "profileID_1/d2_r2_ef.jpg")
    assert rm.barcode == str(rm.plate_id)
    assert relpath("export", ex, 0, 0, 1, 1) == f"{ex.barcode}/inspection_01/{ex.barcode}_01A_1.jpg"
    assert 4 <= len(ex.barcode) <= 6 and ex.barcode == ex.barcode.lower() and ex.barcode.isalnum()
    name = relpath("minstrel", mi, 0, 2, 2, 3).split("/")[-1]
    assert name.startswith(f"RMM3_01_470_RGKU_Test1_Clon1_{mi.type_code}_{mi.barcode}_003_")
    assert name.endswith("_01_03_02_E0_99_030_001_RDI.jpg")
    assert len(mi.barcode) == 12 and mi.barcode.isalnum() and mi.barcode == mi.barcode.upper()


def test_files_on_disk_parse_back(tmp_path: Path) -> None:
    out = tmp_path / "imager"
    rows = generate_plates(out, plates=1, layout="minstrel", wells=24, drops=1, inspections=2, size=(40, 32),
                           seed=2, workers=1)
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == sorted(r.path for r in rows)
    for path in on_disk:
        ident = MinstrelAdapter().parse(path)
        assert ident is not None and ident.plate == rows[0].plate


# ---------------------------------------------------------------- timelines

def test_timelines_evolve_only_in_allowed_directions() -> None:
    balance = parse_balance("dark=0.5")
    seen: Counter[tuple[str, str]] = Counter()
    for seed in range(400):
        frames = sample_timeline(np.random.default_rng(seed), 6, balance)
        states = [f.state for f in frames]
        assert is_allowed(states), states
        assert "dark" not in states
        for a, b in zip(states, states[1:], strict=False):
            seen[(a, b)] += 1
        for f, g in zip(frames, frames[1:], strict=False):  # crystals only grow while the state holds
            if f.state == g.state:
                assert g.growth >= f.growth
    # The interesting paths all happen.
    for step in [("clear", "microcrystals"), ("microcrystals", "needles"), ("microcrystals", "plates"),
                 ("microcrystals", "prisms"), ("clear", "precipitate")]:
        assert seen[step] > 0, step
    assert not is_allowed(["needles", "clear"]) and not is_allowed(["clear", "needles"])
    assert is_allowed(["clear", "dark", "microcrystals", "needles"])


def test_a_drop_keeps_its_geometry_across_inspections() -> None:
    jobs = plan_jobs(plates=1, layout="export", wells=24, drops=1, inspections=3, size=(64, 48), seed=9)
    by_drop: dict[tuple[str, int], list] = {}
    for job in jobs:
        by_drop.setdefault((job.row.well, job.row.drop), []).append(job)
    for frames in by_drop.values():
        assert [j.row.inspection for j in frames] == [1, 2, 3]
        assert len({j.scene_seed for j in frames}) == 1 and len({j.content_seed for j in frames}) == 1
        assert len({j.frame_seed for j in frames}) == 3
        assert is_allowed([j.row.label for j in frames])


def test_class_balance_is_parsed_and_honoured() -> None:
    assert parse_balance("needles=2, dark=0")["needles"] == 2.0
    with pytest.raises(ValueError, match="unknown class 'needle'"):
        parse_balance("needle=1")
    with pytest.raises(ValueError, match=">= 0"):
        parse_balance("clear=-1")
    only = "clear=0,precipitate=0,plates=0,prisms=0,microcrystals=0,dark=0"
    jobs = plan_jobs(plates=1, layout="export", wells=24, drops=2, inspections=1, seed=1, balance=only)
    assert {j.row.label for j in jobs} == {"needles"}
    assert set(ALLOWED) | {"dark"} == set(CLASSES)


# ---------------------------------------------------------------- classes

def _compactness(transmission: np.ndarray) -> float:
    """Mean 4*pi*area/perimeter^2 of the drawn shapes: 1 for a disc, near 0 for thin lines."""
    mask = (transmission < 0.97).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    values = [4 * np.pi * cv2.contourArea(c) / cv2.arcLength(c, True) ** 2 for c in contours
              if cv2.contourArea(c) >= 20]
    return float(np.mean(values))


def test_needles_and_plates_differ_in_shape_not_in_darkness() -> None:
    needles, plates, ink = [], [], {"needles": [], "plates": []}
    for seed in range(12):
        scene = sample_scene(np.random.default_rng(seed), 256, 256, "minstrel", True)
        for cls, out in (("needles", needles), ("plates", plates)):
            t = content_transmission(cls, 256, 256, drop_region(scene, seed), seed, 1.0, distractors=False)
            out.append(_compactness(t))
            drawn = t[t < 0.97]
            ink[cls].append(float(np.median(drawn)))
    assert np.mean(needles) < 0.35 < 0.5 < np.mean(plates)
    wins = sum(n < p for n in needles for p in plates) / (len(needles) * len(plates))
    assert wins > 0.9
    # Darkness of what is drawn overlaps: a classifier cannot just threshold brightness.
    assert abs(np.mean(ink["needles"]) - np.mean(ink["plates"])) < 0.25


def test_dark_frames_are_dark_and_the_others_are_not() -> None:
    means = {cls: [float(render_drop(np.random.default_rng([s, i]), cls, (96, 72), uv=False).mean())
                   for s in range(6)] for i, cls in enumerate(CLASSES)}
    assert max(means["dark"]) < 45
    assert min(min(v) for cls, v in means.items() if cls != "dark") > 70


def test_uv_frames_are_grey_and_dim_with_a_glowing_drop() -> None:
    """UV is a nuisance, not a failed frame: dimmer than visible light, yet the drop stands out."""
    for s, cls in enumerate(("clear", "prisms", "precipitate")):
        visible = render_drop(np.random.default_rng(s), cls, (96, 72), style="minstrel", colour=True, uv=False)
        uv = render_drop(np.random.default_rng(s), cls, (96, 72), style="minstrel", colour=True, uv=True)
        assert np.array_equal(uv[..., 0], uv[..., 2]), "UV frames are grey"
        assert uv.mean() < visible.mean()
        scene = sample_scene(np.random.default_rng(s), 96, 72, "minstrel", True)  # the scene render_drop drew
        drop = np.zeros((72, 96), np.uint8)
        cv2.fillPoly(drop, [scene.drop_contour], 1, cv2.LINE_AA, 4)
        inside = cv2.erode(drop, np.ones((5, 5), np.uint8)).astype(bool)
        assert uv[..., 0][inside].mean() > uv[..., 0][drop == 0].mean()


def test_render_drop_shapes_and_modes() -> None:
    img = render_drop(np.random.default_rng(0), "prisms", (80, 60), style="vmxi")
    assert img.shape == (60, 80, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], img[..., 2]), "vmxi is a greyscale imager"
    colour = render_drop(np.random.default_rng(0), "clear", (80, 60), style="marco", colour=True)
    assert not np.array_equal(colour[..., 0], colour[..., 2])
    with pytest.raises(ValueError, match="unknown class"):
        render_drop(np.random.default_rng(0), "crystals", (80, 60))


# ---------------------------------------------------------------- determinism

def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    kwargs = dict(plates=1, layout="rockmaker", wells=24, drops=2, inspections=2, size=(48, 40))
    generate_plates(tmp_path / "a", seed=7, workers=1, **kwargs)
    generate_plates(tmp_path / "b", seed=7, workers=2, **kwargs)
    generate_plates(tmp_path / "c", seed=8, workers=2, **kwargs)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(a) == 24 * 2 * 2 and a == b
    assert (tmp_path / "a_labels.csv").read_bytes() == (tmp_path / "b_labels.csv").read_bytes()
    assert set(a.values()).isdisjoint(c.values())


# ---------------------------------------------------------------- mixes

def _crystalline(label: str) -> bool:
    return label in {"microcrystals", "needles", "plates", "prisms"}


def test_the_default_mix_is_a_screens() -> None:
    """Most drops stay clear or precipitate; a few percent crystallise, never by the first inspection."""
    jobs = plan_jobs(plates=4, layout="export", wells=96, drops=1, inspections=3, size=(32, 32), seed=3)
    drops: dict[tuple[str, str], list[str]] = {}
    for job in jobs:
        drops.setdefault((job.row.plate, job.row.well), []).append(job.state)
    hit = [states for states in drops.values() if any(map(_crystalline, states))]
    assert 0.03 <= len(hit) / len(drops) <= 0.12, len(hit)
    assert not any(_crystalline(j.state) for j in jobs if j.row.inspection == 1)
    assert any(states[1:] == ["microcrystals", s] for states in hit for s in ("needles", "plates", "prisms"))
    labels = Counter(j.row.label for j in jobs)
    assert labels["clear"] + labels["precipitate"] > 0.85 * len(jobs)
    assert 0.01 <= labels["dark"] / len(jobs) <= 0.06, labels["dark"]
    # An ImageFolder is a classification set: every class, about evenly.
    folder = Counter(j.row.label for j in plan_jobs(plates=1, layout="export", wells=96, drops=3, seed=3,
                                                    imagefolder=True))
    assert set(folder) == set(CLASSES) and min(folder.values()) > 20


def test_a_named_mix_starts_a_balance() -> None:
    assert parse_mix(None) == parse_mix("screen") == MIXES["screen"]
    assert parse_balance(None) == MIXES["screen"].weights
    assert parse_mix("even").weights == dict.fromkeys(CLASSES, 1.0) and parse_mix("even").crystals_after == 0
    tuned = parse_mix("screen, dark=0")
    assert tuned.weights["dark"] == 0 and tuned.weights["needles"] == MIXES["screen"].weights["needles"]
    assert tuned.crystals_after == 1
    assert parse_mix("clear=0") == parse_mix({"clear": 0})  # no name: unnamed classes weigh 1
    assert parse_mix("clear=0").weights["needles"] == 1.0
    with pytest.raises(ValueError, match="unknown class 'realistic'"):
        parse_mix("realistic")


def test_late_crystals_still_show_with_one_inspection() -> None:
    """``crystals_after`` holds crystals back only while a later inspection is left to show them."""
    only_needles = parse_balance("clear=0,precipitate=0,plates=0,prisms=0,microcrystals=0,dark=0")
    one = [sample_timeline(np.random.default_rng(s), 1, only_needles, crystals_after=1) for s in range(20)]
    assert all(f[0].label == "needles" for f in one)
    for s in range(50):
        frames = sample_timeline(np.random.default_rng(s), 4, only_needles, crystals_after=1)
        assert frames[0].state == "clear" and frames[-1].state == "needles"
        assert is_allowed([f.state for f in frames])
