"""One drawing function per drop content: what is in the drop, not how it is lit.

Content is drawn as *ink* on two uint8 canvases that start at ``NEUTRAL`` (200): a value v
multiplies the light by v / 200, so 0 is opaque, 200 transparent and above 200 a refractive
highlight. ``focus`` is drawn sharp; ``soft`` is blurred afterwards (crystals out of the focal
plane). Later shapes overwrite earlier ones, which reads as occlusion where crystals overlap.

Each class has several habits (drawn from the content seed, so a drop keeps its habit as it
grows): sprays, strewn needles and dendrites; stacked plates and rosettes; dark blocks, clear
blocks and intergrown clusters of prisms; clustered or showered microcrystals; clouds, fine
specks and granular sheets of precipitate.

Needles and plates are the hard pair, so they are made to differ in *shape*, not in how dark
they are: both have edges of the same ink range and similar total ink. Needles are long thin
lines (aspect > 10), often radiating in sprays from a nucleation point; plates are thin flat
polygons (aspect 1 to 2.5) with faint faces and fine edges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["DRAWERS", "NEUTRAL", "Layers", "Region", "content_transmission", "draw_distractors"]

NEUTRAL = 200
_SHIFT = 4
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Region:
    """Where content may go: the drop's centre and radius (px), the frame scale, nucleation sites."""

    cx: float
    cy: float
    radius: float
    scale: float  # px per unit of a 512 px frame
    sites: np.ndarray  # (K, 2) float, nucleation points inside the drop


@dataclass
class Layers:
    focus: np.ndarray  # uint8 (H, W) ink, sharp
    soft: np.ndarray  # uint8 (H, W) ink, blurred before use

    @classmethod
    def blank(cls, height: int, width: int) -> Layers:
        return cls(np.full((height, width), NEUTRAL, np.uint8), np.full((height, width), NEUTRAL, np.uint8))

    def pick(self, rng: np.random.Generator, p_soft: float = 0.25) -> np.ndarray:
        return self.soft if rng.random() < p_soft else self.focus


def _pts(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _ONE).astype(np.int32)


def _width(region: Region, px: float) -> int:
    return max(1, round(px * region.scale))


def _near_site(rng: np.random.Generator, region: Region, spread: float) -> np.ndarray:
    site = region.sites[int(rng.integers(0, len(region.sites)))]
    return site + rng.normal(0, spread * region.radius, 2)


def _polygon(centre: np.ndarray, size: float, aspect: float, angle: float, sides: int,
             rng: np.random.Generator, irregular: float = 0.08) -> np.ndarray:
    """A convex polygon: a regular ``sides``-gon stretched by ``aspect`` and turned by ``angle``."""
    t = np.linspace(0, 2 * np.pi, sides, endpoint=False) + rng.uniform(0, np.pi / sides)
    r = 1 + rng.uniform(-irregular, irregular, sides)
    x, y = np.cos(t) * r * size * aspect, np.sin(t) * r * size
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([x * c - y * s, x * s + y * c], axis=1) + centre


def draw_clear(layers: Layers, rng: np.random.Generator, region: Region, growth: float) -> None:
    """Nothing grows in a clear drop."""


def _line(canvas: np.ndarray, start: np.ndarray, end: np.ndarray, ink: int, width: int) -> None:
    cv2.line(canvas, tuple(_pts(start)), tuple(_pts(end)), ink, width, cv2.LINE_AA, _SHIFT)


def draw_needles(layers: Layers, rng: np.random.Generator, region: Region, growth: float) -> None:
    """Long thin lines: sprays from nucleation sites, loose needles strewn over the drop, or dendrites."""
    habit = rng.choice(3, p=[0.45, 0.3, 0.25])
    if habit == 1:  # strewn: short thin needles all over the drop, crossing at random
        for _ in range(int(rng.integers(8, 30))):
            start = _near_site(rng, region, rng.uniform(0.2, 0.5))
            angle = rng.uniform(0, 2 * np.pi)
            length = region.radius * rng.uniform(0.06, 0.22) * growth
            _line(layers.pick(rng, 0.2), start, start + length * np.array([np.cos(angle), np.sin(angle)]),
                  int(rng.integers(60, 160)), _width(region, rng.uniform(0.7, 1.4)))
        return
    if habit == 2:  # dendrites: a stem with side branches at a fixed angle, shorter towards the tip
        for _ in range(int(rng.integers(1, 4))):
            origin = _near_site(rng, region, 0.1)
            fork = rng.uniform(0.6, 1.1)
            for _ in range(int(rng.integers(2, 6))):
                heading = rng.uniform(0, 2 * np.pi)
                length = region.radius * rng.uniform(0.2, 0.5) * growth
                ink, width = int(rng.integers(60, 140)), _width(region, rng.uniform(0.9, 1.8))
                canvas = layers.pick(rng, 0.15)
                direction = np.array([np.cos(heading), np.sin(heading)])
                _line(canvas, origin, origin + length * direction, ink, width)
                for f in np.linspace(0.15, 0.85, int(rng.integers(3, 8))):
                    base = origin + f * length * direction
                    side = heading + fork * (1 if rng.random() < 0.5 else -1)
                    twig = length * (1 - f) * rng.uniform(0.2, 0.5)
                    _line(canvas, base, base + twig * np.array([np.cos(side), np.sin(side)]), ink,
                          max(1, width - 1))
        return
    for _ in range(int(rng.integers(1, 5))):  # sprays
        origin = _near_site(rng, region, 0.05)
        count = int(rng.integers(6, 24))
        full = rng.random() < 0.5
        heading, spread = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.6)
        for _ in range(count):
            angle = rng.uniform(0, 2 * np.pi) if full else heading + rng.uniform(-spread, spread) / 2
            length = region.radius * rng.uniform(0.12, 0.45) * growth
            start = origin + rng.normal(0, 1.5 * region.scale, 2)
            end = start + length * np.array([np.cos(angle), np.sin(angle)])
            _line(layers.pick(rng, 0.2), start, end, int(rng.integers(60, 150)), _width(region, rng.uniform(0.8, 1.8)))
    for _ in range(int(rng.integers(0, 6))):
        start = _near_site(rng, region, 0.3)
        angle = rng.uniform(0, 2 * np.pi)
        end = start + region.radius * rng.uniform(0.08, 0.3) * growth * np.array([np.cos(angle), np.sin(angle)])
        _line(layers.pick(rng), start, end, int(rng.integers(60, 150)), _width(region, rng.uniform(0.8, 1.8)))


def draw_plates(layers: Layers, rng: np.random.Generator, region: Region, growth: float) -> None:
    """Thin flat polygons with faint faces and fine edges: stacked at different angles, or rosettes."""
    rosette = rng.random() < 0.3  # plates grown from one point, fanned round it
    faint = rng.random() < 0.25  # barely visible faces and edges, as thin plates often are
    edge_ink = (110, 170) if faint else (60, 150)
    for _ in range(int(rng.integers(1, 3 if rosette else 5))):
        centre = _near_site(rng, region, 0.08)
        petals = int(rng.integers(3, 7)) if rosette else int(rng.integers(1, 4))
        turn = rng.uniform(0, np.pi)
        for i in range(petals):
            size = region.radius * rng.uniform(0.08, 0.24) * growth
            if rosette:
                angle = turn + i * np.pi / petals + rng.normal(0, 0.1)
                at = centre + size * 0.6 * np.array([np.cos(angle), np.sin(angle)])
                poly = _polygon(at, size, rng.uniform(1.2, 1.8), angle, int(rng.choice([4, 6, 6, 5])), rng)
            else:
                poly = _polygon(centre + rng.normal(0, size * 0.5, 2), size, rng.uniform(1.0, 2.2),
                                rng.uniform(0, np.pi), int(rng.choice([4, 6, 6, 5])), rng)
            canvas = layers.pick(rng, 0.2)
            cv2.fillPoly(canvas, [_pts(poly)], int(rng.integers(175 if faint else 168, 195)), cv2.LINE_AA, _SHIFT)
            cv2.polylines(canvas, [_pts(poly)], True, int(rng.integers(*edge_ink)),
                          _width(region, rng.uniform(0.8, 1.5)), cv2.LINE_AA, _SHIFT)
            if rng.random() < 0.4:  # a growth step: a smaller concentric outline
                inner = centre + (poly - poly.mean(axis=0)) * rng.uniform(0.4, 0.75) + (poly.mean(axis=0) - centre)
                cv2.polylines(canvas, [_pts(inner)], True, int(rng.integers(150, 185)), 1, cv2.LINE_AA, _SHIFT)


def draw_prisms(layers: Layers, rng: np.random.Generator, region: Region, growth: float) -> None:
    """Three-dimensional blocks: a front face, darker side faces, an outline, a highlight.

    Some drops have clear blocks with thin outlines (as in MARCO and VMXi close-ups), some an
    intergrown cluster of blocks round one point.
    """
    light = rng.random() < 0.3
    cluster = rng.random() < 0.25
    hub = _near_site(rng, region, 0.1)
    for _ in range(int(rng.integers(3, 8) if cluster else rng.integers(1, 6))):
        size = region.radius * rng.uniform(0.06, 0.2) * growth
        centre = hub + rng.normal(0, size * 0.6, 2) if cluster else _near_site(rng, region, 0.15)
        front = _polygon(centre, size, rng.uniform(1.0, 1.6), rng.uniform(0, np.pi), int(rng.choice([4, 4, 6])),
                         rng, 0.04)
        depth = size * rng.uniform(0.25, 0.55) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
        back = front + depth
        hull = cv2.convexHull(np.concatenate([front, back]).astype(np.float32))[:, 0, :]
        canvas = layers.pick(rng, 0.15)
        side, face = ((150, 185), (175, 200)) if light else ((70, 130), (130, 185))
        outline, rim = ((50, 110), (90, 150)) if light else ((15, 60), (30, 90))
        cv2.fillPoly(canvas, [_pts(hull)], int(rng.integers(*side)), cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(canvas, [_pts(front)], int(rng.integers(*face)), cv2.LINE_AA, _SHIFT)
        cv2.polylines(canvas, [_pts(hull)], True, int(rng.integers(*outline)),
                      _width(region, rng.uniform(1.0, 2) if light else rng.uniform(1.5, 3)), cv2.LINE_AA, _SHIFT)
        cv2.polylines(canvas, [_pts(front)], True, int(rng.integers(*rim)), _width(region, 1.2), cv2.LINE_AA, _SHIFT)
        spot = front.mean(axis=0) + rng.normal(0, size * 0.2, 2)
        cv2.circle(canvas, tuple(_pts(spot)), round(size * 0.15 * _ONE), int(rng.integers(215, 245)), -1,
                   cv2.LINE_AA, _SHIFT)


def draw_microcrystals(layers: Layers, rng: np.random.Generator, region: Region, growth: float) -> None:
    """Many tiny sharp particles, clustered round nucleation sites: showers of seeds."""
    clustered = 0.7 if rng.random() < 0.7 else 0.15  # else a shower over the whole drop
    count = int(rng.integers(20, 160) * (0.5 + growth))
    for _ in range(count):
        centre = _near_site(rng, region, 0.12 if rng.random() < clustered else 0.45)
        size = max(0.8, rng.uniform(1.0, 3.0) * region.scale)
        poly = _polygon(centre, size, rng.uniform(1.0, 1.4), rng.uniform(0, np.pi), 4, rng, 0.1)
        canvas = layers.pick(rng, 0.2)
        cv2.fillPoly(canvas, [_pts(poly)], int(rng.integers(40, 120)), cv2.LINE_AA, _SHIFT)
        if size > 2:
            cv2.circle(canvas, tuple(_pts(centre)), round(size * 0.35 * _ONE), int(rng.integers(205, 235)), -1,
                       cv2.LINE_AA, _SHIFT)


def draw_precipitate(layers: Layers, rng: np.random.Generator, region: Region, growth: float) -> None:
    """Amorphous matter: clouds dense with grains, fine specks strewn over the whole drop, or a granular sheet."""
    kind = rng.choice(3, p=[0.4, 0.3, 0.3])
    if kind == 1:  # light precipitate: fine dark specks everywhere, no clouds
        srng = np.random.default_rng(int(rng.integers(0, 2**63)))
        count = int(srng.integers(60, 400))
        dist = np.sqrt(srng.uniform(0, 1, count)) * region.radius * 1.05
        angle = srng.uniform(0, 2 * np.pi, count)
        pts = np.stack([region.cx + dist * np.cos(angle), region.cy + dist * np.sin(angle)], 1)
        keep = srng.random(count) < 0.3 + 0.7 * growth
        for p, ink, rad in zip(pts[keep], srng.integers(40, 170, count)[keep],
                               srng.uniform(0.4, 1.3, count)[keep] * region.scale, strict=True):
            cv2.circle(layers.focus, tuple(_pts(p)), max(1, round(rad * _ONE)), int(ink), -1, cv2.LINE_AA, _SHIFT)
        return
    # One generator per cloud, so growth (which changes how many grains) never moves the clouds.
    sheet = kind == 2  # heavy precipitate: one wide cloud over much of the drop, densely grained
    for cloud_seed in rng.integers(0, 2**63, 1 if sheet else int(rng.integers(2, 7))):
        crng = np.random.default_rng(int(cloud_seed))
        centre = _near_site(crng, region, 0.25)
        spread = crng.uniform(0.5, 0.9) if sheet else crng.uniform(0.15, 0.45)
        axes = region.radius * spread * growth * np.array([1.0, crng.uniform(0.4, 1.0)])
        cv2.ellipse(layers.soft, tuple(_pts(centre)), tuple(_pts(axes)), crng.uniform(0, 180), 0, 360,
                    int(crng.integers(130, 180)), -1, cv2.LINE_AA, _SHIFT)
        grains = int(crng.integers(600, 1500) if sheet else crng.integers(80, 400) * growth)
        pts = centre + crng.normal(0, 0.5, (grains, 2)) * axes
        inks = crng.integers(50, 160, grains)
        radii = crng.uniform(0.5, 1.6, grains) * region.scale
        for p, ink, rad in zip(pts, inks, radii, strict=True):
            cv2.circle(layers.focus, tuple(_pts(p)), max(1, round(rad * _ONE)), int(ink), -1, cv2.LINE_AA, _SHIFT)


def draw_distractors(layers: Layers, rng: np.random.Generator, region: Region) -> None:
    """Things in any drop that are not the answer: air bubbles and dust specks."""
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 5))):
            centre = _near_site(rng, region, 0.4)
            rad = rng.uniform(2, 9) * region.scale
            cv2.circle(layers.soft if rng.random() < 0.5 else layers.focus, tuple(_pts(centre)),
                       round(rad * _ONE), int(rng.integers(20, 70)), _width(region, rad * 0.35), cv2.LINE_AA, _SHIFT)
    for _ in range(int(rng.integers(0, 4))):
        centre = _near_site(rng, region, 0.5)
        cv2.circle(layers.focus, tuple(_pts(centre)), round(rng.uniform(0.5, 1.2) * region.scale * _ONE),
                   int(rng.integers(60, 160)), -1, cv2.LINE_AA, _SHIFT)


Drawer = Callable[[Layers, np.random.Generator, Region, float], None]

DRAWERS: dict[str, Drawer] = {
    "clear": draw_clear,
    "precipitate": draw_precipitate,
    "needles": draw_needles,
    "plates": draw_plates,
    "prisms": draw_prisms,
    "microcrystals": draw_microcrystals,
}


def content_transmission(state: str, height: int, width: int, region: Region, content_seed: int,
                         growth: float = 1.0, soft_sigma: float = 2.5, distractors: bool = True) -> np.ndarray:
    """Light transmitted through the drop's content: float32 (H, W), 1 where nothing is drawn.

    The same ``content_seed`` gives the same crystals at the same places, so a drop imaged again
    shows its crystals grown (``growth``), not a new random set.
    """
    if state not in DRAWERS:
        raise ValueError(f"unknown content {state!r}; known: {', '.join(DRAWERS)}")
    layers = Layers.blank(height, width)
    if distractors:
        draw_distractors(layers, np.random.default_rng([content_seed, 7]), region)
    index = list(DRAWERS).index(state)
    DRAWERS[state](layers, np.random.default_rng([content_seed, index]), region, growth)
    soft = cv2.GaussianBlur(layers.soft, (0, 0), soft_sigma * region.scale)
    out = layers.focus.astype(np.float32) * (1 / NEUTRAL)
    out *= soft.astype(np.float32) * (1 / NEUTRAL)
    return out
