"""Classify preprocessed images as they arrive, with whatever model is serving now.

One worker thread owns classification. It takes every image waiting in its queue at once (a
batch of whatever arrived together), reads the model-size crops, asks the serving bundle for
calibrated probabilities, and stores one prediction per image and model version. A new model
is swapped in between two batches, never during one, so no image is dropped or classified
twice by the same model; images classified by an older model are re-classified in the
background when the queue is otherwise empty, as ``retrain.reclassify`` says.

Images queued by ``backfill`` (the first model's backlog, re-classification after a swap, images
that waited through a restart) are marked ``backlog`` in their predictions, so that the hit
tracker can summarise them per plate instead of alerting once per well; ``on_idle`` tells it
when the queue has run dry. Encoder features are kept in the ``FeatureCache`` under the
encoder's version: a new head on the same encoder classifies from them without reading a crop.

Frames with a quality flag or a failed preprocessing are not classified: they are reported
as flagged instead of receiving a confident-looking call.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xtalwatch.learn.feature_cache import FeatureCache
from xtalwatch.learn.features import CropUnreadable, read_crop
from xtalwatch.learn.registry import serving_key
from xtalwatch.observe.metrics import Metrics
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.maintenance import is_disk_full
from xtalwatch.store.predictions import (
    SiteShare,
    StoredCall,
    classified_ids,
    insert_predictions,
    predicted_ids,
    waiting_for,
)

__all__ = ["ClassifyStage", "Prediction"]

log = logging.getLogger(__name__)

MAX_BATCH = 64
PROBABILITY_DIGITS = 5  # stored confidences and probabilities; 1e-5 is far below any threshold that matters


@dataclass(frozen=True)
class Prediction:
    image_id: int
    model_version: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    uncertain: bool
    backlog: bool = False  # queued by backfill(), not submitted as it arrived


@dataclass(frozen=True)
class _Item:
    image_id: int
    crop_path: str
    completed_at: float | None
    background: bool = False  # some model classified it before: goes after new images
    backlog: bool = False  # queued by backfill()


class ClassifyStage:
    """The classify worker and the serving model it holds."""

    def __init__(self, state_dir: Path, catalogue: Catalogue, metrics: Metrics, *, uncertain_below: float = 0.5,
                 reclassify: str = "recent", recent_days: float = 7.0,
                 on_disk_full: Callable[[str, BaseException], None] | None = None,
                 features: FeatureCache | None = None, lease_seconds: float = 30.0):
        """``on_disk_full`` is told when predictions cannot be stored for lack of space (the images are
        backfilled once there is room again). ``features`` keeps each image's encoder features, and
        serves them instead of embedding the crop again (None: always embed). ``lease_seconds``: on a
        site, how long an agent may go unseen before its finished images are anyone's to reclassify."""
        self.lease_seconds = lease_seconds
        self.on_disk_full = on_disk_full
        self.features = features
        self.state_dir = state_dir
        self.catalogue = catalogue
        self.metrics = metrics
        self.uncertain_below = uncertain_below
        self.reclassify = reclassify
        self.recent_days = recent_days
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._bundle: Any = None
        self._bundle_key: tuple[str, float] | None = None
        self._swap_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # Items put in the queue and not yet done with, counted from put to the end of their batch:
        # an item taken off the queue is still counted, so idle() is never true while a batch is in hand.
        self._outstanding = 0
        self._outstanding_lock = threading.Lock()
        self.on_predictions: list[Callable[[list[Prediction]], None]] = []
        self.on_features: list[Callable[[Any, np.ndarray], None]] = []
        # Called in the worker when a batch is done and the queue is empty, and once as the worker stops.
        self.on_idle: list[Callable[[], None]] = []

    # -- the serving model --------------------------------------------------------------
    @property
    def version(self) -> str | None:
        bundle = self._bundle
        return getattr(bundle, "version", None) if bundle is not None else None

    def refresh_model(self) -> bool:
        """Load the registry's current model if it changed; True when a new one is now serving."""
        key = serving_key(self.state_dir)
        if key is None or key == self._bundle_key:
            return False
        try:
            bundle = _load_bundle(Path(key[0]))
        except Exception as exc:  # a half-written or broken model must not stop serving the old one
            log.error("cannot load model %s: %s; keeping %s", key[0], exc, self.version or "no model")
            self._bundle_key = key  # do not retry the same broken folder every tick
            return False
        with self._swap_lock:
            old = self.version
            self._bundle, self._bundle_key = bundle, key
        self.metrics.model_info.info({"version": bundle.version, "classes": ",".join(bundle.classes)})
        self.metrics.model_loaded.set(1)
        log.info("model %s now serving (was %s)", bundle.version, old or "none")
        return True

    # -- the worker -----------------------------------------------------------------------
    def start(self) -> None:
        self.refresh_model()
        self.backfill()  # queued before the worker runs: the waiting images go in full batches
        self._thread = threading.Thread(target=self._run, name="classify", daemon=True)
        self._thread.start()

    def submit(self, image_id: int, crop_path: str | None, completed_at: float | None, *,
               backlog: bool = False) -> None:
        """Queue a freshly preprocessed image; ``backlog`` when it waited (its hit joins the plate's summary)."""
        if crop_path:
            self._put(_Item(image_id, crop_path, completed_at, backlog=backlog))
            self.metrics.queue_depth.labels(stage="classify").set(self._queue.qsize())

    def backfill(self) -> int:
        """Queue usable images that have no prediction from the serving model (after a restart or a swap)."""
        version = self.version
        if version is None:
            return 0
        share = None
        if self.catalogue.agent is not None:  # a site (the site agent named this process): only this agent's share
            share = SiteShare(self.catalogue.imager or "", self.catalogue.agent, time.time() - self.lease_seconds)
        rows = waiting_for(self.catalogue, version, share)
        fresh_ids = {r.image_id for r in rows} - classified_ids(self.catalogue)
        for row in rows:
            background = row.image_id not in fresh_ids
            if background and not self._wants_reclassify(row.completed_at):
                continue
            self._put(_Item(row.image_id, row.crop_path, row.completed_at, background=background, backlog=True))
        return len(rows)

    def _put(self, item: _Item) -> None:
        with self._outstanding_lock:
            self._outstanding += 1
        self._queue.put(item)

    def _finished(self, items: int) -> None:
        with self._outstanding_lock:
            self._outstanding -= items

    def _wants_reclassify(self, completed_at: float | None) -> bool:
        if self.reclassify == "all":
            return True
        if self.reclassify == "none":
            return False
        return completed_at is not None and completed_at >= time.time() - self.recent_days * 86400

    def idle(self) -> bool:
        """True when nothing is queued and no batch is in hand."""
        with self._outstanding_lock:
            return self._outstanding == 0

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _take_batch(self) -> list[_Item]:
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._stop.set()
                break
            batch.append(item)
        # Images that just arrived go before background re-classification.
        batch.sort(key=lambda it: it.background)
        return batch

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._take_batch()
                if not batch:
                    return
                try:
                    self._classify(batch)
                except Exception as exc:
                    if is_disk_full(exc) and self.on_disk_full is not None:
                        self.on_disk_full("classification", exc)  # the batch is backfilled when there is room
                    else:
                        log.exception("classifying a batch of %d images failed; they stay unclassified for now",
                                      len(batch))
                finally:
                    # Before the batch stops counting, so that idle() also means the idle callbacks ran.
                    if self._queue.empty():
                        self._idle()
                    self._finished(len(batch))
                    self.metrics.queue_depth.labels(stage="classify").set(self._queue.qsize())
        finally:
            self._idle()  # whatever waits for a quiet moment (a plate's backlog hits) is not lost at a stop

    def _idle(self) -> None:
        for callback in self.on_idle:
            try:
                callback()
            except Exception:
                log.exception("an idle callback of the classify stage failed")

    def _classify(self, batch: list[_Item]) -> None:
        with self._swap_lock:
            bundle = self._bundle
        if bundle is None or not getattr(bundle, "classes", None):
            return  # no model yet: the images wait in the catalogue and are backfilled after the first model
        ids = [item.image_id for item in batch]
        done = predicted_ids(self.catalogue, bundle.version, ids)
        todo, seen = [], set()
        for item in batch:
            if item.image_id in done or item.image_id in seen:
                continue  # queued twice (arrival and backfill): one prediction per model version
            seen.add(item.image_id)
            todo.append(item)
        encoder = getattr(bundle, "encoder_version", bundle.version)
        held: dict[int, np.ndarray] = {}
        if self.features is not None and todo:
            held_ids, held_features = self.features.get(encoder, [item.image_id for item in todo])
            held = dict(zip(held_ids, held_features, strict=True))
        crops, kept, embedded = [], [], []
        for item in todo:
            if item.image_id not in held:
                try:
                    crops.append(read_crop(item.crop_path, bundle.channels))
                except CropUnreadable:
                    log.warning("crop of image %d is missing or unreadable: %s", item.image_id, item.crop_path)
                    continue
                embedded.append(item.image_id)
            kept.append(item)
        if not kept:
            return
        start = time.perf_counter()
        if crops:
            new = bundle.embed(np.stack(crops))
            if self.features is not None:
                self.features.put(encoder, embedded, new)
            held.update(zip(embedded, new, strict=True))
        features = np.stack([held[item.image_id] for item in kept]).astype(np.float32, copy=False)
        probs = _softmax(bundle.logits(features), bundle.temperature)
        self.metrics.classify_seconds.observe(time.perf_counter() - start)
        now = time.time()
        predictions = [Prediction(item.image_id, c["model_version"], c["class"], c["confidence"], c["probabilities"],
                                  c["uncertain"], item.backlog)
                       for item, c in zip(kept, _calls(bundle, probs, self.uncertain_below), strict=True)]
        insert_predictions(self.catalogue, [StoredCall(p.image_id, p.model_version, p.label, p.confidence,
                                                       p.probabilities, p.uncertain) for p in predictions], now)
        for item, pred in zip(kept, predictions, strict=True):
            self.metrics.predictions.labels(**{"class": pred.label}).inc()
            if item.completed_at is not None and not item.background:
                self.metrics.result_latency_seconds.observe(now - item.completed_at)
        for callback in self.on_predictions:
            callback(predictions)
        fresh = [i for i, item in enumerate(kept) if not item.background]
        if fresh:
            for feature_callback in self.on_features:
                feature_callback(bundle, features[fresh])


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    from xtalwatch.learn.heads.calibrate import softmax

    return softmax(logits, temperature)


# learn.bundle imports torch: these imports wait until a model is loaded, which needs torch anyway.
def _load_bundle(folder: Path) -> Any:
    from xtalwatch.learn.bundle import ModelBundle

    return ModelBundle.load(folder)


def _calls(bundle: Any, probs: np.ndarray, uncertain_below: float) -> list[dict]:
    from xtalwatch.learn.bundle import calls

    return calls(bundle, probs, uncertain_below, digits=PROBABILITY_DIGITS)
