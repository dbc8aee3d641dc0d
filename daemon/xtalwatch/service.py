"""The one object that owns the service's life cycle.

``Service.start()`` builds the chain of stages (``stages/pipeline.py``) and starts it in
data-flow order: the classify worker, preprocessing of what the last run left, the retraining
schedule, the web server, the ingest workers, the observer, then the start-up scan, whose files
are catalogued before the service reports ready. ``run()`` then loops: hand settled files to
ingest, supervise the observer, rescan on schedule, pick up a new model, and every 30 s run
the periodic checks. Every sleep is a wait on the stop event, so SIGTERM ends the loop at once;
``shutdown()`` then stops the stages in order, and files still in the ingest queue are
finished within ``service.shutdown_timeout_seconds`` (anything left is picked up again by the
next start-up scan, so nothing is lost either way). A second signal exits at once.

The stages own their queues and the scheduler its policies; data flows from stage to stage
without coming back through here.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from xtalwatch.alerts.checks import HealthChecks
from xtalwatch.config import Settings
from xtalwatch.learn.scheduler import RetrainScheduler
from xtalwatch.learn.training_metrics import TrainingMetrics
from xtalwatch.observe import sdnotify
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.web import WebServer, build_app
from xtalwatch.stages.classify import ClassifyStage
from xtalwatch.stages.ingest import IngestQueue, changed_ns
from xtalwatch.stages.pipeline import Pipeline, build_pipeline
from xtalwatch.stages.watch import FolderWatcher, SettleTracker, scan_folder
from xtalwatch.store.catalogue import Catalogue

__all__ = ["Service"]

log = logging.getLogger(__name__)

PERIODIC_CHECK_SECONDS = 30.0  # stalled imager, disk, training events, first training: none needs more often
TICK_SECONDS = 0.1  # the loop's wait: how soon a settled file is handed to ingest
STARTUP_SCAN_TIMEOUT_SECONDS = 3600.0  # a very large backlog is still taken before ready, up to this long


class Service:
    """Watch → settle → ingest → preprocess → classify → hits, with metrics, until asked to stop."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        if settings.watch.dir is None:
            raise ValueError("watch.dir is not set: pass --watch DIR or set it in the config")
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.tracker = SettleTracker(settings.watch.settle_seconds)
        self.pipeline: Pipeline | None = None
        self.ingest: IngestQueue | None = None
        self.watcher: FolderWatcher | None = None
        self.scheduler: RetrainScheduler | None = None
        self.training: TrainingMetrics | None = None
        self.health: HealthChecks | None = None
        self.web: WebServer | None = None
        self.keepalive = sdnotify.KeepAlive()
        self._next_checks = 0.0
        self._signals = 0

    @property
    def catalogue(self) -> Catalogue | None:
        return self.pipeline.catalogue if self.pipeline is not None else None

    @property
    def classify(self) -> ClassifyStage | None:
        return self.pipeline.classify if self.pipeline is not None else None

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        self.pipeline = pipeline = build_pipeline(settings, self.metrics)
        assert pipeline.classify is not None and pipeline.preprocess is not None
        pipeline.ingestor.restore_gauges()
        self.training = TrainingMetrics(pipeline.catalogue, self.metrics)
        self.training.restore()
        self.health = HealthChecks(settings.state.dir, pipeline.catalogue, self.metrics, pipeline.alerts,
                                   settings.alerts)
        pipeline.classify.start()
        pipeline.preprocess.resume()
        self.scheduler = RetrainScheduler(settings)
        self.scheduler.start()
        if settings.metrics.enabled:
            self.web = WebServer(build_app(self.metrics, self.status_summary), settings.metrics.host,
                                 settings.metrics.port)
            self.web.start()
        self.ingest = IngestQueue(pipeline.ingestor, settings.ingest.queue_size, self.metrics)
        self.ingest.start()
        self.watcher = FolderWatcher(settings.watch, self.tracker, self._observer_restarted)
        # Start the observer before the scan so that nothing written during the scan is missed;
        # a file seen by both is settled once and catalogued once.
        self.watcher.start()
        self.rescan()
        self._take_startup_scan()
        self.ready.set()
        log.info("ready: start-up scan done, %d files pending", len(self.tracker))
        sdnotify.ready(f"watching {settings.watch.dir}")

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
                self.stop_event.wait(TICK_SECONDS)
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
        """Stop taking files, finish the ingest queue within the timeout, then stop the rest in flow order."""
        if self.watcher is not None:
            self.watcher.stop()
        deadline = time.monotonic() + self.settings.service.shutdown_timeout_seconds
        busy = self.ingest.stop(deadline) if self.ingest is not None else 0
        pipeline = self.pipeline
        if pipeline is not None and pipeline.preprocess is not None:
            pipeline.preprocess.shutdown()
        if pipeline is not None and pipeline.classify is not None:
            pipeline.classify.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown(timeout=max(1.0, deadline - time.monotonic()))
        if pipeline is not None and pipeline.alerts is not None:
            pipeline.alerts.close(timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        if self.web is not None:
            self.web.stop()
        if pipeline is not None and not busy:  # a busy ingest worker may still write
            pipeline.catalogue.close()
        log.info("stopped")

    # -- the loop's work -------------------------------------------------------------
    def tick(self) -> None:
        assert self.watcher is not None
        self._hand_over_settled()
        if self.watcher.supervise():
            self.rescan()
        classify = self.classify
        if classify is not None and classify.refresh_model():
            classify.backfill()
        if time.monotonic() >= self._next_checks:
            self._next_checks = time.monotonic() + PERIODIC_CHECK_SECONDS
            self._periodic_checks()
        self.metrics.queue_depth.labels(stage="settle").set(len(self.tracker))
        self.keepalive.tick()

    def rescan(self) -> None:
        """Reconcile the folder with the catalogue: note every file not yet catalogued as it is now."""
        catalogue = self.catalogue
        assert catalogue is not None and self.settings.watch.dir is not None
        noted = 0
        for path in scan_folder(self.settings.watch.dir, self.settings.watch.ignore_globs):
            key = os.path.abspath(path)
            try:
                st = os.stat(path)
                if catalogue.is_settled(key, st.st_size, changed_ns(st)):
                    continue
            except OSError:
                pass  # a loop or an unreadable entry: ingest will say why
            self.tracker.note(key)
            noted += 1
        self.metrics.rescans.inc()
        if noted:
            log.info("scan of %s found %d files to take", self.settings.watch.dir, noted)

    def _hand_over_settled(self) -> None:
        assert self.ingest is not None
        for path in self.tracker.due():
            self.ingest.submit(path)

    def _periodic_checks(self) -> None:
        """Disk, imager stalled, training runs recorded by any process, and the first training when due."""
        assert self.health is not None and self.training is not None and self.scheduler is not None
        self.metrics.observe_disk(self.settings.state.dir)
        try:
            self.health.run()
        except Exception:
            log.exception("health checks failed")
        try:
            self.training.update()
        except Exception:
            log.exception("reading training events failed")
        self.scheduler.check_first_training(model_serving=self.classify is not None
                                            and self.classify.version is not None)

    def _take_startup_scan(self) -> None:
        """At start-up, let the scan's old files through ingest before declaring readiness."""
        assert self.ingest is not None
        deadline = time.monotonic() + STARTUP_SCAN_TIMEOUT_SECONDS
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            self._hand_over_settled()
            self.keepalive.tick()  # the watchdog may be armed before READY
            if self.ingest.idle():
                return
            self.stop_event.wait(0.05)

    def _observer_restarted(self, reason: str) -> None:
        self.metrics.observer_restarts.inc()

    def idle(self) -> bool:
        """True when no file is settling, queued for ingest, being preprocessed or waiting to be classified."""
        pipeline = self.pipeline
        return (len(self.tracker) == 0 and (self.ingest is None or self.ingest.idle())
                and (pipeline is None or pipeline.preprocess is None or pipeline.preprocess.idle())
                and (pipeline is None or pipeline.classify is None or pipeline.classify.idle()))

    def status_summary(self) -> dict[str, Any]:
        from xtalwatch.observe.status import collect_status

        return collect_status(self.settings.state.dir)
