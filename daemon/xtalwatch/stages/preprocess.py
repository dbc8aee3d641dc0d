"""Run preprocessing for every newly catalogued image in a process pool, off the main loop.

Ingest hands each new image over with ``submit``; a worker process decodes, locates, crops and
measures it (``xtalwatch.preprocess.preprocess_file``), and the result is stored in the
catalogue from the pool's callback thread. The image's status then says what happened:
``preprocessed``, ``flagged`` (a quality flag: kept out of training and hit alerts) or
``failed`` (the frame could not be decoded; the reason is stored). A ``preprocessed`` image's
crop goes straight on to the classify stage. Images left ``catalogued`` by a stop are submitted
again at the next start, so nothing is lost.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Protocol

from xtalwatch.config import PreprocessConfig, Settings
from xtalwatch.observe.metrics import Metrics
from xtalwatch.preprocess import PreprocessResult, preprocess_file
from xtalwatch.store.catalogue import Catalogue, catalogued_images

__all__ = ["PreprocessPool", "PreprocessedCrops", "status_for"]

log = logging.getLogger(__name__)

CROPS_DIR = "crops"


class PreprocessedCrops(Protocol):
    """The stage after preprocessing: takes the crop of each usable image (the classify stage)."""

    def submit(self, image_id: int, crop_path: str | None, completed_at: float | None) -> None: ...


def status_for(result: PreprocessResult) -> str:
    """The catalogue status an image takes after preprocessing."""
    if result.error:
        return "failed"
    return "flagged" if result.flags else "preprocessed"


def _timed_preprocess(path: str, cfg: PreprocessConfig, max_pixels: int, out_dir: str,
                      sha256: str) -> tuple[dict, float]:
    start = time.perf_counter()
    result = preprocess_file(Path(path), cfg, Path(out_dir), max_pixels=max_pixels, sha256=sha256)
    return result.to_dict(), time.perf_counter() - start


def _quiet_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would fight them


class PreprocessPool:
    """A pool of worker processes sized to the cores (``ingest.workers``; 0 = one per core)."""

    def __init__(self, settings: Settings, catalogue: Catalogue, metrics: Metrics,
                 downstream: PreprocessedCrops | None = None):
        """``downstream`` takes each ``preprocessed`` image's crop (None: preprocess only)."""
        self.settings = settings
        self.catalogue = catalogue
        self.metrics = metrics
        self.out_dir = settings.state.dir / CROPS_DIR
        self.out_dir.mkdir(parents=True, exist_ok=True)
        workers = settings.ingest.workers or os.cpu_count() or 1
        # forkserver: the service has threads, and fork() of a threaded process can deadlock.
        self._executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"),
                                             initializer=_quiet_worker)
        self._pending: set[int] = set()
        self._lock = threading.Lock()
        self.downstream = downstream
        self.workers = workers

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def submit(self, image_id: int, path: str, sha256: str, completed_at: float | None = None) -> None:
        with self._lock:
            if image_id in self._pending:
                return
            self._pending.add(image_id)
        future = self._executor.submit(_timed_preprocess, path, self.settings.preprocess,
                                       self.settings.ingest.max_pixels, str(self.out_dir), sha256)
        future.add_done_callback(lambda f: self._store(image_id, path, completed_at, f))
        self.metrics.queue_depth.labels(stage="preprocess").set(len(self))

    def resume(self) -> int:
        """Submit images a previous run catalogued but did not preprocess."""
        rows = catalogued_images(self.catalogue)
        for image_id, path, sha256 in rows:
            self.submit(image_id, path, sha256)
        if rows:
            log.info("resuming preprocessing of %d images left from the last run", len(rows))
        return len(rows)

    def _store(self, image_id: int, path: str, completed_at: float | None, future: Future) -> None:
        try:
            if future.cancelled():
                return
            exc = future.exception()
            if exc is not None:  # the worker died (killed, out of memory): record it, keep going
                result = PreprocessResult(path, "", error="worker_failed", error_detail=f"{type(exc).__name__}: {exc}")
                seconds = 0.0
            else:
                data, seconds = future.result()
                result = PreprocessResult.from_dict(data)
            status = status_for(result)
            self.catalogue.record_preprocess(image_id, result.method, result.flags, result.crop_path, result.error,
                                             json.dumps(result.to_dict()), status)
            self.metrics.preprocess_seconds.observe(seconds)
            for flag in result.flags:
                self.metrics.images_flagged.labels(flag=flag).inc()
            if result.error:
                self.metrics.images_rejected.labels(reason=result.error).inc()
                log.warning("image %d %s could not be preprocessed: %s: %s", image_id, path, result.error,
                            result.error_detail)
            elif result.flags:
                log.info("image %d flagged %s (%s)", image_id, ",".join(result.flags), path)
            if self.downstream is not None and status == "preprocessed":
                self.downstream.submit(image_id, result.crop_path, completed_at)
        except Exception:
            log.exception("storing the preprocessing result of image %d failed", image_id)
        finally:
            with self._lock:
                self._pending.discard(image_id)
            self.metrics.queue_depth.labels(stage="preprocess").set(len(self))

    def idle(self) -> bool:
        return len(self) == 0

    def shutdown(self) -> None:
        """Cancel what has not started (it stays 'catalogued' for the next start); let running frames finish."""
        self._executor.shutdown(wait=True, cancel_futures=True)
