"""The review queue: unlabelled calls of the serving model, low margin first, spread over cached features."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from refit_helpers import cluster_features, served_state, true_class
from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.learn.review_queue import ReviewItem, margin_of, next_for_review
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import set_label
from xtalwatch.store.predictions import StoredCall, insert_predictions


def _predict(cat: Catalogue, top: dict[int, float], version: str = "v1", uncertain_below: float = 0.65) -> None:
    """Store a call per image: 'clear' with probability ``top[id]``, the rest split between two others."""
    calls = []
    for image_id, p in top.items():
        rest = (1 - p) / 2
        calls.append(StoredCall(image_id, version, "clear", p, {"clear": p, "precipitate": rest, "crystals": rest},
                                p < uncertain_below))
    insert_predictions(cat, calls, time.time())


def test_without_features_lowest_margin_first_labelled_and_excluded_left_out(tmp_path: Path) -> None:
    settings, ids = served_state(tmp_path, n_images=9)
    cat = Catalogue(settings.state.dir)
    try:
        usable, flagged = ids["usable"], ids["bad"][0]
        tops = {i: 0.9 - 0.05 * k for k, i in enumerate(usable)}  # later images: less certain
        tops[flagged] = 0.95
        _predict(cat, tops)
        set_label(cat, usable[-1], "clear", "ann", 1.0)  # the least certain, but labelled
        items = next_for_review(cat, settings.state.dir, None, settings, 4, exclude=[usable[-2]])
        assert [it.image_id for it in items] == [usable[-3], usable[-4], usable[-5], usable[-6]]
        first = items[0]
        assert isinstance(first, ReviewItem) and first.label == "clear" and first.uncertain
        assert abs(first.margin - (tops[usable[-3]] - (1 - tops[usable[-3]]) / 2)) < 1e-3
        assert "no cached features" in first.reason
        everything = next_for_review(cat, settings.state.dir, None, settings, 50)
        assert {it.image_id for it in everything} == (set(usable[:-1]) | {flagged})
        assert next(it for it in everything if it.image_id == flagged).flags == "too_dark"
    finally:
        cat.close()


def test_with_features_the_picks_cover_every_cluster(tmp_path: Path) -> None:
    settings, ids = served_state(tmp_path, n_images=30)
    cat = Catalogue(settings.state.dir)
    cache = FeatureCache(None)
    try:
        usable = ids["usable"]
        _predict(cat, dict.fromkeys(usable, 0.5))
        features, cluster = cluster_features(len(usable), 3)
        cache.put("v1", usable[:-2], features[:-2])  # two images have no cached features
        items = next_for_review(cat, settings.state.dir, cache, settings, 30)
        assert len(items) == 30 and [it.image_id for it in items[-2:]] == usable[-2:]  # the uncached ones come after
        picked = [usable.index(it.image_id) for it in items[:3]]
        assert sorted(cluster[picked]) == [0, 1, 2]  # three clusters, three picks: one each
        assert all("spread" in it.reason for it in items[:3])
    finally:
        cat.close()


def test_labelled_images_seed_the_spread(tmp_path: Path) -> None:
    settings, ids = served_state(tmp_path, n_images=30)
    cat = Catalogue(settings.state.dir)
    cache = FeatureCache(None)
    try:
        usable = ids["usable"]
        _predict(cat, dict.fromkeys(usable, 0.5))
        features, cluster = cluster_features(len(usable), 3)
        cache.put("v1", usable, features)
        for k, image_id in enumerate(usable):
            if cluster[k] == 0 and k < 6:
                set_label(cat, image_id, true_class(image_id), "ann", 1.0)
        items = next_for_review(cat, settings.state.dir, cache, settings, 2)
        assert sorted(cluster[[usable.index(it.image_id) for it in items]]) == [1, 2]
    finally:
        cat.close()


def test_no_serving_model_means_an_empty_queue(tmp_path: Path) -> None:
    from retrain_helpers import make_state, tiny_settings

    state = tmp_path / "state"
    make_state(state, 3)
    cat = Catalogue(state)
    try:
        assert next_for_review(cat, state, None, tiny_settings(state), 5) == []
    finally:
        cat.close()


def test_margin_of() -> None:
    np.testing.assert_allclose(margin_of(np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])), [0.5, 0.0])
    assert margin_of(np.ones((2, 1))).tolist() == [1.0, 1.0]


def test_cached_images_are_called_by_the_head_that_serves_now(tmp_path: Path) -> None:
    from xtalwatch.learn.bundle import ModelBundle
    from xtalwatch.learn.features import read_crops
    from xtalwatch.learn.heads.calibrate import softmax
    from xtalwatch.learn.registry import current_path
    from xtalwatch.store.catalogue import usable_images

    settings, ids = served_state(tmp_path, n_images=18, head_labels={i: true_class(i) for i in range(1, 13)})
    cat = Catalogue(settings.state.dir)
    cache = FeatureCache(None)
    try:
        bundle = ModelBundle.load(current_path(settings.state.dir))
        rows = usable_images(cat)
        features = bundle.embed(read_crops([p for _, _, p in rows], 3))
        cache.put("v1", [i for i, _, _ in rows], features)
        # Stored calls from an older model say 'other', sure of it; the serving head has no such class.
        insert_predictions(cat, [StoredCall(i, "v0", "other", 0.99, {"other": 0.99, "clear": 0.01})
                                 for i, _, _ in rows], time.time())
        items = next_for_review(cat, settings.state.dir, cache, settings, 3)
        probs = softmax(bundle.logits(features), bundle.temperature)
        row = {i: k for k, (i, _, _) in enumerate(rows)}
        for it in items:
            p = probs[row[it.image_id]]
            assert it.label == bundle.classes[int(p.argmax())] and abs(it.confidence - p.max()) < 1e-5
            assert it.uncertain == (p.max() < settings.classify.uncertain_below)
    finally:
        cat.close()
