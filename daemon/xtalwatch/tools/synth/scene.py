"""The fixed part of a drop photograph: well, drop outline, illumination and optics.

Modelled on ../shared/real-images: MARCO/GSK frames (round well, thick black rim, often cut by
the frame edge, pink and green polariser gradients, sometimes rainbow bands, large faint drops
with a thin dark edge and a dark meniscus crescent on one side), Rigaku Minstrel frames (square
well with chamfered corners, grey rim, mottled plastic around it, near-neutral light), VMXi
frames (greyscale, bright rectangular well in a dark surround) and UV frames (dim grey field,
the drop's protein glowing). Nuisances that any class may show: a wrinkled skin on the drop,
a drop tinted apart from the well, a zoomed view with no well in sight.

A :class:`Scene` is drawn once per drop and reused for every inspection, so the well position and
the drop outline stay put while the content evolves. All smooth fields are computed on a small
grid and resized, which keeps a 512x512 frame to a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

__all__ = ["STYLES", "Scene", "Style", "background", "finish", "layers", "sample_scene"]

Style = Literal["marco", "minstrel", "vmxi"]
STYLES: tuple[str, ...] = ("marco", "minstrel", "vmxi")

_SHIFT = 4  # sub-pixel bits for cv2 polygon drawing
_ONE = 1 << _SHIFT

# BGR polariser tints seen in MARCO frames: pink, mint green, pale yellow-green, lilac.
_TINTS = np.array([[0.95, 0.80, 0.97], [0.80, 0.95, 0.78], [0.72, 0.93, 0.90], [0.98, 0.86, 0.88],
                   [0.93, 0.93, 0.93]], dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Scene:
    """Geometry and lighting of one drop's photographs (pixels, BGR in 0..1)."""

    width: int
    height: int
    style: str
    colour: bool
    well_shape: Literal["round", "square"]
    well_centre: tuple[float, float]
    well_half: float  # radius (round) or half side (square), px
    rim: float  # rim thickness, px
    drop_centre: tuple[float, float]
    drop_radius: float  # mean drop radius, px
    drop_contour: np.ndarray = field(repr=False)  # (N, 2) int32, scaled by 2**_SHIFT
    tints: np.ndarray = field(repr=False)  # (2, 3) float32 BGR polariser tints
    tint_angle: float = 0.0
    light_angle: float = 0.0
    light_slope: float = 0.0  # brightness change across the frame, fraction
    vignette: float = 0.0
    brightness: float = 0.9
    meniscus_width: float = 4.0  # px
    meniscus_dark: float = 0.5
    meniscus_angle: float = 0.0
    lens_gain: float = 1.0  # brightness of the drop interior relative to the well
    seed: int = 0  # for the rim, plastic and skin textures
    edge_dark: float = 0.0  # thin dark line along the drop outline, 0..1
    edge_width: float = 1.0  # px
    rainbow: float = 0.0  # saturation of rainbow polariser bands, 0 = none
    rainbow_freq: float = 2.0  # bands across the frame
    drop_tint: tuple[float, float, float] = (0.0, 0.0, 0.0)  # BGR gain change inside the drop
    skin: float = 0.0  # strength of a wrinkled skin on the drop, 0 = none
    skin_brown: bool = False
    uv: bool = False  # a UV (fluorescence) frame: dim grey field, protein glows
    uv_glow: float = 0.0  # brightness the drop adds in UV, fraction of the field

    @property
    def scale(self) -> float:
        """Pixels per unit of a 512-pixel frame; sizes of crystals follow it."""
        return min(self.width, self.height) / 512.0


def sample_scene(rng: np.random.Generator, width: int, height: int, style: str, colour: bool) -> Scene:
    """Draw a well, an off-centre irregular drop and the lighting for one drop."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    short = min(width, height)
    jitter = short * (0.04 if rng.random() < 0.7 else 0.12)
    centre = (width / 2 + rng.uniform(-jitter, jitter), height / 2 + rng.uniform(-jitter, jitter))
    if style == "marco":  # MARCO wells fill the frame's height: often cut by its edge
        shape, half, rim = "round", short * rng.uniform(0.40, 0.56), short * rng.uniform(0.06, 0.14)
    elif style == "minstrel":
        shape, half, rim = "square", short * rng.uniform(0.40, 0.50), short * rng.uniform(0.015, 0.03)
    else:
        shape, half, rim = "square", short * rng.uniform(0.36, 0.50), short * rng.uniform(0.01, 0.03)
    zoom = rng.random() < 0.05  # a close-up inside the well: no rim in sight, the drop fills the frame
    if zoom:
        half *= rng.uniform(2.2, 3.0)
    # Drop: off-centre, sometimes pushed against the wall, outline a low-order Fourier wobble.
    radius = (short * rng.uniform(0.35, 0.6)) if zoom else half * rng.uniform(0.42, 0.9)
    offset = rng.uniform(0.0, 1.0) ** 0.7 * ((short * 0.1) if zoom else (half - radius * 0.6))
    direction = rng.uniform(0, 2 * np.pi)
    dc = (centre[0] + offset * np.cos(direction), centre[1] + offset * np.sin(direction))
    theta = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    wobble = np.ones_like(theta)
    for k in range(2, 6):
        wobble += rng.normal(0, 0.07 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    stretch = rng.uniform(0.8, 1.25)
    rot = rng.uniform(0, np.pi)
    x = radius * wobble * np.cos(theta) * stretch
    y = radius * wobble * np.sin(theta) / stretch
    xr = x * np.cos(rot) - y * np.sin(rot) + dc[0]
    yr = x * np.sin(rot) + y * np.cos(rot) + dc[1]
    contour = np.round(np.stack([xr, yr], axis=1) * _ONE).astype(np.int32)
    if style == "marco" and colour:
        picks = rng.choice(len(_TINTS) - 1, 2, replace=False)
        tints = _TINTS[picks]
    else:
        warm = rng.uniform(-0.03, 0.03)
        tints = np.array([[0.93 - warm, 0.93, 0.93 + warm], [0.95, 0.95, 0.95]], dtype=np.float32)
    rainbow_p = 0.35 if style == "marco" else 0.1
    rainbow = rng.uniform(0.1, 0.35) if colour and rng.random() < rainbow_p else 0.0
    tint_drop = rng.normal(0, 0.04, 3).clip(-0.1, 0.1) if colour and rng.random() < 0.5 else np.zeros(3)
    skin = rng.uniform(0.08, 0.3) if rng.random() < 0.12 else 0.0
    uv = bool(rng.random() < 0.04)
    return Scene(
        width=width, height=height, style=style, colour=colour, well_shape=shape,
        well_centre=centre, well_half=half, rim=rim, drop_centre=dc, drop_radius=radius,
        drop_contour=contour, tints=tints.astype(np.float32), tint_angle=rng.uniform(0, 2 * np.pi),
        light_angle=rng.uniform(0, 2 * np.pi), light_slope=rng.uniform(0.02, 0.18),
        vignette=rng.uniform(0.05, 0.3), brightness=rng.uniform(0.78, 0.97),
        meniscus_width=short * rng.uniform(0.004, 0.03), meniscus_dark=rng.uniform(0.08, 0.75),
        meniscus_angle=rng.uniform(0, 2 * np.pi), lens_gain=rng.uniform(0.94, 1.04),
        seed=int(rng.integers(0, 2**31)),
        edge_dark=rng.uniform(0.0, 0.45), edge_width=max(0.7, short * rng.uniform(0.002, 0.006)),
        rainbow=rainbow, rainbow_freq=rng.uniform(1.5, 4.0),
        drop_tint=tuple(float(v) for v in tint_drop), skin=skin, skin_brown=bool(rng.random() < 0.5),
        uv=uv, uv_glow=rng.uniform(0.15, 0.5),
    )


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Noise with features about ``cells`` across the frame, resized to (h, w), std about 1."""
    small = rng.standard_normal((max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w))), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


_TEXTURES: dict[int, np.ndarray] = {}


def _texture(rng: np.random.Generator, h: int, w: int, which: int) -> np.ndarray:
    """Smooth noise (std about 1) of size (h, w), as a fresh copy of a random window of a fixed tile.

    ``which`` 0 is fine grain (features about 6 px), 1 coarse mottling (about 13 px). Resizing fresh
    noise per frame cost as much as the rest of the background; a window of a cached tile is as
    deterministic and looks the same.
    """
    tile = _TEXTURES.get(which)
    if tile is None:
        cells = (90, 40)[which]
        tile = _smooth_noise(np.random.default_rng([0x7E47, which]), 2048, 2048, cells * 4)
        _TEXTURES[which] = tile
    if h > tile.shape[0] or w > tile.shape[1]:
        return _smooth_noise(rng, h, w, (90, 40)[which] * max(h, w) // 512)
    y, x = int(rng.integers(0, tile.shape[0] - h + 1)), int(rng.integers(0, tile.shape[1] - w + 1))
    return tile[y:y + h, x:x + w].copy()


def _square_well(scene: Scene, half: float) -> np.ndarray:
    """Octagon: a square with chamfered corners, as Minstrel plates have; int32 scaled points."""
    cx, cy = scene.well_centre
    c = half * 0.28
    pts = [(-half + c, -half), (half - c, -half), (half, -half + c), (half, half - c),
           (half - c, half), (-half + c, half), (-half, half - c), (-half, -half + c)]
    return np.round((np.array(pts) + (cx, cy)) * _ONE).astype(np.int32)


def _well_mask(scene: Scene, grow: float) -> np.ndarray:
    mask = np.zeros((scene.height, scene.width), np.uint8)
    half = scene.well_half + grow
    if scene.well_shape == "round":
        centre = (round(scene.well_centre[0] * _ONE), round(scene.well_centre[1] * _ONE))
        cv2.circle(mask, centre, round(half * _ONE), 255, -1, cv2.LINE_AA, _SHIFT)
    else:
        cv2.fillPoly(mask, [_square_well(scene, half)], 255, cv2.LINE_AA, _SHIFT)
    return mask


def layers(scene: Scene) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The empty well with its drop, as (light B, G, R planes, factor, drop mask), float32 (H, W).

    The picture is ``light[c] * factor`` per channel: ``light`` is the smooth illumination and
    polariser tint, ``factor`` the sharp single-channel part (rim, plastic, meniscus). Keeping
    them apart lets the caller multiply content into ``factor`` once, on one channel.
    """
    h, w = scene.height, scene.width
    rng = np.random.default_rng(scene.seed)
    ys = np.linspace(-1, 1, 48, dtype=np.float32)[:, None] * (h / max(h, w))
    xs = np.linspace(-1, 1, 48, dtype=np.float32)[None, :] * (w / max(h, w))
    # Uneven illumination: a tilt plus vignetting, on a coarse grid.
    tilt = xs * np.cos(scene.light_angle) + ys * np.sin(scene.light_angle)
    light = scene.brightness * (1 + scene.light_slope * tilt - scene.vignette * 0.5 * (xs**2 + ys**2))
    # Polariser: a smooth blend between two tints, banded along one direction.
    along = xs * np.cos(scene.tint_angle) + ys * np.sin(scene.tint_angle)
    mix = (0.5 + 0.5 * np.sin(along * 2.2 + scene.tint_angle))[..., None]
    tint = scene.tints[0] * mix + scene.tints[1] * (1 - mix)
    if scene.rainbow > 0:  # crossed polarisers over strained plastic: hue cycling in bands
        hue = ((along * scene.rainbow_freq + 0.3 * np.sin(3 * ys + scene.tint_angle)) * 180 % 360).astype(np.float32)
        hsv = cv2.merge([hue, np.full_like(hue, scene.rainbow), np.ones_like(hue)])
        bands = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        tint = (tint * bands / bands.mean(axis=2, keepdims=True)).astype(np.float32)
    small = tint * light[..., None]
    planes = [cv2.resize(np.ascontiguousarray(small[..., c]), (w, h), interpolation=cv2.INTER_LINEAR)
              for c in range(3)]

    inner = _well_mask(scene, 0.0)
    outer = _well_mask(scene, scene.rim)
    soft = max(1, int(scene.scale * 1.5)) * 2 + 1
    inner_f = cv2.GaussianBlur(inner, (soft, soft), 0).astype(np.float32)
    inner_f *= 1 / 255
    outer_f = outer.astype(np.float32)
    outer_f *= 1 / 255
    grain = _texture(rng, h, w, 0)
    if scene.style == "marco":
        rim_val, plate = grain * 0.03 + 0.07, 0.85
    elif scene.style == "minstrel":
        rim_val = grain * 0.05 + 0.45
        plate = _texture(rng, h, w, 1) * 0.03 + 0.8
        plate += grain * 0.02
    else:
        rim_val, plate = grain * 0.04 + 0.18, 0.25
    # plate outside the rim, rim between the masks, 1 inside the well.
    factor = rim_val - plate
    factor *= outer_f
    factor += plate
    rim_val -= 1
    rim_val *= inner_f
    factor -= rim_val

    # The drop: clipped to the well, with a meniscus darkening that is stronger on one side.
    # Computed inside the drop's bounding box only.
    drop = np.zeros((h, w), np.uint8)
    cv2.fillPoly(drop, [scene.drop_contour], 255, cv2.LINE_AA, _SHIFT)
    drop = cv2.min(drop, inner)
    x, y, bw, bh = cv2.boundingRect(drop)
    drop_f = drop.astype(np.float32)
    drop_f *= 1 / 255
    if bw and bh:
        roi = drop[y:y + bh, x:x + bw]
        dist = cv2.distanceTransform(cv2.threshold(roi, 127, 1, cv2.THRESH_BINARY)[1], cv2.DIST_L2, 3)
        cx, cy = scene.drop_centre
        k = 1 / scene.drop_radius
        side = np.add.outer((np.arange(y, y + bh, dtype=np.float32) - cy) * (k * np.sin(scene.meniscus_angle)),
                            (np.arange(x, x + bw, dtype=np.float32) - cx) * (k * np.cos(scene.meniscus_angle)))
        side = np.clip(side, -1, 1) * (0.35 * scene.meniscus_dark) + 0.65 * scene.meniscus_dark
        gain = cv2.exp(dist * (-1 / scene.meniscus_width)) * side
        if scene.edge_dark > 0:  # the drop's outline as a thin dark line, as in faint MARCO drops
            gain += cv2.exp(dist * (-1 / scene.edge_width)) * scene.edge_dark
        np.subtract(scene.lens_gain - 1, gain, out=gain)
        inside = drop_f[y:y + bh, x:x + bw]
        gain *= inside
        gain += 1
        factor[y:y + bh, x:x + bw] *= gain
        _tint_drop(scene, planes, inside, (y, x))
    return planes, factor, drop_f


def _skin(scene: Scene, h: int, w: int) -> np.ndarray:
    """A protein skin on the drop: a faint film with soft fold lines that come and go, float32 (h, w) in 0..1."""
    rng = np.random.default_rng([scene.seed, 11])
    cells = max(3, int(4 * max(h, w) / max(scene.drop_radius * 2, 1.0)))
    sh, sw = max(8, h // 2), max(8, w // 2)
    folds = _smooth_noise(rng, sh, sw, cells)
    fade = _smooth_noise(rng, sh, sw, max(2, cells // 2))
    folds = cv2.exp(folds * folds * np.float32(-1 / (2 * 0.09**2)))
    folds *= cv2.max(fade + 0.3, 0.0)
    folds = cv2.min(folds, 1.0) * 0.8 + 0.2
    return cv2.resize(folds, (w, h), interpolation=cv2.INTER_LINEAR)


def _tint_drop(scene: Scene, planes: list[np.ndarray], inside: np.ndarray, at: tuple[int, int]) -> None:
    """Colour changes inside the drop only (in place): its own polariser tint and a skin, if any."""
    if not any(scene.drop_tint) and scene.skin <= 0:
        return
    y, x = at
    bh, bw = inside.shape
    skin = _skin(scene, bh, bw) * (scene.skin * inside) if scene.skin > 0 else None
    brown = (1.4, 1.0, 0.6) if scene.skin_brown else (1.0, 1.0, 1.0)
    for c, plane in enumerate(planes):
        gain = inside * scene.drop_tint[c] + 1 if scene.drop_tint[c] else np.ones_like(inside)
        if skin is not None:
            gain *= 1 - skin * brown[c]
        plane[y:y + bh, x:x + bw] *= gain


def background(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """The empty well with its drop: (BGR float32 image in 0..1, drop mask float32 in 0..1)."""
    light, factor, drop = layers(scene)
    return cv2.merge([plane * factor for plane in light]), drop


_NOISE_TILE: np.ndarray | None = None


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Unit Gaussian noise (h, w): a random window of a fixed tile, flipped at random.

    Drawing fresh normals costs more than the rest of the optics; a window of one fixed tile is
    just as deterministic and looks the same at a sensor's noise level.
    """
    global _NOISE_TILE
    if _NOISE_TILE is None:
        _NOISE_TILE = np.random.default_rng(0x5EED).standard_normal((1024, 1024), dtype=np.float32)
    tile = _NOISE_TILE
    if h > tile.shape[0] or w > tile.shape[1]:
        return rng.standard_normal((h, w), dtype=np.float32)
    y, x = int(rng.integers(0, tile.shape[0] - h + 1)), int(rng.integers(0, tile.shape[1] - w + 1))
    window = tile[y:y + h, x:x + w]
    return window[::-1] if rng.random() < 0.5 else window


def finish(planes: list[np.ndarray], scene: Scene, rng: np.random.Generator, *, darken: float = 1.0) -> np.ndarray:
    """Optics and sensor: slight defocus, exposure, noise; float planes 0..1 -> BGR uint8 (H, W, 3).

    ``planes`` are the B, G, R channels, or one grey plane for a greyscale imager.
    """
    sigma = rng.uniform(0.0, 0.9) * scene.scale
    noise_sigma = rng.uniform(0.004, 0.02) + (0.01 if darken < 1 else 0.0)
    noise = _noise(rng, scene.height, scene.width) * noise_sigma
    out = []
    for plane in planes:
        if sigma > 0.3:
            plane = cv2.GaussianBlur(plane, (0, 0), sigma)
        if darken != 1.0:
            plane = plane * darken
        out.append(cv2.max(plane + noise, 0.0))
    if len(out) == 1:
        out = out * 3
    return cv2.convertScaleAbs(cv2.merge(out), alpha=255)
