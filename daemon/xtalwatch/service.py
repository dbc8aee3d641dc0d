"""The one object that owns the service's life cycle.

``Service.run()`` starts the stages in data-flow order (catalogue, web, ingest workers, the
start-up scan, the observer), then loops: hand settled files to ingest, supervise the
observer, rescan on schedule, refresh gauges. Every sleep is a wait on the stop event, so
SIGTERM ends the loop at once; the stages then stop in reverse order, and files still in the
ingest queue are finished within ``service.shutdown_timeout_seconds`` (anything left is picked
up again by the next start-up scan, so nothing is lost either way).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from xtalwatch.alerts import events as ev
from xtalwatch.alerts.checks import DriftMonitor, HealthChecks
from xtalwatch.alerts.dispatch import AlertDispatcher, raise_event
from xtalwatch.config import Settings
from xtalwatch.learn.retrain import RetrainOutcome, count_usable
from xtalwatch.learn.scheduler import RetrainScheduler, first_training_due
from xtalwatch.observe import sdnotify
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.web import WebServer, build_app
from xtalwatch.plugins import PluginRegistry
from xtalwatch.stages.adapters import AdapterChain
from xtalwatch.stages.classify import ClassifyStage
from xtalwatch.stages.ingest import Ingestor, changed_ns
from xtalwatch.stages.outcomes import HitTracker
from xtalwatch.stages.preprocess import PreprocessPool, status_for
from xtalwatch.stages.watch import FolderWatcher, SettleTracker, scan_folder
from xtalwatch.store.catalogue import Catalogue

__all__ = ["Service"]

log = logging.getLogger(__name__)

_STOP = object()

# A first training that failed (or was rejected) is tried again after this long, not every tick.
FIRST_TRAINING_RETRY_SECONDS = 3600.0


class Service:
    """Watch → settle → ingest → catalogue, with metrics, until asked to stop."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        if settings.watch.dir is None:
            raise ValueError("watch.dir is not set: pass --watch DIR or set it in the config")
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.catalogue: Catalogue | None = None
        self.ingestor: Ingestor | None = None
        self.preprocess: PreprocessPool | None = None
        self.classify: ClassifyStage | None = None
        self.alerts: AlertDispatcher | None = None
        self.hits: HitTracker | None = None
        self.health: HealthChecks | None = None
        self.scheduler: RetrainScheduler | None = None
        self._next_health = 0.0
        self._first_training_asked = False
        self.web: WebServer | None = None
        self.tracker = SettleTracker(settings.watch.settle_seconds)
        self.watcher: FolderWatcher | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=settings.ingest.queue_size)
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._signals = 0
        self.keepalive = sdnotify.KeepAlive()
        self.on_ready: list[Callable[[], None]] = []
        self.on_tick: list[Callable[[], None]] = []

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        self.catalogue = Catalogue(settings.state.dir)
        self._restore_gauges()
        registry = PluginRegistry.discover(settings.plugins.dirs)
        chain = AdapterChain.from_config(settings.adapters, registry)
        self.ingestor = Ingestor(settings, self.catalogue, chain, self.metrics)
        self.preprocess = PreprocessPool(settings, self.catalogue, self.metrics)
        self.ingestor.on_new_image.append(self.preprocess.submit)
        self.alerts = AlertDispatcher(settings.alerts, registry, self.metrics)
        self.classify = ClassifyStage(settings.state.dir, self.catalogue, self.metrics,
                                      uncertain_below=settings.classify.uncertain_below,
                                      reclassify=settings.retrain.reclassify, recent_days=settings.retrain.recent_days)
        self.hits = HitTracker(self.catalogue, self.metrics, self.alerts, settings.alerts.hit_min_confidence)
        self.classify.on_predictions.append(self.hits.on_predictions)
        self.drift = DriftMonitor(self.catalogue, self.alerts, settings.alerts)
        self.classify.on_features.append(self.drift.on_features)
        self.health = HealthChecks(settings.state.dir, self.catalogue, self.metrics, self.alerts, settings.alerts)
        self.preprocess.on_done.append(self._preprocessed)
        self.classify.start()
        self.preprocess.resume()
        self.scheduler = RetrainScheduler(settings, on_outcome=self._retrained)
        self.scheduler.start()
        if settings.metrics.enabled:
            self.web = WebServer(build_app(self.metrics, self.status_summary), settings.metrics.host,
                                 settings.metrics.port)
            self.web.start()
        for i in range(max(1, min(4, os.cpu_count() or 1))):
            worker = threading.Thread(target=self._ingest_worker, name=f"ingest-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        self.watcher = FolderWatcher(settings.watch, self.tracker, self._observer_restarted)
        # Start the observer before the scan so that nothing written during the scan is missed;
        # a file seen by both is settled once and catalogued once.
        self.watcher.start()
        self.rescan()
        self._wait_for_idle()
        self.ready.set()
        log.info("ready: start-up scan done, %d files pending", len(self.tracker))
        sdnotify.ready(f"watching {settings.watch.dir}")
        for callback in self.on_ready:
            callback()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT or ``request_stop()``; returns the exit status."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.start()
            next_rescan = time.monotonic() + (self.settings.watch.rescan_interval_seconds or float("inf"))
            while not self.stop_event.is_set():
                self.tick()
                if time.monotonic() >= next_rescan:
                    self.rescan()
                    next_rescan = time.monotonic() + self.settings.watch.rescan_interval_seconds
                self.stop_event.wait(0.1)
        finally:
            self.shutdown()
        return 0

    def request_stop(self) -> None:
        self.stop_event.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.error("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s: stopping (send again to force)", signal.Signals(signum).name)
        sdnotify.stopping()
        self.stop_event.set()

    def shutdown(self) -> None:
        """Stop taking files, finish the queue within the timeout, then stop everything else."""
        if self.watcher is not None:
            self.watcher.stop()
        deadline = time.monotonic() + self.settings.service.shutdown_timeout_seconds
        for _ in self._workers:
            self._queue.put(_STOP)
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        left = sum(1 for w in self._workers if w.is_alive())
        if left:
            log.warning("shutdown timeout: %d ingest workers still busy; their files are taken at the next start", left)
        self._workers.clear()
        if self.preprocess is not None:
            self.preprocess.shutdown()
        if self.classify is not None:
            self.classify.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown(timeout=max(1.0, deadline - time.monotonic()))
        if self.alerts is not None:
            self.alerts.close(timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        if self.web is not None:
            self.web.stop()
        if self.catalogue is not None and not left:
            self.catalogue.close()
        log.info("stopped")

    # -- the loop's work -------------------------------------------------------------
    def tick(self) -> None:
        assert self.watcher is not None
        for path in self.tracker.due():
            self._enqueue(path)
        if self.watcher.supervise():
            self.rescan()
        if self.classify is not None and self.classify.refresh_model():
            self.classify.backfill()
        if time.monotonic() >= self._next_health:
            self._next_health = time.monotonic() + 30.0
            self._periodic_checks()
        self.metrics.queue_depth.labels(stage="settle").set(len(self.tracker))
        self.metrics.queue_depth.labels(stage="ingest").set(self._queue.qsize())
        self.keepalive.tick()
        for callback in self.on_tick:
            callback()

    def rescan(self) -> None:
        """Reconcile the folder with the catalogue: note every file not yet catalogued as it is now."""
        assert self.catalogue is not None and self.settings.watch.dir is not None
        noted = 0
        for path in scan_folder(self.settings.watch.dir, self.settings.watch.ignore_globs):
            key = os.path.abspath(path)
            try:
                st = os.stat(path)
                if self.catalogue.is_settled(key, st.st_size, changed_ns(st)):
                    continue
            except OSError:
                pass  # a loop or an unreadable entry: ingest will say why
            self.tracker.note(key)
            noted += 1
        self.metrics.rescans.inc()
        if noted:
            log.info("scan of %s found %d files to take", self.settings.watch.dir, noted)

    def _preprocessed(self, image_id: int, result: Any, completed_at: float | None) -> None:
        if self.classify is not None and status_for(result) == "preprocessed":
            self.classify.submit(image_id, result.crop_path, completed_at)

    def _periodic_checks(self) -> None:
        """Imager stalled, disk low, and the first training once enough usable images are there."""
        assert self.health is not None and self.scheduler is not None and self.classify is not None
        self.metrics.observe_disk(self.settings.state.dir)
        try:
            self.health.run()
        except Exception:
            log.exception("health checks failed")
        last = self.scheduler.last_outcome
        if (self._first_training_asked and not self.scheduler.running and last is not None
                and last.status in ("failed", "rejected") and time.time() - last.started_at > FIRST_TRAINING_RETRY_SECONDS):
            self._first_training_asked = False  # the first training failed an hour ago: try again
        if (self.classify.version is None and self.settings.retrain.auto_first_training
                and not self._first_training_asked and not self.scheduler.running):
            usable = count_usable(self.settings.state.dir)
            if first_training_due(usable, self.settings.train.min_images):
                log.info("%d usable images (train.min_images %d): starting the first training",
                         usable, self.settings.train.min_images)
                self._first_training_asked = self.scheduler.trigger_now()

    def _retrained(self, outcome: RetrainOutcome) -> None:
        """Count, record and announce a training run; a promoted model is hot-swapped by the next tick."""
        assert self.catalogue is not None
        self.metrics.training_runs.labels(outcome=outcome.status).inc()
        if outcome.status in ("promoted", "rejected"):
            self.metrics.training_last_success.set(outcome.started_at + outcome.seconds)
            self.metrics.training_duration_seconds.observe(outcome.seconds)
            if outcome.final_loss is not None:
                self.metrics.training_last_loss.set(outcome.final_loss)
        event = None
        if outcome.status == "promoted" and outcome.version:
            event = ev.model_promoted(outcome.version, outcome.candidate, previous=outcome.serving_version)
        elif outcome.status == "rejected" and outcome.version:
            event = ev.model_rejected(outcome.version, outcome.reason, outcome.candidate)
        elif outcome.status == "failed":
            event = ev.training_failed(outcome.reason, run=outcome.version)
        if event is not None:
            raise_event(event, self.catalogue, self.alerts)

    def _restore_gauges(self) -> None:
        """Gauges that alerts rely on start from the catalogue, so a restart does not read as 'never'."""
        assert self.catalogue is not None
        last = self.catalogue.query("SELECT MAX(catalogued_at) FROM images")[0][0]
        if last is not None:
            self.metrics.last_image_timestamp.set(last)

    def _observer_restarted(self, reason: str) -> None:
        self.metrics.observer_restarts.inc()

    def _enqueue(self, path: str) -> None:
        with self._in_flight_lock:
            if path in self._in_flight:
                return
            self._in_flight.add(path)
        self._queue.put((path, time.time()))

    def _ingest_worker(self) -> None:
        assert self.ingestor is not None
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            path, completed_at = item
            try:
                self.ingestor.ingest(Path(path), completed_at=completed_at)
            except Exception:  # a programming error: log it loudly, keep the service up
                log.exception("ingest of %s failed unexpectedly", path)
            finally:
                with self._in_flight_lock:
                    self._in_flight.discard(path)

    def _wait_for_idle(self, timeout: float = 3600.0) -> None:
        """At start-up, let the scan's old files through ingest before declaring readiness."""
        deadline = time.monotonic() + timeout
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            for path in self.tracker.due():
                self._enqueue(path)
            self.keepalive.tick()  # the watchdog may be armed before READY
            with self._in_flight_lock:
                busy = bool(self._in_flight)
            if not busy and self._queue.empty():
                return
            self.stop_event.wait(0.05)

    def idle(self) -> bool:
        """True when no file is settling, queued for ingest, being preprocessed or waiting to be classified."""
        with self._in_flight_lock:
            busy = bool(self._in_flight)
        return (not busy and len(self.tracker) == 0 and self._queue.empty()
                and (self.preprocess is None or self.preprocess.idle())
                and (self.classify is None or self.classify.idle()))

    def status_summary(self) -> dict[str, Any]:
        from xtalwatch.observe.status import collect_status

        return collect_status(self.settings.state.dir)
