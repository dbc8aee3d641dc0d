"""How one drop's content evolves over successive inspections.

A drop has a fate (its last non-dark state). Before reaching it, it passes only along the
allowed paths a crystallographer sees: clear -> precipitate, clear -> microcrystals ->
needles | plates | prisms. Any single frame may instead be ``dark`` (a failed exposure); the
drop underneath keeps evolving.

The default mix is a screen's: most drops stay clear or precipitate, a few percent turn
crystalline, and only from the second inspection on (the first is taken hours after setup).
The ``even`` mix weighs every class 1, for classification sets that want every class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ALLOWED",
    "CLASSES",
    "MIXES",
    "Frame",
    "Mix",
    "is_allowed",
    "parse_balance",
    "parse_mix",
    "sample_timeline",
]

CLASSES: tuple[str, ...] = ("clear", "precipitate", "needles", "plates", "prisms", "microcrystals", "dark")
_STATES = tuple(c for c in CLASSES if c != "dark")
_HABITS = frozenset({"needles", "plates", "prisms"})
_CRYSTALLINE = _HABITS | {"microcrystals"}

# state -> states the next inspection may show (ignoring dark frames).
ALLOWED: dict[str, frozenset[str]] = {
    "clear": frozenset({"clear", "precipitate", "microcrystals"}),
    "precipitate": frozenset({"precipitate"}),
    "microcrystals": frozenset({"microcrystals", "needles", "plates", "prisms"}),
    "needles": frozenset({"needles"}),
    "plates": frozenset({"plates"}),
    "prisms": frozenset({"prisms"}),
}


@dataclass(frozen=True)
class Frame:
    """One inspection of a drop: the label, the state underneath, and how far it has grown."""

    label: str  # what the frame shows (``dark`` for a failed frame)
    state: str  # the drop's real state, never ``dark``
    growth: float  # 0..1, size of the content relative to its full size


@dataclass(frozen=True)
class Mix:
    """What a run's drops become: class weights, and how many inspections pass before any crystal."""

    weights: dict[str, float]  # fate weights of the non-dark classes; ``dark`` weighs failed frames
    crystals_after: int = 0  # leading inspections that show no microcrystals or crystals (when more follow)


# Per cent of drops (dark: of frames). A screen of a protein that crystallises at all: about
# half the drops stay clear, most of the rest precipitate, about 7 % turn crystalline (a few
# percent is what sparse-matrix screens report), and about 3 % of frames fail. Crystals need
# hours to days to nucleate, so the first inspection (hours after setup) shows none.
_SCREEN = {"clear": 50.0, "precipitate": 43.0, "microcrystals": 2.0, "needles": 2.0, "plates": 1.5,
           "prisms": 1.5, "dark": 3.0}
MIXES: dict[str, Mix] = {
    "screen": Mix(_SCREEN, crystals_after=1),
    "even": Mix(dict.fromkeys(CLASSES, 1.0)),
}
DEFAULT_MIX = "screen"


def parse_mix(text: str | Mapping[str, float] | None) -> Mix:
    """The mix a balance spec names: ``None`` is ``screen``; ``"even"``, ``"screen,dark=0.5"`` start
    from a named mix; a spec without a name (``"clear=1,needles=2"``) or a mapping starts from ``even``,
    so unnamed classes weigh 1."""
    if text is None:
        return MIXES[DEFAULT_MIX]
    parts: list[tuple[str, str]] | list[tuple[str, float]]
    base = MIXES["even"]
    if isinstance(text, Mapping):
        parts = list(text.items())
    else:
        parts = [(a, b) for a, _, b in (p.strip().partition("=") for p in text.split(",")) if a]
        if parts and parts[0][1] == "" and parts[0][0] in MIXES:
            base = MIXES[parts.pop(0)[0]]
    return Mix(_weights(base.weights, parts), base.crystals_after)


def parse_balance(text: str | Mapping[str, float] | None) -> dict[str, float]:
    """Class weights from a balance spec (see :func:`parse_mix`): ``"clear=1,needles=2"``, ``"screen"``."""
    return parse_mix(text).weights


def _weights(base: Mapping[str, float], items: Sequence[tuple[str, str | float]]) -> dict[str, float]:
    weights = dict(base)
    for name, value in items:
        name = str(name).strip()
        if name not in weights:
            raise ValueError(f"unknown class {name!r} in class balance; known: {', '.join(CLASSES)} "
                             f"(a mix, {' or '.join(MIXES)}, may come first)")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"class balance for {name!r} must be a number, got {value!r}") from None
        if weight < 0:
            raise ValueError(f"class balance for {name!r} must be >= 0, got {weight}")
        weights[name] = weight
    if sum(weights[s] for s in _STATES) <= 0:
        raise ValueError("class balance gives every non-dark class weight 0")
    return weights


def is_allowed(states: Sequence[str]) -> bool:
    """True when each consecutive pair of (non-dark) states is an allowed step."""
    real = [s for s in states if s != "dark"]
    return all(b in ALLOWED[a] for a, b in zip(real, real[1:], strict=False))


def sample_timeline(rng: np.random.Generator, inspections: int, balance: Mapping[str, float], *,
                    crystals_after: int = 0) -> list[Frame]:
    """The frames of one drop over ``inspections`` inspections.

    The fate is drawn by ``balance``; the last frame shows it (unless dark). With one inspection
    the image classes follow ``balance`` exactly in expectation; with more, earlier frames show
    the stages before the fate, so clear and microcrystals become more common.
    ``crystals_after``: leading inspections that show no microcrystals or crystals, as long as
    enough inspections are left after them to show the fate (two for a habit: microcrystals,
    then the habit).
    """
    if inspections < 1:
        raise ValueError(f"inspections must be >= 1, got {inspections}")
    weights = np.array([balance.get(s, 0.0) for s in _STATES], dtype=float)
    fate = _STATES[int(rng.choice(len(_STATES), p=weights / weights.sum()))]
    total = sum(balance.get(c, 0.0) for c in CLASSES)
    p_dark = balance.get("dark", 0.0) / total
    k = inspections
    # First inspection that may show microcrystals: a habit needs one more after it to show itself.
    earliest = max(0, min(crystals_after, k - (2 if fate in _HABITS else 1))) if fate in _CRYSTALLINE else 0
    onset = int(rng.integers(earliest + (fate in _HABITS and earliest > 0), k))  # first inspection showing the fate
    if fate in _HABITS and onset > 0:
        micro_from = int(rng.integers(earliest, onset))
        states = ["clear"] * micro_from + ["microcrystals"] * (onset - micro_from) + [fate] * (k - onset)
    elif fate == "clear":
        states = ["clear"] * k
    else:
        states = ["clear"] * onset + [fate] * (k - onset)
    start = float(rng.uniform(0.6, 1.0))
    frames: list[Frame] = []
    age = 0
    for i, state in enumerate(states):
        age = age + 1 if i > 0 and states[i - 1] == state else 0
        growth = start + (1.0 - start) * (1.0 - 0.5**age)
        dark = bool(rng.random() < p_dark)
        frames.append(Frame("dark" if dark else state, state, growth))
    return frames
