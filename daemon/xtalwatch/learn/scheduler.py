"""When retraining runs: an APScheduler 3.x job that starts the training child process, and the
policy for the first training.

One :class:`RetrainScheduler` owns the ``BackgroundScheduler``. Its single job has a fixed id
(``xtalwatch-retrain``), ``max_instances=1`` (a trigger while a run is going is skipped, never
a second child), ``coalesce=True`` (runs missed while the service was down collapse into one)
and a misfire grace of ``retrain.misfire_grace_hours``. The trigger is the cron line
``retrain.schedule`` (nightly 02:00 in the host's local zone) or, when ``retrain.interval_hours``
is set, an interval. A job store is not needed: the stable id plus coalescing is what makes a
restart harmless, and the catalogue, not the scheduler, remembers what was trained on.

The job runs ``python -m xtalwatch.learn.retrain`` in a new process, ``nice``d by ``retrain.nice``:
training competes with ingest only for idle CPU, and all of its GPU memory is returned when it
exits. The child dies with the service (``--die-with-parent``: SIGKILL from the kernel when the
service dies, even by kill -9, as systemd's ``KillMode=control-group`` would do anyway), and a
run killed that way is finished at the next start (:meth:`RetrainScheduler.start` runs
``retrain/interrupted.py`` under the training lock): its outcome recorded, its checkpoint removed,
its log kept. The child records its own outcome (an event in the catalogue, and its alert), as every
run does wherever it runs; the scheduler reads the child's result only for its log line and
``last_outcome``, and records a failure itself only when the child could not (killed, or past
``retrain.timeout_hours``). Nothing is handed back to the service: a promoted model moves the
registry's ``current``, which the classify stage notices and loads.

On a site (``catalogue.url`` is PostgreSQL) every host with ``retrain.enabled`` runs the same
schedule, and each scheduled fire first claims its slot (the trigger's latest fire time, the same
on every host whatever its clock's jitter or a misfire's delay) in ``retrain_slots``: the first host
trains, the others log who has it and skip. A run started by hand claims no slot; the site's
training lock (``retrain/lock.py``) still keeps it from overlapping another host's run.

Before any model serves, :meth:`RetrainScheduler.check_first_training` (called on the service's
periodic checks) starts the first training once ``train.min_images`` usable images exist, and
tries a failed or rejected first training again after ``FIRST_TRAINING_RETRY_SECONDS``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from xtalwatch.config import RetrainConfig, Settings
from xtalwatch.learn.retrain import TRAINING_DIR, RetrainOutcome, count_usable
from xtalwatch.learn.retrain.announce import record_outcome
from xtalwatch.learn.retrain.interrupted import finish_interrupted
from xtalwatch.learn.retrain.lock import Busy, training_lock

__all__ = ["JOB_ID", "FIRST_TRAINING_RETRY_SECONDS", "RetrainScheduler", "build_trigger", "first_training_due",
           "local_zone"]

log = logging.getLogger(__name__)

JOB_ID = "xtalwatch-retrain"
CHILD_LOG = "child.log"
# A first training that failed (or was rejected) is tried again after this long, not on every check.
FIRST_TRAINING_RETRY_SECONDS = 3600.0


def local_zone() -> Any:
    """The host's time zone, as APScheduler uses it by default."""
    from tzlocal import get_localzone

    return get_localzone()


def build_trigger(cfg: RetrainConfig, timezone: Any = None) -> BaseTrigger:
    """The cron trigger of ``cfg.schedule`` in the local zone, or an interval of ``cfg.interval_hours``."""
    zone = timezone or local_zone()
    if cfg.interval_hours is not None:
        return IntervalTrigger(hours=cfg.interval_hours, timezone=zone)
    return CronTrigger.from_crontab(cfg.schedule, timezone=zone)


def scheduled_slot(trigger: BaseTrigger, now: datetime) -> str:
    """The slot a fire at ``now`` belongs to: the trigger's latest fire time at or before ``now``.

    An interval's start differs between hosts, so its slot is the interval's ordinal since the epoch.
    """
    if isinstance(trigger, IntervalTrigger):
        seconds = trigger.interval.total_seconds()
        return f"every-{seconds:g}s-{int(now.timestamp() // seconds)}"
    for lookback in (timedelta(minutes=1), timedelta(hours=1), timedelta(days=1), timedelta(days=32)):
        fire = trigger.get_next_fire_time(None, now - lookback)
        latest = None
        while fire is not None and fire <= now:
            latest = fire
            fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
        if latest is not None:
            return latest.isoformat(timespec="seconds")
    return now.isoformat(timespec="seconds")


def first_training_due(usable_images: int, min_images: int) -> bool:
    """Before any model exists: enough usable images for the first training?"""
    return usable_images >= min_images


class RetrainScheduler:
    """The retraining schedule and the one training child it may have running."""

    def __init__(self, settings: Settings, *, trigger: BaseTrigger | None = None, timezone: Any = None):
        """``trigger`` replaces the one ``settings.retrain`` describes (tests use a short interval)."""
        self.settings = settings
        self.timezone = timezone or local_zone()
        self.trigger = trigger or build_trigger(settings.retrain, self.timezone)
        self.children_started = 0
        self.skipped_while_running = 0  # triggers that found a run going (max_instances at work)
        self.last_outcome: RetrainOutcome | None = None
        self._first_training_asked = False
        self._manual = False  # the next run was asked for by hand (trigger_now): it claims no slot
        self.slots_lost = 0  # scheduled fires another host of the site took
        self._child: subprocess.Popen[bytes] | None = None
        self._child_lock = threading.Lock()
        self._stopping = threading.Event()
        self._scheduler = BackgroundScheduler(
            timezone=self.timezone, executors={"default": ThreadPoolExecutor(max_workers=2)})
        self._scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Finish runs a killed service left behind, then schedule the job."""
        try:
            with training_lock(self.settings.state.dir):
                finish_interrupted(self.settings)
        except Busy:
            log.info("a training run is in progress; it will finish what killed runs left")
        cfg = self.settings.retrain
        kwargs: dict[str, Any] = {}
        if not cfg.enabled:
            kwargs["next_run_time"] = None  # added paused: only trigger_now() runs it
        self._scheduler.add_job(
            self._run_job, self.trigger, id=JOB_ID, name="retrain", replace_existing=True, max_instances=1,
            coalesce=True, misfire_grace_time=int(cfg.misfire_grace_hours * 3600), **kwargs)
        self._scheduler.start()
        log.info("retraining %s; next run %s", "scheduled" if cfg.enabled else "only on request",
                 self.next_run_time or "when triggered")

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop scheduling and end a running child (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        self._stopping.set()
        self._scheduler.shutdown(wait=False)
        with self._child_lock:
            child = self._child
        if child is not None and child.poll() is None:
            log.info("stopping the training child (pid %d)", child.pid)
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    # -- state ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while a training child is alive."""
        with self._child_lock:
            return self._child is not None

    @property
    def next_run_time(self) -> datetime | None:
        job = self._scheduler.get_job(JOB_ID)
        return job.next_run_time if job is not None else None

    def trigger_now(self) -> bool:
        """Run the job as soon as possible; False (and nothing happens) when a run is already going."""
        if self.running:
            return False
        self._manual = True
        self._scheduler.modify_job(JOB_ID, next_run_time=datetime.now(self.timezone))
        return True

    def check_first_training(self, model_serving: bool) -> bool:
        """Before any model serves, start the first training once enough usable images exist.

        Args:
            model_serving: whether the classify stage has a model now (then there is nothing to do).

        Returns True when a first training was started by this call. With
        ``retrain.auto_first_training`` off it never starts one.
        """
        last = self.last_outcome
        if (self._first_training_asked and not self.running and last is not None
                and last.status in ("failed", "rejected") and time.time() - last.started_at > FIRST_TRAINING_RETRY_SECONDS):
            self._first_training_asked = False  # the first training failed an hour ago: try again
        if (model_serving or not self.settings.retrain.auto_first_training or self._first_training_asked
                or self.running):
            return False
        usable = count_usable(self.settings)
        if not first_training_due(usable, self.settings.train.min_images):
            return False
        log.info("%d usable images (train.min_images %d): starting the first training",
                 usable, self.settings.train.min_images)
        self._first_training_asked = self.trigger_now()
        return self._first_training_asked

    def _on_max_instances(self, event: JobEvent) -> None:
        self.skipped_while_running += 1
        log.info("retraining already running; this trigger is skipped")

    # -- the job ----------------------------------------------------------------------------
    def _run_job(self) -> None:
        manual, self._manual = self._manual, False
        if not self.settings.retrain.enabled:
            self._scheduler.pause_job(JOB_ID)  # a manual run must not resume the schedule
        if not manual and self.settings.catalogue.url is not None and not self._won_slot():
            return
        outcome, recorded = self._run_child()
        if not recorded:
            # The child ended without a result (killed, out of memory, past the time limit), so it
            # could not record its outcome: record it here, the same way a run records its own
            # (a skipped run records nothing).
            record_outcome(self.settings, outcome)
        self.last_outcome = outcome
        log.info("retraining finished: %s", outcome.summary())

    def _won_slot(self) -> bool:
        """On a site: claim this fire's slot; False (logged, and nothing runs) when another host has it."""
        from xtalwatch.store.catalogue import Catalogue
        from xtalwatch.store.work import claim_retrain_slot

        slot = scheduled_slot(self.trigger, datetime.now(self.timezone))
        me = f"{socket.gethostname()}-{self.settings.site.imager}#{os.getpid()}"
        catalogue = Catalogue.for_settings(self.settings)
        try:
            holder = claim_retrain_slot(catalogue, slot, me)
        finally:
            catalogue.close()
        if holder is None:
            log.info("retraining slot %s is this host's (%s)", slot, me)
            return True
        self.slots_lost += 1
        self.last_outcome = RetrainOutcome("skipped", f"slot {slot} is trained by {holder}", started_at=time.time())
        log.info("retraining slot %s is taken by %s: not training on this host", slot, holder)
        return False

    def _run_child(self) -> tuple[RetrainOutcome, bool]:
        """Run one training child; returns the outcome and whether the child recorded it itself."""
        folder = self.settings.state.dir / TRAINING_DIR
        folder.mkdir(parents=True, exist_ok=True)
        token = f"{os.getpid()}-{self.children_started}"
        settings_file, result_file = folder / f".settings-{token}.json", folder / f".result-{token}.json"
        # Owner-only: the settings may hold alert-sink credentials.
        fd = os.open(settings_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.settings.model_dump_json())
        cmd = [sys.executable, "-m", "xtalwatch.learn.retrain", "--settings-json", str(settings_file),
               "--result", str(result_file), "--nice", str(self.settings.retrain.nice),
               "--die-with-parent", str(os.getpid())]
        started = datetime.now().timestamp()
        try:
            with open(folder / CHILD_LOG, "ab") as child_log:
                with self._child_lock:
                    if self._stopping.is_set():
                        return RetrainOutcome("skipped", "the service is stopping", started_at=started), False
                    self._child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=child_log,
                                                   stderr=subprocess.STDOUT, start_new_session=True)
                    self.children_started += 1
                    log.info("training child started (pid %d, nice +%d)", self._child.pid, self.settings.retrain.nice)
                try:
                    code = self._child.wait(self.settings.retrain.timeout_hours * 3600)
                except subprocess.TimeoutExpired:
                    self._child.kill()
                    self._child.wait()
                    return RetrainOutcome("failed", f"training ran past retrain.timeout_hours "
                                                    f"({self.settings.retrain.timeout_hours:g} h) and was stopped",
                                          started_at=started, seconds=time.time() - started), False
            return self._read_outcome(result_file, code, folder / CHILD_LOG, started)
        finally:
            with self._child_lock:
                self._child = None
            settings_file.unlink(missing_ok=True)
            result_file.unlink(missing_ok=True)

    def _read_outcome(self, result_file: Path, code: int, child_log: Path,
                      started: float) -> tuple[RetrainOutcome, bool]:
        try:
            return RetrainOutcome.from_dict(json.loads(result_file.read_text(encoding="utf-8"))), True
        except (OSError, ValueError, TypeError):
            why = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            if self._stopping.is_set():
                why += " while the service was stopping"
            return RetrainOutcome("failed", f"training child {why} without a result; see {child_log}",
                                  started_at=started, seconds=time.time() - started, log_path=str(child_log)), False
