"""The classify stage: idle() only when nothing is in hand; the feature cache; uncertain calls stored."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any

from classify_helpers import ALL_CRYSTAL, make_state, serve, usable_crops
from conftest import wait_for
from prometheus_client import CollectorRegistry
from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.observe.metrics import Metrics
from xtalwatch.stages.classify import ClassifyStage, Prediction
from xtalwatch.stages.outcomes import HitTracker
from xtalwatch.stages.well_outcome import OutcomeRule, plate_outcomes
from xtalwatch.store.catalogue import Catalogue


def test_idle_is_false_while_a_batch_is_in_hand(tmp_path: Path) -> None:
    """The worker has taken the item off the queue but not yet started on it: not idle."""
    taken, release = threading.Event(), threading.Event()

    class HeldQueue(queue.Queue):  # holds the worker just after it took an item, where the race was
        def get(self, *args: Any, **kwargs: Any) -> Any:
            item = super().get(*args, **kwargs)
            if item is not None:
                taken.set()
                release.wait(30)
            return item

    catalogue = Catalogue(tmp_path)
    stage = ClassifyStage(tmp_path, catalogue, Metrics(CollectorRegistry(), process_collectors=False))
    stage._queue = HeldQueue()
    stage.start()
    try:
        assert stage.idle()
        stage.submit(1, str(tmp_path / "crop.png"), None)
        assert taken.wait(30)
        assert stage._queue.empty()
        assert not stage.idle(), "idle() while the worker holds a batch"
        release.set()
        wait_for(stage.idle, 30)
    finally:
        release.set()
        stage.stop()
        catalogue.close()


# -- with a real tiny model ---------------------------------------------------------------------
def _metrics() -> Metrics:
    return Metrics(CollectorRegistry(), process_collectors=False)


def _count(catalogue: Catalogue, table: str, where: str = "1") -> int:
    return catalogue.query(f"SELECT COUNT(*) FROM {table} WHERE {where}")[0][0]


def test_a_head_only_model_classifies_from_cached_features_without_reading_crops(tmp_path: Path) -> None:
    make_state(tmp_path, 12, flagged=0, failed=0)
    first = serve(tmp_path, "v1")
    catalogue = Catalogue(tmp_path)
    cache = FeatureCache(None)
    stage = ClassifyStage(tmp_path, catalogue, _metrics(), reclassify="all", features=cache)
    seen: list[Prediction] = []
    stage.on_predictions.append(seen.extend)
    stage.start()
    try:
        wait_for(lambda: stage.idle() and _count(catalogue, "predictions", "model_version = 'v1'") == 12, 60)
        assert cache.count("v1") == 12 and all(p.backlog for p in seen)  # the first model's backlog
        second = serve(tmp_path, "v2", encoder_of=first, head="knn")  # promoted; the stage swaps below
        crops = usable_crops(tmp_path)
        for path in crops.values():
            Path(path).unlink()  # from now on, a crop read fails
        assert second.encoder_version == "v1" and stage.refresh_model() and stage.version == "v2"
        stage.backfill()
        wait_for(lambda: stage.idle() and _count(catalogue, "predictions", "model_version = 'v2'") == 12, 60)
        assert cache.count("v1") == 12
        rows = catalogue.query("SELECT image_id, probabilities FROM predictions WHERE model_version = 'v2'")
        assert {r["image_id"] for r in rows} == set(crops)
        assert all(abs(sum(json.loads(r["probabilities"]).values()) - 1) < 1e-3 for r in rows)
    finally:
        stage.stop()
        catalogue.close()


def test_a_new_encoder_reads_the_crops_again(tmp_path: Path) -> None:
    make_state(tmp_path, 6, flagged=0, failed=0)
    serve(tmp_path, "v1")
    catalogue = Catalogue(tmp_path)
    cache = FeatureCache(None)
    stage = ClassifyStage(tmp_path, catalogue, _metrics(), reclassify="all", features=cache)
    stage.start()
    try:
        wait_for(lambda: stage.idle() and _count(catalogue, "predictions", "model_version = 'v1'") == 6, 60)
        serve(tmp_path, "v2")  # its own encoder: the cached features are of no use
        assert stage.refresh_model()
        stage.backfill()
        wait_for(lambda: stage.idle() and _count(catalogue, "predictions", "model_version = 'v2'") == 6, 60)
        assert cache.encoder == "v2" and cache.count("v2") == 6
    finally:
        stage.stop()
        catalogue.close()


def test_calls_below_uncertain_below_are_stored_uncertain_and_decide_nothing(tmp_path: Path) -> None:
    make_state(tmp_path, 6, flagged=0, failed=0)
    serve(tmp_path, "v1")
    catalogue = Catalogue(tmp_path)
    metrics = _metrics()
    stage = ClassifyStage(tmp_path, catalogue, metrics, uncertain_below=1.0)  # no call is that sure
    rule = OutcomeRule.from_config(ALL_CRYSTAL)
    hits = HitTracker(catalogue, metrics, None, rule, 0.0)
    stage.on_predictions.append(hits.on_predictions)
    stage.start()
    try:
        wait_for(lambda: stage.idle() and _count(catalogue, "predictions") == 6, 60)
        assert _count(catalogue, "predictions", "uncertain = 1") == 6
        assert _count(catalogue, "events", "kind = 'crystal_hit'") == 0  # every class is a crystal here
        plate = catalogue.query("SELECT id FROM plates")[0][0]
        states = plate_outcomes(catalogue, plate, rule, 0.0)
        assert len(states) == 6
        assert all(s.outcome.label is None and s.uncertain == 1 and s.images == 1 for s in states.values())
    finally:
        stage.stop()
        catalogue.close()
