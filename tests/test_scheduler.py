"""The retraining schedule: cron default, stable job, one child at a time, nice'd, end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from conftest import wait_for
from retrain_helpers import make_state, tiny_settings
from xtalwatch.alerts.events import TRAINING_FAILED, recent_events
from xtalwatch.config import RetrainConfig
from xtalwatch.learn.registry import ModelRegistry
from xtalwatch.learn.retrain import RetrainOutcome
from xtalwatch.learn.retrain.lock import Busy, training_lock
from xtalwatch.learn.scheduler import JOB_ID, RetrainScheduler, build_trigger, first_training_due, local_zone
from xtalwatch.store.catalogue import Catalogue


def test_default_is_nightly_at_two_in_the_local_zone() -> None:
    trigger = build_trigger(RetrainConfig())
    assert isinstance(trigger, CronTrigger) and trigger.timezone == local_zone()
    zone = local_zone()
    evening = datetime(2026, 3, 10, 21, 30, tzinfo=zone)
    nxt = trigger.get_next_fire_time(None, evening)
    assert (nxt.date(), nxt.hour, nxt.minute) == (evening.date() + timedelta(days=1), 2, 0)
    assert nxt.tzinfo is not None


def test_interval_and_custom_cron() -> None:
    assert isinstance(build_trigger(RetrainConfig(interval_hours=6)), IntervalTrigger)
    assert build_trigger(RetrainConfig(interval_hours=6)).interval == timedelta(hours=6)
    sunday = build_trigger(RetrainConfig(schedule="30 3 * * sun"))
    nxt = sunday.get_next_fire_time(None, datetime(2026, 3, 10, tzinfo=local_zone()))
    assert (nxt.weekday(), nxt.hour, nxt.minute) == (6, 3, 30)


def test_first_training_due() -> None:
    assert not first_training_due(499, 500) and first_training_due(500, 500)


def test_job_keeps_its_id_and_options_across_restarts(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path, **{"retrain.misfire_grace_hours": 3})
    for _ in range(2):  # as a restart would: a new scheduler, the same job
        sched = RetrainScheduler(settings)
        sched.start()
        try:
            job = sched._scheduler.get_job(JOB_ID)
            assert job.id == JOB_ID == "xtalwatch-retrain"
            assert (job.max_instances, job.coalesce, job.misfire_grace_time) == (1, True, 3 * 3600)
            assert sched.next_run_time is not None and sched.next_run_time.hour == 2
        finally:
            sched.shutdown()


def test_scheduled_child_trains_promotes_and_never_runs_twice(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_state(state, 45, labelled_per_class=8)
    done = threading.Event()
    # Fires every second; a run takes several, so most fires find it running.
    sched = RetrainScheduler(tiny_settings(state), trigger=IntervalTrigger(seconds=1))
    sched._scheduler.add_listener(lambda event: done.set(), EVENT_JOB_EXECUTED)  # the job (and its child) ended
    sched.start()
    try:
        wait_for(lambda: sched.running, timeout=10)
        assert not sched.trigger_now()  # a manual trigger during a run starts nothing either
        wait_for(lambda: sched.skipped_while_running >= 1, timeout=30)
        assert sched.children_started == 1
        assert done.wait(120), "the training child did not finish"
        assert sched.children_started == 1
        first = sched.last_outcome
    finally:
        sched.shutdown(timeout=10)
    assert first is not None
    assert first.status == "promoted", first.reason
    assert first.niceness == 10  # retrain.nice, applied in the child only
    assert ModelRegistry(state).current_version() == first.version
    rows = Catalogue(state).query("SELECT status FROM models WHERE version=?", (first.version,))
    assert rows[0]["status"] == "promoted"
    assert (state / "training" / "child.log").stat().st_size > 0


def test_manual_trigger_with_schedule_off_and_shutdown_stops_the_child(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_state(state, 45)
    sched = RetrainScheduler(tiny_settings(state, **{"retrain.enabled": False}))
    sched.start()
    try:
        assert sched.next_run_time is None  # off: nothing scheduled
        assert sched.trigger_now()
        wait_for(lambda: sched.running, timeout=10)
    finally:
        sched.shutdown(timeout=10)
    last: RetrainOutcome = wait_for(lambda: sched.last_outcome, timeout=10)
    assert not sched.running
    assert last.status == "failed" and "while the service was stopping" in last.reason
    # The child died without a result, so the scheduler recorded the failure, as a run records its own.
    catalogue = Catalogue(state)
    try:
        failed = recent_events(catalogue)
    finally:
        catalogue.close()
    assert [e.kind for e in failed] == [TRAINING_FAILED] and "while the service was stopping" in failed[0].payload["reason"]


def test_first_training_waits_for_enough_images_and_is_not_retried_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_state(state, 45)
    off = {"retrain.enabled": False, "retrain.auto_first_training": True}
    early = RetrainScheduler(tiny_settings(state, **off, **{"train.min_images": 50}))
    assert not early.check_first_training(model_serving=False)  # 45 usable images, 50 needed
    assert early.children_started == 0
    manual = RetrainScheduler(tiny_settings(state, **{**off, "retrain.auto_first_training": False}))
    assert not manual.check_first_training(model_serving=False)  # auto_first_training off: only on request

    sched = RetrainScheduler(tiny_settings(state, **off, **{"train.min_images": 40}))
    sched.start()
    try:
        assert not sched.check_first_training(model_serving=True)  # a model serves already
        assert sched.check_first_training(model_serving=False)
        wait_for(lambda: sched.running, timeout=10)
        assert not sched.check_first_training(model_serving=False)  # asked once, and running
    finally:
        sched.shutdown(timeout=10)
    last: RetrainOutcome = wait_for(lambda: sched.last_outcome, timeout=10)
    assert last.status == "failed"  # stopped with the scheduler
    assert not sched.check_first_training(model_serving=False)  # failed just now: retried after an hour, not now
    assert sched.children_started == 1


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit status may wait for a reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


# A service in a process of its own, with a training run going; it prints the child's pid.
SERVICE_WITH_A_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import wait_for
from retrain_helpers import tiny_settings
from xtalwatch.learn.scheduler import RetrainScheduler
sched = RetrainScheduler(tiny_settings(Path({state!r}), **{{"retrain.enabled": False, "train.max_steps": 100000}}))
sched.start()
sched.trigger_now()
wait_for(lambda: sched._child, timeout=60)
print(sched._child.pid, flush=True)
sys.stdin.read()
"""


def test_the_training_child_dies_with_a_killed_service_and_the_next_start_records_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_state(state, 45)
    script = SERVICE_WITH_A_RUN.format(tests=str(Path(__file__).parent), state=str(state))
    child = 0
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as service:
        try:
            assert service.stdout is not None
            child = int(service.stdout.readline())
            run_log = wait_for(lambda: next((state / "training").glob("*/retrain.log"), None), timeout=120)
            service.kill()  # kill -9, as the OOM killer or a power cut would
            service.wait(30)
            wait_for(lambda: not _running(child), timeout=15)
        finally:
            if child and _running(child):
                os.kill(child, signal.SIGKILL)
            service.kill()
    run = run_log.parent
    assert not (run / "result.json").exists()
    # A data-loader worker forked by the child holds the training lock until it notices its parent
    # is gone; the next start comes after that (systemd's KillMode=control-group would end it at once).
    wait_for(lambda: _lock_free(state), timeout=60)
    sched = RetrainScheduler(tiny_settings(state))  # the next start of the service
    sched.start()
    sched.shutdown()
    assert json.loads((run / "result.json").read_text())["status"] == "failed"
    assert not list(run.glob("*checkpoint.pt*")) and run_log.exists()
    catalogue = Catalogue(state)
    try:
        failed = recent_events(catalogue)
    finally:
        catalogue.close()
    assert [e.kind for e in failed] == [TRAINING_FAILED] and failed[0].payload["run"] == run.name


def _lock_free(state: Path) -> bool:
    try:
        with training_lock(state):
            return True
    except Busy:
        return False
