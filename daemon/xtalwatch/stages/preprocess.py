"""Run preprocessing for every newly catalogued image in a process pool, off the main loop.

Ingest hands each new image over with ``submit``; a worker process decodes, locates, crops and
measures it (``xtalwatch.preprocess.preprocess_file``), and the result is stored in the
catalogue from the pool's callback thread. The image's status then says what happened:
``preprocessed``, ``flagged`` (a quality flag: kept out of training and hit alerts) or
``failed`` (the frame could not be decoded; the reason is stored). A ``preprocessed`` image's
crop goes straight on to the classify stage. Images left ``catalogued`` by a stop are submitted
again at the next start, so nothing is lost.

A worker that dies (the OOM killer, ``kill -9``) breaks a ``ProcessPoolExecutor`` for good, so
the pool holds its own backlog and hands the executor no more images than it has workers: when
one dies, the images in flight are known. The pool is then rebuilt (logged once, counted in
``xtalwatch_preprocess_pool_restarts_total``) and those images tried again, one at a time among
the others, so that an image in flight at two deaths is the one that killed its worker: it is
recorded ``failed`` with the reason ``worker_died`` instead of killing the pool for ever.
Workers end with the service (``lifetime.die_with``), even when it is killed.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from xtalwatch.config import PreprocessConfig, Settings
from xtalwatch.lifetime import die_with
from xtalwatch.observe.metrics import Metrics
from xtalwatch.preprocess import STATE_DISK_FULL, PreprocessResult, preprocess_file
from xtalwatch.store.catalogue import Catalogue, catalogued_images
from xtalwatch.store.maintenance import is_disk_full
from xtalwatch.store.paths import shown

__all__ = ["PreprocessPool", "PreprocessedCrops", "status_for"]

log = logging.getLogger(__name__)

CROPS_DIR = "crops"
WORKER_DEATHS = 2  # an image in flight at this many worker deaths is recorded failed: worker_died


class PreprocessedCrops(Protocol):
    """The stage after preprocessing: takes the crop of each usable image (the classify stage)."""

    def submit(self, image_id: int, crop_path: str | None, completed_at: float | None, *,
               backlog: bool = False) -> None: ...


def status_for(result: PreprocessResult) -> str:
    """The catalogue status an image takes after preprocessing: ``preprocessed`` ones are classified.

    A frame whose drop was not found but whose well was still gets a call on the well crop: an
    empty-looking well is often a clear drop, and a faint one is in the crop. Its ``no_drop_found``
    flag is kept, so the call never decides the well's outcome and the review queue shows it.
    """
    if result.error:
        return "failed"
    if not result.flags or (set(result.flags) == {"no_drop_found"} and result.method == "well"):
        return "preprocessed"
    return "flagged"


def _timed_preprocess(path: str, cfg: PreprocessConfig, max_pixels: int, out_dir: str,
                      sha256: str) -> tuple[dict, float]:
    start = time.perf_counter()
    result = preprocess_file(Path(path), cfg, Path(out_dir), max_pixels=max_pixels, sha256=sha256)
    return result.to_dict(), time.perf_counter() - start


def _start_worker(service_pid: int) -> None:
    import cv2

    die_with(service_pid)  # the fork server is this worker's parent, not the service: watch the service itself
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would fight them


@dataclass
class _Job:
    image_id: int
    path: str
    sha256: str
    completed_at: float | None
    deaths: int = 0  # worker deaths while this image was in flight
    backlog: bool = False  # left by a previous run: its hits join the plate's summary, not one alert each


class PreprocessPool:
    """A pool of worker processes sized to the cores (``ingest.workers``; 0 = one per core)."""

    def __init__(self, settings: Settings, catalogue: Catalogue, metrics: Metrics,
                 downstream: PreprocessedCrops | None = None,
                 on_disk_full: Callable[[str, BaseException], None] | None = None):
        """``downstream`` takes each ``preprocessed`` image's crop (None: preprocess only);
        ``on_disk_full`` is told when a result cannot be stored for lack of space (the image then
        stays ``catalogued`` and is taken again by ``resume()``)."""
        self.on_disk_full = on_disk_full
        self.settings = settings
        self.catalogue = catalogue
        self.metrics = metrics
        self.out_dir = settings.state.dir / CROPS_DIR
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.workers = settings.ingest.workers or os.cpu_count() or 1
        self.downstream = downstream
        self.restarts = 0
        self._lock = threading.Lock()
        self._jobs: dict[int, _Job] = {}  # every image submitted and not yet stored
        self._waiting: deque[_Job] = deque()  # not yet handed to the executor
        self._suspects: deque[_Job] = deque()  # in flight at a worker death: tried again one at a time
        self._in_flight: dict[int, _Job] = {}  # handed to the current executor
        self._closed = False
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        # forkserver: the service has threads, and fork() of a threaded process can deadlock.
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                   initializer=_start_worker, initargs=(os.getpid(),))

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def submit(self, image_id: int, path: str, sha256: str, completed_at: float | None = None, *,
               backlog: bool = False) -> None:
        with self._lock:
            if image_id in self._jobs or self._closed:
                return  # already on its way, or stopping: it stays 'catalogued' for the next start
            job = self._jobs[image_id] = _Job(image_id, path, sha256, completed_at, backlog=backlog)
            self._waiting.append(job)
        self._dispatch()
        self._set_depth()

    def resume(self) -> int:
        """Submit images a previous run (or a full disk) left catalogued but not preprocessed.

        On a site, only this agent's claims: other agents' images are theirs, or the claimer's (stages/claims.py).
        """
        rows = catalogued_images(self.catalogue, self.catalogue.agent)
        for image_id, path, sha256 in rows:
            self.submit(image_id, path, sha256, backlog=True)
        if rows:
            log.info("resuming preprocessing of %d images left from the last run", len(rows))
        return len(rows)

    def idle(self) -> bool:
        return len(self) == 0

    def shutdown(self) -> None:
        """Drop what has not started (it stays 'catalogued' for the next start); let running frames finish."""
        with self._lock:
            self._closed = True
            dropped = [*self._waiting, *self._suspects]
            self._waiting.clear()
            self._suspects.clear()
            for job in dropped:
                del self._jobs[job.image_id]
            executor = self._executor
        self._set_depth()
        executor.shutdown(wait=True, cancel_futures=True)

    # -- handing images to the executor, and rebuilding it when a worker dies ------------------
    def _dispatch(self) -> None:
        """Hand waiting images to the executor, no more in flight than there are workers."""
        while True:
            with self._lock:
                if self._closed or len(self._in_flight) >= self.workers:
                    return
                if self._suspects and not any(j.deaths for j in self._in_flight.values()):
                    job = self._suspects.popleft()
                elif self._waiting:
                    job = self._waiting.popleft()
                else:
                    return
                executor = self._executor
                try:
                    future = executor.submit(_timed_preprocess, job.path, self.settings.preprocess,
                                             self.settings.ingest.max_pixels, str(self.out_dir), job.sha256)
                except BrokenProcessPool:  # a worker died while none of ours was in flight
                    (self._suspects if job.deaths else self._waiting).appendleft(job)
                    future = None
                else:
                    self._in_flight[job.image_id] = job
            if future is None:
                self._rebuild(executor)
                continue
            future.add_done_callback(lambda f, job=job, executor=executor: self._done(job, executor, f))

    def _rebuild(self, broken: ProcessPoolExecutor) -> None:
        """Replace ``broken`` by a new executor, once, however many of its futures report it."""
        with self._lock:
            if self._executor is not broken or self._closed:
                return
            self._executor = self._new_executor()
            self.restarts += 1
            waiting = len(self._jobs)
        self.metrics.preprocess_pool_restarts.inc()
        log.warning("a preprocessing worker process died (killed, or out of memory); pool rebuilt (restart %d), "
                    "%d images to go", self.restarts, waiting)
        broken.shutdown(wait=False, cancel_futures=True)

    def _done(self, job: _Job, executor: ProcessPoolExecutor, future: Future) -> None:
        if future.cancelled():
            self._forget(job)
            return
        exc = future.exception()
        if isinstance(exc, BrokenProcessPool):
            with self._lock:
                self._in_flight.pop(job.image_id, None)
                job.deaths += 1
                retry = not self._closed and job.deaths < WORKER_DEATHS
                if retry:
                    self._suspects.append(job)
            if not retry and self._closed:
                self._forget(job)  # stopping: it stays 'catalogued' for the next start
            elif not retry:
                self._store(job, PreprocessResult(job.path, "", error="worker_died", error_detail=(
                    f"its worker process died {job.deaths} times while preprocessing it")), 0.0)
            self._rebuild(executor)
        elif exc is not None:  # the call itself failed (not the frame: preprocess_file records those)
            self._store(job, PreprocessResult(job.path, "", error="worker_failed",
                                              error_detail=f"{type(exc).__name__}: {exc}"), 0.0)
        else:
            data, seconds = future.result()
            self._store(job, PreprocessResult.from_dict(data), seconds)
        self._dispatch()

    # -- results --------------------------------------------------------------------------------
    def _store(self, job: _Job, result: PreprocessResult, seconds: float) -> None:
        image_id, path = job.image_id, job.path
        if result.error == STATE_DISK_FULL:  # the crop could not be written: not the frame's fault
            self._disk_full(OSError(28, result.error_detail or "no space left on the state disk"))
            self._forget(job)
            return
        try:
            status = status_for(result)
            self.catalogue.record_preprocess(image_id, result.method, result.flags, result.crop_path, result.error,
                                             json.dumps(result.to_dict()), status)
            self.metrics.preprocess_seconds.observe(seconds)
            for flag in result.flags:
                self.metrics.images_flagged.labels(flag=flag).inc()
            if result.error:
                self.metrics.images_rejected.labels(reason=result.error).inc()
                log.warning("image %d %s could not be preprocessed: %s: %s", image_id, shown(path), result.error,
                            result.error_detail)
            elif result.flags:
                log.info("image %d flagged %s (%s)", image_id, ",".join(result.flags), shown(path))
            if self.downstream is not None and status == "preprocessed":
                self.downstream.submit(image_id, result.crop_path, job.completed_at, backlog=job.backlog)
        except Exception as exc:
            if is_disk_full(exc):  # nothing stored: the image stays 'catalogued' and is taken again
                self._disk_full(exc)
            else:
                log.exception("storing the preprocessing result of image %d failed", image_id)
        finally:
            self._forget(job)

    def _disk_full(self, exc: BaseException) -> None:
        if self.on_disk_full is not None:
            self.on_disk_full("preprocessing", exc)
        else:
            log.warning("state disk full: a preprocessing result was not stored (%s)", exc)

    def _forget(self, job: _Job) -> None:
        with self._lock:
            self._in_flight.pop(job.image_id, None)
            self._jobs.pop(job.image_id, None)
        self._set_depth()

    def _set_depth(self) -> None:
        self.metrics.queue_depth.labels(stage="preprocess").set(len(self))
