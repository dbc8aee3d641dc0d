"""A site: several agents, imagers and hosts on one real PostgreSQL catalogue (issue 15).

The server is Debian's PostgreSQL, started by the ``postgres_url`` fixture as an unprivileged
user; every test gets an empty database.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.triggers.date import DateTrigger
from conftest import jpeg_bytes, wait_for
from loop_helpers import TINY, env_for, synth, tiny_settings, train_first_model
from xtalwatch.learn.retrain import run_retrain
from xtalwatch.learn.scheduler import RetrainScheduler, scheduled_slot
from xtalwatch.plate import ImageIdentity
from xtalwatch.preprocess.probe import probe_bytes
from xtalwatch.store.catalogue import Catalogue, catalogued_images
from xtalwatch.store.events import event_rows
from xtalwatch.store.predictions import StoredCall, insert_predictions
from xtalwatch.store.work import (
    WORK_TAKEN_OVER,
    claim_retrain_slot,
    claim_unfinished,
    live_agents,
    register_agent,
    renew_lease,
    retire_agent,
    site_training_lock,
)


def _catalogue_images(cat: Catalogue, count: int, seed: int) -> list[int]:
    """``count`` new images, unclaimed (``cat.agent`` is None), as ingest stores them."""
    ids = []
    for n in range(count):
        data = jpeg_bytes(seed=seed + n)
        probe = probe_bytes(data, "jpg", 10**8)
        ids.append(cat.record_image(f"/{cat.imager}/p_{n:02d}A_1.jpg", len(data), n, f"sha-{cat.imager}-{n}", probe,
                                    ImageIdentity(f"P-{cat.imager}", f"A{n + 1}", 1, 1)).image_id)
    return ids


def test_agents_claim_disjoint_work_and_take_over_a_dead_agents(postgres_url: str, tmp_path: Path) -> None:
    bay1 = Catalogue(tmp_path / "a", url=postgres_url, imager="bay-1")
    bay2 = Catalogue(tmp_path / "b", url=postgres_url, imager="bay-2")
    try:
        first = set(_catalogue_images(bay1, 30, seed=0))
        second = set(_catalogue_images(bay2, 5, seed=100))
        for name, imager in (("x", "bay-1"), ("y", "bay-1"), ("z", "bay-2")):
            register_agent(bay1, name, imager=imager, host="host", pid=1)

        # x and y claim at the same instant, five at a time, three rounds: FOR UPDATE SKIP LOCKED gives them
        # disjoint images (each round starts both claims together, so neither can take everything first).
        got: dict[str, list[int]] = {"x": [], "y": []}
        rounds = threading.Barrier(2)

        def claim_all(agent: str) -> None:
            for _ in range(3):
                rounds.wait()
                got[agent] += [c.image_id for c in claim_unfinished(bay1, agent, "bay-1", lease_seconds=30, limit=5)]

        threads = [threading.Thread(target=claim_all, args=(a,)) for a in got]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not set(got["x"]) & set(got["y"]) and set(got["x"]) | set(got["y"]) == first
        # What an agent resumes after a full disk is its own claims only, never another agent's files.
        assert {row[0] for row in catalogued_images(bay1, "x")} == set(got["x"])
        assert {c.image_id for c in claim_unfinished(bay2, "z", "bay-2", lease_seconds=30)} == second
        assert claim_unfinished(bay1, "y", "bay-1", lease_seconds=30) == []  # all held by live agents

        # y finishes its images; x dies (its lease is not renewed): y takes over x's, and only those.
        insert_predictions(bay1, [StoredCall(i, "v1", "clear", 0.9, {"clear": 0.9}) for i in got["y"]], time.time())
        renew_lease(bay1, "x", now=time.time() - 100)
        taken = claim_unfinished(bay1, "y", "bay-1", lease_seconds=30)
        assert {c.image_id for c in taken} == set(got["x"]) and {c.previous_agent for c in taken} == {"x"}
        [event] = event_rows(bay1, kind=WORK_TAKEN_OVER)
        assert event["payload"] == {"from": "x", "by": "y", "imager": "bay-1", "images": len(got["x"])}
        alive = {a["name"]: (a["alive"], a["holding"]) for a in live_agents(bay1, lease_seconds=30)}
        assert alive == {"x": (False, 0), "y": (True, len(got["x"])), "z": (True, 5)}

        # A clean stop hands its unfinished claims back at once: no lease to wait out.
        assert retire_agent(bay1, "y") == len(got["x"])
        register_agent(bay1, "w", imager="bay-1", host="host", pid=2)
        assert {c.image_id for c in claim_unfinished(bay1, "w", "bay-1", lease_seconds=30)} == set(got["x"])
        assert {c.previous_agent for c in claim_unfinished(bay1, "w", "bay-1", lease_seconds=30)} == set()
    finally:
        bay1.close()
        bay2.close()


def test_two_hosts_scheduled_at_the_same_moment_exactly_one_trains(postgres_url: str, tmp_path: Path) -> None:
    fire = datetime.now().astimezone() + timedelta(seconds=3)
    schedulers, done = [], []
    for host in ("a", "b"):
        settings = tiny_settings(None, tmp_path / host, **{
            "catalogue.url": postgres_url, "site.imager": f"bay-{host}", "retrain.enabled": True})
        sched = RetrainScheduler(settings, trigger=DateTrigger(run_date=fire))
        finished = threading.Event()
        sched._scheduler.add_listener(lambda event, f=finished: f.set(), EVENT_JOB_EXECUTED)
        schedulers.append(sched)
        done.append(finished)
    Catalogue.for_settings(schedulers[0].settings).close()  # the schema, before both hosts fire
    for sched in schedulers:
        sched.start()
    try:
        for finished in done:
            assert finished.wait(120), "a host's scheduled job never ran"
        assert sorted(s.children_started for s in schedulers) == [0, 1]
        assert sorted(s.slots_lost for s in schedulers) == [0, 1]
        loser = next(s for s in schedulers if s.slots_lost)
        assert loser.last_outcome is not None and "is trained by" in loser.last_outcome.reason
        with psycopg.connect(postgres_url) as conn:
            slots = conn.execute("SELECT slot FROM retrain_slots").fetchall()
        assert slots == [(fire.isoformat(timespec="seconds"),)]
    finally:
        for sched in schedulers:
            sched.shutdown()


def test_a_slot_is_the_same_on_every_host_and_taken_once(postgres_url: str, tmp_path: Path) -> None:
    from apscheduler.triggers.cron import CronTrigger

    nightly = CronTrigger(hour=2, minute=0)
    on_time = datetime(2026, 12, 2, 2, 0, 0, 300_000).astimezone()
    late = on_time + timedelta(minutes=40)  # a host whose service was down at 02:00 runs the misfired job
    assert scheduled_slot(nightly, on_time) == scheduled_slot(nightly, late) == on_time.replace(microsecond=0).isoformat()
    cat = Catalogue(tmp_path, url=postgres_url)
    try:
        assert claim_retrain_slot(cat, "2026-12-02T02:00:00", "host-a") is None
        assert claim_retrain_slot(cat, "2026-12-02T02:00:00", "host-b") == "host-a"
    finally:
        cat.close()


def test_a_run_while_another_host_trains_is_skipped(postgres_url: str, tmp_path: Path) -> None:
    settings = tiny_settings(None, tmp_path / "state", **{"catalogue.url": postgres_url})
    Catalogue.for_settings(settings).close()
    with site_training_lock(postgres_url) as got:
        assert got
        outcome = run_retrain(settings, now=True)
    assert outcome.status == "skipped" and "another host of the site is training" in outcome.reason
    with site_training_lock(postgres_url) as got:  # released when the holder's block ended
        assert got


# -- the whole site as real processes -------------------------------------------------------------
@pytest.fixture(scope="module")
def first_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_first_model(tmp_path_factory.mktemp("site-first-model"))


def _unfinished(conn: psycopg.Connection[Any], agent_prefix: str) -> int:
    return conn.execute("""SELECT COUNT(*) FROM images i WHERE i.claimed_by LIKE %s
                           AND i.status IN ('catalogued', 'preprocessed')
                           AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.image_id = i.id)""",
                        (agent_prefix + "#%",)).fetchone()[0]


LEASE = 10  # seconds; short for a test, long enough that a busy 2-core machine renews it in time


@pytest.mark.slow
def test_three_agents_two_imagers_one_share_mounted_twice_one_killed(first_model: Path, postgres_url: str,
                                                                      tmp_path: Path) -> None:
    """A (bay-1) and C (bay-1, the same folder: a share mounted twice) and B (bay-2) write into one database
    during a burst; A is killed with kill -9 mid-burst and restarted. Every file is catalogued and classified
    exactly once, and C takes over what A held once A's lease runs out."""
    shared_models = tmp_path / "shared-models"
    shutil.copytree(first_model / "models", shared_models, symlinks=True)
    folders = {"bay-1": tmp_path / "bay-1", "bay-2": tmp_path / "bay-2"}
    for folder in folders.values():
        folder.mkdir()
    incoming = {"bay-1": synth(tmp_path / "in-1", seed=21, wells=48, inspections=1),
                "bay-2": synth(tmp_path / "in-2", seed=22, wells=24, inspections=1)}
    base = {k: v for k, v in TINY.items() if k != "metrics.port"}
    agents = {"agent-a": "bay-1", "agent-b": "bay-2", "agent-c": "bay-1"}

    @contextlib.contextmanager
    def agent(name: str, log_name: str) -> Iterator[subprocess.Popen[bytes]]:
        imager = agents[name]
        env = env_for({**base, "catalogue.url": postgres_url, "site.imager": imager, "site.agent": name,
                       "site.lease_seconds": LEASE, "site.models_dir": str(shared_models), "ingest.workers": 1})
        cmd = [sys.executable, "-m", "xtalwatch", "run", "--watch", str(folders[imager]),
               "--state", str(tmp_path / f"state-{name}"), "--metrics-port", "0"]
        with open(tmp_path / log_name, "w") as log:
            proc = subprocess.Popen(cmd, env=env, stderr=log)
            try:
                yield proc
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(120)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()

    Catalogue(tmp_path / "schema", url=postgres_url).close()  # the schema exists before three hosts start
    conn = psycopg.connect(postgres_url, autocommit=True)
    try:
        def ready(log_name: str) -> bool:  # the start-up scan is done and the folder is watched
            return "ready: start-up scan done" in (tmp_path / log_name).read_text(errors="replace")

        with agent("agent-b", "b.log"), agent("agent-c", "c.log"):
            with agent("agent-a", "a.log") as a:
                def all_three_ready() -> bool:
                    return all(ready(log) for log in ("a.log", "b.log", "c.log"))

                wait_for(all_three_ready, timeout=120)
                for imager, files in incoming.items():
                    for path in files:
                        target = folders[imager] / path.relative_to(tmp_path / ("in-1" if imager == "bay-1" else "in-2"))
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(path, target)
                # Mid-burst: A holds images it has not finished. Kill it as the OOM killer would.
                def a_holds_unfinished_work() -> bool:
                    return _unfinished(conn, "agent-a") >= 1

                wait_for(a_holds_unfinished_work, timeout=120)
                a.send_signal(signal.SIGKILL)
                a.wait(30)
                killed_at, held = time.time(), _unfinished(conn, "agent-a")

            def taken_over() -> list[dict[str, Any]]:
                rows = conn.execute("SELECT payload FROM events WHERE kind = %s AND created_at > %s",
                                    (WORK_TAKEN_OVER, killed_at)).fetchall()
                return [json.loads(r[0]) for r in rows]

            def a_work_taken_over() -> bool:
                return any(e["from"].startswith("agent-a#") for e in taken_over())

            wait_for(a_work_taken_over, timeout=120)
            takeover = next(e for e in taken_over() if e["from"].startswith("agent-a#"))
            assert takeover["by"].startswith("agent-c#") and takeover["imager"] == "bay-1" and takeover["images"] >= 1
            assert held >= 1

            with agent("agent-a", "a2.log"):  # restarted: a new agent, the same host and folder
                total = sum(len(f) for f in incoming.values())

                def all_classified() -> bool:
                    images = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
                    unfinished = conn.execute("""SELECT COUNT(*) FROM images i WHERE i.status = 'catalogued' OR
                        (i.status = 'preprocessed' AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.image_id = i.id))
                        """).fetchone()[0]
                    return images == total and unfinished == 0

                wait_for(all_classified, timeout=300)
        # Every file once, every usable image classified once, each imager's work done by its own agents.
        assert conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == sum(len(f) for f in incoming.values())
        per_imager = dict(conn.execute("SELECT imager, COUNT(*) FROM images GROUP BY imager").fetchall())
        assert per_imager == {imager: len(files) for imager, files in incoming.items()}
        counts = conn.execute("SELECT image_id, COUNT(*) FROM predictions GROUP BY image_id").fetchall()
        usable = conn.execute("SELECT COUNT(*) FROM images WHERE status = 'preprocessed'").fetchone()[0]
        assert len(counts) == usable and all(n == 1 for _, n in counts)
        workers = dict(conn.execute("""SELECT imager, string_agg(DISTINCT split_part(claimed_by, '#', 1), ',')
                                       FROM images GROUP BY imager""").fetchall())
        assert workers["bay-2"] == "agent-b" and set(workers["bay-1"].split(",")) <= {"agent-a", "agent-c"}
    finally:
        conn.close()
        for log in sorted(tmp_path.glob("*.log")):
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                print(f"--- {log.name}\n{text[-3000:]}", file=sys.stderr)
    assert os.path.isdir(shared_models / "current")


def test_an_unreachable_site_catalogue_is_one_line_without_its_password(tmp_path: Path) -> None:
    from xtalwatch.config import load_settings
    from xtalwatch.observe.preflight import preflight
    from xtalwatch.store.errors import CatalogueUnreachable

    url = "postgresql://xtalwatch:s3cret@127.0.0.1:1/site"  # nothing listens on port 1
    with pytest.raises(CatalogueUnreachable) as refused:
        Catalogue(tmp_path, url=url)
    message = str(refused.value)
    assert "\n" not in message and "s3cret" not in message and "127.0.0.1:1/site" in message
    settings = load_settings(None, {"state.dir": tmp_path / "state", "catalogue.url": url, "metrics.enabled": False})
    [problem] = preflight(settings, "site.yaml")
    assert problem.startswith("site.yaml: catalogue.url: cannot connect") and "s3cret" not in problem


def test_the_site_host_example_config_and_systemd_drop_in_are_valid(tmp_path: Path) -> None:
    from test_deploy import installed_units, require_tool, run
    from xtalwatch.config import load_settings

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "w").mkdir()
    settings = load_settings(root / "config" / "site" / "bay-1.yaml", {"watch.dir": tmp_path / "w", "state.dir": tmp_path / "s"})
    assert settings.site.imager == "bay-1" and settings.catalogue.url is not None and settings.site.models_dir
    # The drop-in's settings merged into the unit, as systemd merges a .d/ file: the unit still verifies.
    tool = require_tool("systemd-analyze")
    service = installed_units(tmp_path)[0]
    service.write_text(service.read_text() + "\n" + (root / "deploy" / "systemd" / "xtalwatch-site.conf").read_text())
    result = run([tool, "verify", "--man=no", str(service)], env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "xtalwatch" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_file_level_catalogue_commands_point_a_site_to_postgresqls_tools(tmp_path: Path) -> None:
    env = {**os.environ, "XTALWATCH_CATALOGUE__URL": "postgresql://xtalwatch:s3cret@db.example/site"}
    for command in (["check"], ["backup"]):
        done = subprocess.run([sys.executable, "-m", "xtalwatch", "catalogue", *command, "--state", str(tmp_path)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "pg_dump" in done.stderr and "s3cret" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
