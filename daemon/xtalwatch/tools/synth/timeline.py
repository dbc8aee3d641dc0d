"""How one drop's content evolves over successive inspections.

A drop has a fate (its last non-dark state). Before reaching it, it passes only along the
allowed paths a crystallographer sees: clear -> precipitate, clear -> microcrystals ->
needles | plates | prisms. Any single frame may instead be ``dark`` (a failed exposure); the
drop underneath keeps evolving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ALLOWED",
    "CLASSES",
    "Frame",
    "is_allowed",
    "parse_balance",
    "sample_timeline",
]

CLASSES: tuple[str, ...] = ("clear", "precipitate", "needles", "plates", "prisms", "microcrystals", "dark")
_STATES = tuple(c for c in CLASSES if c != "dark")

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


def parse_balance(text: str | Mapping[str, float] | None) -> dict[str, float]:
    """Class weights from ``"clear=1,needles=2"``; unnamed classes keep weight 1."""
    weights = dict.fromkeys(CLASSES, 1.0)
    if text is None:
        return weights
    items = text.items() if isinstance(text, Mapping) else (
        part.split("=", 1) if "=" in part else (part, "")
        for part in (p.strip() for p in text.split(",")) if part
    )
    for name, value in items:
        name = str(name).strip()
        if name not in weights:
            raise ValueError(f"unknown class {name!r} in class balance; known: {', '.join(CLASSES)}")
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


def sample_timeline(rng: np.random.Generator, inspections: int, balance: Mapping[str, float]) -> list[Frame]:
    """The frames of one drop over ``inspections`` inspections.

    The fate is drawn by ``balance``; the last frame shows it (unless dark). With one inspection
    the image classes follow ``balance`` exactly in expectation; with more, earlier frames show
    the stages before the fate, so clear and microcrystals become more common.
    """
    if inspections < 1:
        raise ValueError(f"inspections must be >= 1, got {inspections}")
    weights = np.array([balance.get(s, 0.0) for s in _STATES], dtype=float)
    fate = _STATES[int(rng.choice(len(_STATES), p=weights / weights.sum()))]
    total = sum(balance.get(c, 0.0) for c in CLASSES)
    p_dark = balance.get("dark", 0.0) / total
    k = inspections
    onset = int(rng.integers(0, k))  # first inspection showing the fate
    if fate in ("needles", "plates", "prisms") and onset > 0:
        micro_from = int(rng.integers(0, onset))
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
