"""The review queue: the unlabelled images a person should label next, the ones that teach the head most.

Candidates are the images with a crop, a call and no label. Each one's call and margin (top-1
minus top-2 probability) come from the serving head applied to the image's cached encoder
features, so the order follows the head that serves *now* (a head re-fitted a second ago has
re-classified few images yet); an image without cached features keeps its newest stored call. Images
with features are ordered by :func:`~xtalwatch.learn.active.review_order` (low margin, spread over
the embedding space); those without come after, by margin alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from xtalwatch.config import Settings
from xtalwatch.learn.active import review_order
from xtalwatch.learn.bundle import load_head, read_meta
from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.learn.heads.calibrate import softmax
from xtalwatch.learn.heads.serving import Head
from xtalwatch.learn.registry import serving_key
from xtalwatch.store.catalogue import Db
from xtalwatch.store.labels import UnlabelledCall, latest_labels, unlabelled_calls

__all__ = ["ReviewItem", "next_for_review", "margin_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewItem:
    """One image to show the reviewer, with why it was chosen."""

    image_id: int
    label: str  # the class the serving model calls
    confidence: float  # its probability, in [0, 1]
    margin: float  # top-1 minus top-2 probability; low = the head hesitates
    uncertain: bool  # the stored call was below classify.uncertain_below
    flags: str  # preprocessing's quality flags, comma-separated
    reason: str  # how it was ordered, for the page

    def to_dict(self) -> dict:
        return asdict(self)


def margin_of(probabilities: np.ndarray) -> np.ndarray:
    """(N, K) probabilities → (N,) top-1 minus top-2 (1.0 for a single class)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        return np.ones(len(p))
    top = np.sort(p, axis=1)
    return top[:, -1] - top[:, -2]


_heads: dict[tuple[str, float], tuple[Head | None, dict]] = {}  # serving folder → (head, bundle.json), one entry


def _serving_head(state_dir: Path) -> tuple[Head | None, dict] | None:
    """The serving model's head and bundle.json, read once per version (no encoder weights); None before a model."""
    key = serving_key(state_dir)
    if key is None:
        return None
    folder = key[0]
    if key not in _heads:
        try:
            loaded = (load_head(Path(folder)), read_meta(Path(folder)))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("review queue: cannot read the serving model %s (%s)", folder, exc)
            return None
        _heads.clear()
        _heads[key] = loaded
    return _heads[key]


def next_for_review(db: Db, state_dir: Path, cache: FeatureCache | None, settings: Settings, n: int,
                    exclude: Iterable[int] = ()) -> list[ReviewItem]:
    """Up to ``n`` unlabelled images to review next, best first; ``exclude``: ids already on the page."""
    served = _serving_head(Path(state_dir))
    if served is None:
        return []
    head, meta = served
    skip = {int(i) for i in exclude}
    calls = [c for c in unlabelled_calls(db) if c.image_id not in skip]
    if not calls or n <= 0:
        return []
    by_id = {c.image_id: c for c in calls}
    margins = {c.image_id: _stored_margin(c) for c in calls}

    held_ids: list[int] = []
    held = np.zeros((0, 0), np.float32)
    if cache is not None:
        held_ids, held = cache.get(meta["encoder_version"], list(by_id))
    items: list[ReviewItem] = []
    if held_ids:
        probs = None
        if head is not None:  # the serving head's own call on the cached features
            probs = softmax(head.logits(held), float(meta["temperature"]))
            margins.update(zip(held_ids, margin_of(probs).tolist(), strict=True))
        labelled_ids, labelled = cache.get(meta["encoder_version"], list(latest_labels(db)))
        features = np.concatenate([held, labelled]) if len(labelled_ids) else held
        mask = np.zeros(len(features), bool)
        mask[len(held_ids):] = True
        picks = review_order(features, np.array([margins[i] for i in held_ids] + [1.0] * len(labelled_ids)), mask, n,
                             pool_factor=10)
        for k in picks:
            call = by_id[held_ids[k]]
            if probs is not None:
                top = int(probs[k].argmax())
                call = replace(call, label=meta["classes"][top], confidence=float(probs[k, top]),
                               uncertain=bool(probs[k, top] < settings.classify.uncertain_below),
                               model_version=meta["version"])
            items.append(_item(call, margins[call.image_id], "low margin, spread over the embedding"))
    have = set(held_ids)
    rest = sorted((i for i in by_id if i not in have), key=lambda i: (margins[i], i))
    items += [_item(by_id[i], margins[i], "low margin (no cached features)") for i in rest[:n - len(items)]]
    return items[:n]


def _stored_margin(call: UnlabelledCall) -> float:
    """``margin_of`` for one stored call, in plain Python: it runs once per unlabelled image."""
    top = sorted(call.probabilities.values(), reverse=True)
    return float(top[0] - top[1]) if len(top) > 1 else 1.0


def _item(call: UnlabelledCall, margin: float, reason: str) -> ReviewItem:
    return ReviewItem(call.image_id, call.label, call.confidence, round(float(margin), 4), call.uncertain, call.flags,
                      reason)
