"""The one object that owns the service's life cycle.

``Service.start()`` builds the chain of stages (``stages/pipeline.py``) and starts it in
data-flow order: the classify worker, preprocessing of what the last run left (on a site, where
other agents write too, the site agent's first claim instead: ``stages/claims.py``), the retraining
schedule, the web server, the ingest workers, the observer, then the start-up scan, whose files
are catalogued before the service reports ready. ``run()`` then loops: hand settled files to
ingest, supervise the observer, rescan on schedule, pick up a new model, and every 30 s run
the periodic checks. Every sleep is a wait on the stop event, so SIGTERM ends the loop at once;
``shutdown()`` then stops the stages in order, and files still in the ingest queue are
finished within ``service.shutdown_timeout_seconds`` (anything left is picked up again by the
next start-up scan, so nothing is lost either way). A second signal forces the exit as uvicorn
does: the shutdown stops waiting for work in flight, still closes the catalogue, and ``run()``
returns 1; the signal handlers are restored once the loop has ended.

A full state disk (``SQLITE_FULL``, ``ENOSPC``) pauses ingest with one warning and one alert;
the loop checks every second for room, checkpoints the WAL, and resumes by itself, rescanning
for the files that waited. ``health_problems()`` says what ``/healthz`` reports.

The stages own their queues and the scheduler its policies; data flows from stage to stage
without coming back through here.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from xtalwatch.alerts.checks import HealthChecks
from xtalwatch.config import Settings
from xtalwatch.learn.scheduler import RetrainScheduler
from xtalwatch.learn.training_metrics import TrainingMetrics
from xtalwatch.observe import sdnotify
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.web import WebServer, build_app
from xtalwatch.stages.claims import SiteAgent
from xtalwatch.stages.classify import ClassifyStage
from xtalwatch.stages.ingest import MAX_INGEST_THREADS, IngestQueue, changed_ns
from xtalwatch.stages.pipeline import Pipeline, build_pipeline
from xtalwatch.stages.watch import FolderWatcher, SettleTracker, scan_folder
from xtalwatch.store.backup import BackupSchedule
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.lock import StateLock, hold_state_lock
from xtalwatch.store.maintenance import checkpoint, has_room, is_disk_full
from xtalwatch.store.paths import shown

if TYPE_CHECKING:  # both load torch: imported in start(), once the signal handlers are in place
    from xtalwatch.learn.refit import HeadRefitter

__all__ = ["Service"]

log = logging.getLogger(__name__)

PERIODIC_CHECK_SECONDS = 30.0  # stalled imager, disk, training events, first training: none needs more often
TICK_SECONDS = 0.1  # the loop's wait: how soon a settled file is handed to ingest
STARTUP_SCAN_TIMEOUT_SECONDS = 3600.0  # a very large backlog is still taken before ready, up to this long
LOOP_STUCK_SECONDS = 60.0  # a tick (periodic checks included) takes well under this; longer and /healthz says stuck
DISK_RETRY_SECONDS = 1.0  # while ingest waits on a full disk, how often to look for room again
CHECKPOINT_SECONDS = 300.0  # WAL checkpoint(TRUNCATE) this often, so the log's space comes back on a small disk
FEATURES_SAVE_SECONDS = 600.0  # the feature cache is written this often (and at shutdown), when it changed


class Service:
    """Watch → settle → ingest → preprocess → classify → hits, with metrics, until asked to stop."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        if settings.watch.dir is None:
            raise ValueError("watch.dir is not set: pass --watch DIR or set it in the config")
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics(imager=settings.site.imager)
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
        self.refitter: HeadRefitter | None = None  # re-fits the head from the review app's labels
        self.state_lock: StateLock | None = None  # held while running: `catalogue restore` waits for it
        self.backups: BackupSchedule | None = None
        self.site_agent: SiteAgent | None = None  # on a site (PostgreSQL): this agent's lease and takeovers
        self.keepalive = sdnotify.KeepAlive()
        self._next_checks = 0.0
        self._signals = 0
        self.force_exit = threading.Event()  # a second signal: stop waiting for work in flight
        self._last_tick = time.monotonic()
        self._disk_lock = threading.Lock()
        self._disk_full = False  # ingest paused until the state disk has room
        self._disk_warned = False  # one warning per full-disk episode
        self._next_space_check = 0.0
        self._next_checkpoint = 0.0
        self._next_features_save = time.monotonic() + FEATURES_SAVE_SECONDS

    @property
    def catalogue(self) -> Catalogue | None:
        return self.pipeline.catalogue if self.pipeline is not None else None

    @property
    def classify(self) -> ClassifyStage | None:
        return self.pipeline.classify if self.pipeline is not None else None

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        self.state_lock = hold_state_lock(settings.state.dir)
        # A site's PostgreSQL is backed up by PostgreSQL's own tools (docs/deploy.md), not by copying a file.
        self.backups = BackupSchedule(settings.state.dir, settings.catalogue) if settings.catalogue.url is None else None
        if settings.site.models_dir is not None:
            from xtalwatch.learn.registry import link_shared_registry

            link_shared_registry(settings.state.dir, settings.site.models_dir)
        self.pipeline = pipeline = build_pipeline(settings, self.metrics, on_disk_full=self._on_disk_full)
        assert pipeline.classify is not None and pipeline.preprocess is not None
        pipeline.ingestor.restore_gauges()
        self.training = TrainingMetrics(pipeline.catalogue, self.metrics)
        self.training.restore()
        self.health = HealthChecks(settings.state.dir, pipeline.catalogue, self.metrics, pipeline.alerts,
                                   settings.alerts)
        if pipeline.catalogue.dialect == "postgresql":  # other agents write too: take only unclaimed or abandoned work
            self.site_agent = SiteAgent(settings.site, pipeline.catalogue, pipeline.preprocess, pipeline.classify,
                                        self.metrics)
            self.site_agent.register()
        pipeline.classify.start()
        if self.site_agent is not None:
            self.site_agent.start()
        else:
            pipeline.preprocess.resume()
        self.scheduler = RetrainScheduler(settings)
        self.scheduler.start()
        from xtalwatch.learn.refit import HeadRefitter

        self.refitter = HeadRefitter(settings, pipeline.catalogue, pipeline.features)
        self.refitter.start()
        if settings.metrics.enabled:
            self._start_web(pipeline)
        # On PostgreSQL each catalogue write waits on the network, and writers do not exclude each other:
        # more threads overlap the round trips. SQLite's one writer gains nothing from more than the cores.
        threads = MAX_INGEST_THREADS if pipeline.catalogue.dialect == "postgresql" else None
        self.ingest = IngestQueue(pipeline.ingestor, settings.ingest.queue_size, self.metrics, threads,
                                  on_disk_full=self._on_disk_full)
        self.ingest.start()
        self.watcher = FolderWatcher(settings.watch, self.tracker, self._observer_restarted)
        # Start the observer before the scan so that nothing written during the scan is missed;
        # a file seen by both is settled once and catalogued once.
        self.watcher.start()
        self.rescan()
        self._take_startup_scan()
        # What exists now (modules, torch, the model, the stages) lives as long as the service: keep it out
        # of the cyclic collector's full passes, which otherwise walk it all and stall a page for ~0.3 s.
        gc.freeze()
        self._last_tick = time.monotonic()
        self.ready.set()
        log.info("ready: start-up scan done, %d files pending", len(self.tracker))
        sdnotify.ready(f"watching {settings.watch.dir}")

    def _start_web(self, pipeline: Pipeline) -> None:
        """Serve /metrics, /healthz, /api/status and the review app; hit alerts link to its plate pages."""
        from xtalwatch.review.app import ReviewContext

        settings = self.settings
        classify = pipeline.classify
        review = ReviewContext(settings=settings, state_dir=settings.state.dir, catalogue=pipeline.catalogue,
                               features=pipeline.features, refitter=self.refitter,
                               serving_version=lambda: classify.version if classify is not None else None,
                               health=self.health_problems, metrics=self.metrics, bound_host=settings.metrics.host)
        self.web = WebServer(build_app(self.metrics, self.status_summary, self.health_problems,
                                       settings.metrics.api_token, review=review),
                             settings.metrics.host, settings.metrics.port)
        self.web.start()
        base = (settings.web.public_url or self.web.url).rstrip("/")
        if pipeline.hits is not None:
            pipeline.hits.link_base = base
        # The base URL alone: log lines redact every URL's path (a webhook's path can hold its secret).
        log.info("review app: open %s in a browser (plates, wells, hits, models; the review queue at /review)", base)

    def run(self) -> int:
        """Run until SIGTERM/SIGINT or ``request_stop()``; returns the exit status (1 after a forced exit)."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
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
            try:
                self.shutdown()
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        return 1 if self.force_exit.is_set() else 0

    def request_stop(self) -> None:
        self.stop_event.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            # As uvicorn: no os._exit, which would skip closing the catalogue; the shutdown stops waiting instead.
            log.warning("second %s: forcing the exit; work in flight is abandoned (taken again at the next start)",
                        signal.Signals(signum).name)
            self.force_exit.set()
            self.stop_event.set()
            return
        log.info("%s: stopping (send again to force)", signal.Signals(signum).name)
        sdnotify.stopping()
        self.stop_event.set()

    def shutdown(self) -> None:
        """Stop taking files, finish the ingest queue within the timeout, then stop the rest in flow order."""
        if self.watcher is not None:
            self.watcher.stop()
        deadline = time.monotonic() + self.settings.service.shutdown_timeout_seconds
        busy = self.ingest.stop(deadline, abandon=self.force_exit) if self.ingest is not None else 0
        pipeline = self.pipeline
        if pipeline is not None and pipeline.preprocess is not None:
            pipeline.preprocess.shutdown()
        if pipeline is not None and pipeline.classify is not None:
            pipeline.classify.stop()
        if self.site_agent is not None:
            self.site_agent.stop()
        if self.refitter is not None:
            self.refitter.stop()
        if pipeline is not None:
            self._save_features(pipeline)
        if self.scheduler is not None:
            self.scheduler.shutdown(timeout=0.1 if self.force_exit.is_set() else max(1.0, deadline - time.monotonic()))
        if pipeline is not None and pipeline.alerts is not None:
            pipeline.alerts.close(timeout=max(1.0, min(10.0, deadline - time.monotonic())), abandon=self.force_exit)
        if self.web is not None:
            self.web.stop()
        # A busy ingest worker may still write: leave the catalogue to it (SQLite's WAL keeps it whole
        # at exit), unless the exit is forced, where close() waits for the write in progress.
        if pipeline is not None and (not busy or self.force_exit.is_set()):
            pipeline.catalogue.close()
        if self.state_lock is not None:
            self.state_lock.release()
        if pipeline is not None:  # a start refused on its first step has nothing to report stopped
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
        if self._disk_full:
            self._resume_when_room()
        self.metrics.queue_depth.labels(stage="settle").set(len(self.tracker))
        # The watchdog ping comes only from this loop (and the start-up scan before it): a stuck
        # loop stops the pings, and systemd restarts the service.
        self._last_tick = time.monotonic()
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
            log.info("scan of %s found %d files to take", shown(str(self.settings.watch.dir)), noted)

    def _hand_over_settled(self) -> None:
        assert self.ingest is not None
        for path in self.tracker.due():
            self.ingest.submit(path)

    def _periodic_checks(self) -> None:
        """Disk, imager stalled, training runs recorded by any process, and the first training when due."""
        assert self.health is not None and self.training is not None and self.scheduler is not None
        self.metrics.observe_disk(self.settings.state.dir)
        if not has_room(self.settings.state.dir):
            self._on_disk_full("free space check", OSError(28, "no space left on the state disk"))
        elif not self._disk_full:
            self._disk_warned = False  # the episode is over: a new one warns again
            self._checkpoint_now_and_then()
            if self.pipeline is not None and time.monotonic() >= self._next_features_save:
                self._next_features_save = time.monotonic() + FEATURES_SAVE_SECONDS
                self._save_features(self.pipeline)
            if self.backups is not None:
                self.backups.maybe_run()
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

    # -- a full state disk ------------------------------------------------------------
    def _on_disk_full(self, where: str, exc: BaseException) -> None:
        """Pause ingest, warn once, alert first (any thread: an ingest worker, or the loop)."""
        with self._disk_lock:
            if self._disk_full:
                return
            self._disk_full, warn, self._disk_warned = True, not self._disk_warned, True
        if self.ingest is not None:
            self.ingest.pause()
        self.metrics.ingest_paused.set(1)
        self._next_space_check = time.monotonic() + DISK_RETRY_SECONDS
        log.log(logging.WARNING if warn else logging.DEBUG,
                "state disk full at %s (%s: %s): ingest paused; new files wait in %s, untouched, and are taken "
                "when space returns", self.settings.state.dir, where, " ".join(str(exc).split()),
                self.settings.watch.dir)
        if self.health is not None:
            try:
                self.health.disk_full(f"{where}: {exc}")
            except Exception as error:  # the alert is already queued; only storing the event failed
                log.warning("disk-full event not stored: %s: %s", type(error).__name__, error)

    def _resume_when_room(self) -> None:
        """Once a second while paused: room again, and the WAL checkpointed? Then resume and retake what waited."""
        now = time.monotonic()
        if now < self._next_space_check:
            return
        self._next_space_check = now + DISK_RETRY_SECONDS
        catalogue = self.catalogue
        if catalogue is None or not has_room(self.settings.state.dir):
            return
        try:
            checkpoint(catalogue)
        except Exception as exc:
            if not is_disk_full(exc):
                log.warning("WAL checkpoint failed: %s: %s", type(exc).__name__, exc)
            return
        with self._disk_lock:
            self._disk_full = False
        if self.ingest is not None:
            self.ingest.resume()
        self.metrics.ingest_paused.set(0)
        log.info("state disk at %s has room again: ingest resumed", self.settings.state.dir)
        pipeline = self.pipeline
        try:
            if self.health is not None:
                self.health.store_held()
            self.rescan()  # the files let go while paused
            if pipeline is not None and pipeline.preprocess is not None:
                pipeline.preprocess.resume()  # catalogued images whose preprocessing did not get stored
            if pipeline is not None and pipeline.classify is not None:
                pipeline.classify.backfill()
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self._on_disk_full("resume", exc)

    def _save_features(self, pipeline: Pipeline) -> None:
        """Keep the cached encoder features across a restart; a failure only costs embedding them again."""
        try:
            pipeline.features.save()
        except Exception as exc:
            if is_disk_full(exc):
                self._on_disk_full("feature cache", exc)
            else:
                log.warning("feature cache not saved: %s: %s", type(exc).__name__, exc)

    def _checkpoint_now_and_then(self) -> None:
        now = time.monotonic()
        catalogue = self.catalogue
        if catalogue is None or now < self._next_checkpoint:
            return
        self._next_checkpoint = now + CHECKPOINT_SECONDS
        try:
            busy, _, _ = checkpoint(catalogue)
        except Exception as exc:
            if is_disk_full(exc):
                self._on_disk_full("WAL checkpoint", exc)
            else:
                log.warning("WAL checkpoint failed: %s: %s", type(exc).__name__, exc)
            return
        if busy:
            log.debug("WAL checkpoint held back by a reader; trying again in %.0f s", CHECKPOINT_SECONDS)

    # -- health -----------------------------------------------------------------------
    def health_problems(self) -> list[str]:
        """Why the service is not working now (empty: it is); read by ``/healthz`` on the web thread."""
        problems: list[str] = []
        if not self.ready.is_set():
            problems.append("starting: the start-up scan is not finished")
        else:
            age = time.monotonic() - self._last_tick
            if age > LOOP_STUCK_SECONDS:
                problems.append(f"loop: the main loop last ticked {age:.0f} s ago (stuck)")
            watcher = self.watcher
            if watcher is not None and not watcher.healthy():
                problems.append(f"observer: not watching {self.settings.watch.dir} (the observer stopped or the "
                                "folder is gone)")
        if self.ingest is not None:
            alive, started = self.ingest.alive()
            if alive < started:
                problems.append(f"ingest: {started - alive} of {started} ingest workers have died")
        if self._disk_full:
            problems.append(f"disk: the state disk at {self.settings.state.dir} is full; ingest is paused until "
                            "space returns")
        catalogue = self.catalogue
        if catalogue is not None and catalogue.path is not None and not os.access(catalogue.path, os.W_OK):
            problems.append(f"catalogue: {catalogue.path} is not writable")
        return problems

    def _observer_restarted(self, reason: str) -> None:
        """The watcher calls this once per outage, when its observer is back (not per failed retry)."""
        self.metrics.observer_restarts.inc()

    def idle(self) -> bool:
        """True when no file is settling, queued for ingest, being preprocessed or waiting to be classified."""
        pipeline = self.pipeline
        return (len(self.tracker) == 0 and (self.ingest is None or self.ingest.idle())
                and (pipeline is None or pipeline.preprocess is None or pipeline.preprocess.idle())
                and (pipeline is None or pipeline.classify is None or pipeline.classify.idle()))

    def status_summary(self) -> dict[str, Any]:
        from xtalwatch.observe.status import collect_status

        return collect_status(self.settings)
