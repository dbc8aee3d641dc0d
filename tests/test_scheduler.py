"""The retraining schedule: cron default, stable job, one child at a time, nice'd, end to end."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from conftest import wait_for
from retrain_helpers import make_state, tiny_settings
from xtalwatch.config import RetrainConfig
from xtalwatch.learn.registry import ModelRegistry
from xtalwatch.learn.retrain import RetrainOutcome
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
            assert sched.job_id == JOB_ID == "xtalwatch-retrain"
            assert (job.max_instances, job.coalesce, job.misfire_grace_time) == (1, True, 3 * 3600)
            assert sched.next_run_time is not None and sched.next_run_time.hour == 2
        finally:
            sched.shutdown()


def test_scheduled_child_trains_promotes_and_never_runs_twice(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_state(state, 45, labelled_per_class=8)
    outcomes: list[RetrainOutcome] = []
    done = threading.Event()

    def collect(outcome: RetrainOutcome) -> None:
        outcomes.append(outcome)
        done.set()

    # Fires every second; a run takes several, so most fires find it running.
    sched = RetrainScheduler(tiny_settings(state), collect, trigger=IntervalTrigger(seconds=1))
    sched.start()
    try:
        wait_for(lambda: sched.running, timeout=10)
        assert not sched.trigger_now()  # a manual trigger during a run starts nothing either
        wait_for(lambda: sched.skipped_while_running >= 1, timeout=30)
        assert sched.children_started == 1
        assert done.wait(120), "the training child did not finish"
        assert sched.children_started == 1
    finally:
        sched.shutdown(timeout=10)
    first = outcomes[0]
    assert first.status == "promoted", first.reason
    assert first.niceness == 10  # retrain.nice, applied in the child only
    assert ModelRegistry(state).current_version() == first.version
    rows = Catalogue(state).query("SELECT status FROM models WHERE version=?", (first.version,))
    assert rows[0]["status"] == "promoted"
    assert (state / "training" / "child.log").stat().st_size > 0


def test_manual_trigger_with_schedule_off_and_shutdown_stops_the_child(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_state(state, 45)
    outcomes: list[RetrainOutcome] = []
    sched = RetrainScheduler(tiny_settings(state, **{"retrain.enabled": False}), outcomes.append)
    sched.start()
    try:
        assert sched.next_run_time is None  # off: nothing scheduled
        assert sched.trigger_now()
        wait_for(lambda: sched.running, timeout=10)
    finally:
        sched.shutdown(timeout=10)
    wait_for(lambda: outcomes, timeout=10)
    assert not sched.running
    assert outcomes[0].status == "failed" and "while the service was stopping" in outcomes[0].reason
