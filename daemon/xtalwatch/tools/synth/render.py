"""One frame: scene + content + optics, as a pure function of its seeds."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from xtalwatch.tools.synth.crystals import Region, content_transmission
from xtalwatch.tools.synth.scene import STYLES, Scene, finish, layers, sample_scene
from xtalwatch.tools.synth.timeline import CLASSES

__all__ = ["drop_region", "render_drop", "render_frame"]


def drop_region(scene: Scene, content_seed: int) -> Region:
    """The drop as a place to grow crystals, with nucleation sites fixed by ``content_seed``."""
    rng = np.random.default_rng([content_seed, 99])
    k = int(rng.integers(2, 7))
    angle = rng.uniform(0, 2 * np.pi, k)
    dist = np.sqrt(rng.uniform(0, 1, k)) * scene.drop_radius * 0.6
    sites = np.stack([scene.drop_centre[0] + dist * np.cos(angle), scene.drop_centre[1] + dist * np.sin(angle)], 1)
    return Region(scene.drop_centre[0], scene.drop_centre[1], scene.drop_radius, scene.scale, sites)


def render_frame(scene: Scene, state: str, *, content_seed: int, growth: float, frame_rng: np.random.Generator,
                 dark: bool = False) -> np.ndarray:
    """One inspection of a drop: BGR uint8 (H, W, 3); greyscale and UV scenes have equal channels."""
    light, factor, drop = layers(scene)
    t = content_transmission(state, scene.height, scene.width, drop_region(scene, content_seed), content_seed,
                             growth)
    planes = light
    if not scene.colour or scene.uv:  # a monochrome camera sees luminance only
        planes = [cv2.addWeighted(cv2.addWeighted(planes[0], 0.114, planes[1], 0.587, 0), 1, planes[2], 0.299, 0)]
    # Content lives in the drop only; feather it by the anti-aliased drop mask.
    absorbed = (1 - t) * drop
    if scene.uv:  # UV: the field is dim, the drop's protein glows and what it absorbs glows brighter
        factor *= cv2.max(absorbed, 0.0) * 1.5 + drop * scene.uv_glow + 1
        factor *= scene.brightness * 0.4
        tints = None
    else:
        tints = _content_tints(state, content_seed) if len(planes) == 3 else None
        if tints is None:
            factor *= 1 - absorbed
    darken = float(frame_rng.uniform(0.03, 0.2)) if dark else 1.0
    if tints is None:
        return finish([plane * factor for plane in planes], scene, frame_rng, darken=darken)
    # Brown or yellow content absorbs each channel by its own amount (protein with a cofactor, dirt).
    out = [plane * factor * (1 - absorbed * k) for plane, k in zip(planes, tints, strict=True)]
    return finish(out, scene, frame_rng, darken=darken)


def _content_tints(state: str, content_seed: int) -> tuple[float, float, float] | None:
    """Per-channel absorbance of coloured content (B, G, R), or None: grey. Precipitate is often brown."""
    rng = np.random.default_rng([content_seed, 13])
    if rng.random() >= (0.4 if state == "precipitate" else 0.08):
        return None
    warmth = rng.uniform(0.15, 0.45)
    return (1 + warmth, 1.0, 1 - warmth)


def render_drop(rng: np.random.Generator, cls: str, size: tuple[int, int] = (512, 512), *,
                style: str | None = None, colour: bool | None = None, growth: float | None = None,
                uv: bool | None = None) -> np.ndarray:
    """A single independent drop photograph of class ``cls``: BGR uint8 (height, width, 3).

    Args:
        rng: all randomness comes from it (same state -> same image).
        cls: one of ``CLASSES``; ``dark`` is a failed frame over random content.
        size: (width, height) in pixels.
        style: ``marco``, ``minstrel`` or ``vmxi``; random when None.
        colour: colour or greyscale; random when None (vmxi is always grey).
        uv: a UV frame (dim, grey, the drop glowing); random (4 % of drops) when None.
    """
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; known: {', '.join(CLASSES)}")
    width, height = size
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")
    style = style if style is not None else STYLES[int(rng.integers(0, len(STYLES)))]
    colour = colour if colour is not None else (style != "vmxi" and rng.random() < 0.8)
    scene = sample_scene(rng, width, height, style, colour)
    if uv is not None:
        scene = dataclasses.replace(scene, uv=uv)
    state = cls
    if cls == "dark":
        state = ("clear", "precipitate", "needles", "plates", "prisms", "microcrystals")[int(rng.integers(0, 6))]
    g = float(rng.uniform(0.6, 1.0)) if growth is None else growth
    return render_frame(scene, state, content_seed=int(rng.integers(0, 2**63)), growth=g, frame_rng=rng,
                        dark=cls == "dark")
