"""Learning from labels in seconds: a re-fitted head shares the encoder, passes the gate, serves; a bad one is kept rejected."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from refit_helpers import served_state, true_class
from retrain_helpers import CLASSES
from xtalwatch.learn.bundle import ModelBundle
from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.learn.gate import holdout_mask
from xtalwatch.learn.refit import HeadRefitter
from xtalwatch.learn.registry import ModelRegistry, current_path
from xtalwatch.observe.metrics import Metrics
from xtalwatch.stages.classify import ClassifyStage
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.labels import set_label, sha256_of


def _label(cat: Catalogue, labels: dict[int, str]) -> None:
    for image_id, label in labels.items():
        set_label(cat, image_id, label, "reviewer", time.time())


def _wait_for(condition, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_refit_promotes_a_head_that_shares_the_encoder(tmp_path: Path) -> None:
    settings, ids = served_state(tmp_path)
    state = settings.state.dir
    cat = Catalogue(state)
    cache = FeatureCache(state)
    told: list[str] = []
    try:
        labels = {i: true_class(i) for i in ids["usable"][:24]}
        _label(cat, labels)
        refitter = HeadRefitter(settings, cat, cache, on_new_model=told.append)
        result = refitter.refit_now()
        assert result.promoted, result.reason
        assert result.parent == "v1" and result.n_labels == 24 and told == [result.version]
        assert {"features", "fit", "gate", "save"} <= set(result.steps) and result.seconds > 0
        registry = ModelRegistry(state)
        assert registry.current_version() == result.version
        new, old = registry.get(result.version).path, registry.get("v1").path
        assert os.stat(new / "encoder.pt").st_ino == os.stat(old / "encoder.pt").st_ino  # hard-linked
        meta = json.loads((new / "bundle.json").read_text())
        record = registry.get(result.version)
        # The head the choice picked serves (classify.head auto: linear or kNN on the cached features).
        assert meta["encoder_version"] == "v1" and meta["head"] == record.metrics["head_selection"]["winner"]
        assert record.metrics["gate"]["accuracy"] == result.accuracy
        assert record.metrics["refit"]["n_labels"] == 24 and record.metrics["refit"]["trigger"] == "labels"
        assert record.metrics["refit"]["seconds"] == pytest.approx(result.seconds, abs=1e-3)
        assert record.data_fingerprint != registry.get("v1").data_fingerprint  # retraining sees new labels
        assert cache.count("v1") == 24  # the crops the cache lacked were embedded once and kept
        bundle = ModelBundle.load(current_path(state))
        assert bundle.encoder_version == "v1" and bundle.classes == [c for c in settings.classify.classes
                                                                       if c in CLASSES]
        probs = bundle.predict_proba(np.zeros((2, 24, 24, 3), np.uint8))
        assert probs.shape == (2, 3)
        status = refitter.status()
        assert status["version"] == result.version and status["promoted"] and not status["pending"]
        json.dumps(status)
        stage = ClassifyStage(state, cat, Metrics(process_collectors=False))
        assert stage.refresh_model() and stage.version == result.version  # what the service's tick does
    finally:
        cat.close()


def test_pruning_the_parent_keeps_the_served_encoder(tmp_path: Path) -> None:
    settings, ids = served_state(tmp_path, **{"retrain.keep_models": 2})
    state = settings.state.dir
    cat = Catalogue(state)
    try:
        _label(cat, {i: true_class(i) for i in ids["usable"][:18]})
        refitter = HeadRefitter(settings, cat, FeatureCache(None))
        for more in (ids["usable"][18:21], ids["usable"][21:24]):
            _label(cat, {i: true_class(i) for i in more})
            assert refitter.refit_now().promoted
        registry = ModelRegistry(state)
        assert "v1" not in [r.version for r in registry.list()]  # pruned: 2 kept
        bundle = ModelBundle.load(current_path(state))
        assert bundle.encoder_version == "v1" and bundle.embed(np.zeros((1, 24, 24, 3), np.uint8)).shape == (1, 512)
    finally:
        cat.close()


def test_a_head_worse_than_the_serving_one_is_kept_rejected(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # The serving head knows the true classes; the new labels outside the hold-out are all wrong.
    truth = {i: true_class(i) for i in range(1, 37)}
    settings, ids = served_state(tmp_path, head_labels=truth)
    cat = Catalogue(state)
    try:
        usable = ids["usable"]
        shas = sha256_of(cat, usable)
        held = holdout_mask([shas[i] for i in usable], [truth[i] for i in usable], settings.retrain.holdout_fraction)
        wrong = {c: CLASSES[(k + 1) % 3] for k, c in enumerate(CLASSES)}
        _label(cat, {i: truth[i] if h else wrong[truth[i]] for i, h in zip(usable, held, strict=True)})
        result = HeadRefitter(settings, cat, FeatureCache(None)).refit_now()
        assert not result.promoted and "worse than the serving model" in result.reason
        assert result.accuracy < result.serving_accuracy
        registry = ModelRegistry(state)
        assert registry.current_version() == "v1"
        assert registry.get(result.version).status == "rejected"
        assert registry.get(result.version).reason == result.reason
    finally:
        cat.close()


def test_a_burst_of_requests_makes_one_refit(tmp_path: Path) -> None:
    settings, ids = served_state(tmp_path, **{"web.refit_debounce_seconds": 0.3})
    cat = Catalogue(settings.state.dir)
    promoted = threading.Event()
    refitter = HeadRefitter(settings, cat, FeatureCache(None), on_new_model=lambda v: promoted.set())
    refitter.start()
    try:
        for image_id in ids["usable"][:15]:
            _label(cat, {image_id: true_class(image_id)})
            refitter.request()
        assert refitter.status()["pending"]
        assert promoted.wait(60)
        _wait_for(lambda: not refitter.status()["pending"] and not refitter.status()["running"])
        status = refitter.status()
        assert status["refits"] == 1 and status["n_labels"] == 15 and status["promoted"]
        assert status["seconds"] >= 0.3  # counted from the first request, through the quiet wait
    finally:
        refitter.stop()
        cat.close()


def test_nothing_to_fit_is_said_plainly(tmp_path: Path) -> None:
    settings, ids = served_state(tmp_path)
    cat = Catalogue(settings.state.dir)
    try:
        refitter = HeadRefitter(settings, cat, FeatureCache(None))
        _label(cat, {ids["usable"][0]: "clear", ids["usable"][3]: "clear"})
        result = refitter.refit_now()
        assert result.version is None and not result.promoted and "a head needs two" in result.reason
        assert ModelRegistry(settings.state.dir).current_version() == "v1"
    finally:
        cat.close()


def test_no_serving_model(tmp_path: Path) -> None:
    from retrain_helpers import make_state, tiny_settings

    state = tmp_path / "state"
    make_state(state, 6)
    cat = Catalogue(state)
    try:
        result = HeadRefitter(tiny_settings(state), cat, FeatureCache(None)).refit_now()
        assert result.version is None and "no model is serving" in result.reason
    finally:
        cat.close()
