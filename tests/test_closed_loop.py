"""The closed loop end to end on the synthetic imager, with a tiny encoder.

A first model is trained once per module through the real retraining job (real SimCLR steps,
real bundle, real registry); each test then runs the real service on real folders.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningService, wait_for
from loop_helpers import TINY, env_for, synth, tiny_settings, train_first_model
from xtalwatch.store.catalogue import Catalogue

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def first_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder whose registry serves a model trained on labelled synthetic drops."""
    return train_first_model(tmp_path_factory.mktemp("first-model"))


def fresh_state_with_model(first_model: Path, state: Path) -> str:
    """A new state folder holding only the registry of ``first_model``; returns the serving version."""
    shutil.copytree(first_model / "models", state / "models", symlinks=True)
    return os.readlink(state / "models" / "current").rstrip("/").rsplit("/", 1)[-1]


class _Recorder(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_files_in_results_and_hits_out_with_a_failing_sink(first_model: Path, tmp_path: Path) -> None:
    watch, state = tmp_path / "imager", tmp_path / "state"
    watch.mkdir()
    version = fresh_state_with_model(first_model, state)
    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sinks = [{"type": "log"},
             {"type": "webhook", "name": "lab-chat", "url": f"http://127.0.0.1:{server.server_port}/hook"},
             {"type": "webhook", "name": "broken", "url": "http://127.0.0.1:9/nothing-listens-here",
              "timeout_seconds": 1}]
    settings = tiny_settings(watch, state, **{"alerts.sinks": sinks, "alerts.retry_attempts": 2,
                                              "alerts.retry_initial_seconds": 0.1})
    running = RunningService(settings).__enter__()
    try:
        assert running.service.classify.version == version
        incoming = tmp_path / "incoming"
        files = synth(incoming, seed=12)
        for path in files:  # the imager writes them into the watched folder
            target = watch / path.relative_to(incoming)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
        wait_for(lambda: running.count("images") == len(files), timeout=60)
        usable = lambda: running.count("images", "status = 'preprocessed'")  # noqa: E731
        wait_for(lambda: running.count("images", "status = 'catalogued'") == 0
                 and running.count("predictions") == usable() and running.service.classify.idle(), timeout=90)
        catalogue = running.service.catalogue
        assert {r[0] for r in catalogue.query("SELECT DISTINCT model_version FROM predictions")} == {version}
        assert running.count("images", "status = 'flagged' AND id IN (SELECT image_id FROM predictions)") == 0
        crystal_classes = settings.classify.crystal_classes
        crystal_wells = {r[0] for r in catalogue.query(
            f"SELECT well_id FROM well_outcomes WHERE label IN ({','.join('?' * len(crystal_classes))})",
            tuple(crystal_classes))}
        hits = catalogue.query("SELECT well_id, image_id, payload FROM events WHERE kind = 'crystal_hit'")
        hit_wells = [r["well_id"] for r in hits]
        assert crystal_wells, "the model called no well crystalline; the test data has needles in half of them"
        assert crystal_wells <= set(hit_wells), "a well is crystalline now but was never announced"
        for row in hits:  # each hit names the image whose crystal call made it
            label = catalogue.query("SELECT label FROM predictions WHERE image_id = ?", (row["image_id"],))[0][0]
            assert label in crystal_classes and json.loads(row["payload"])["class"] == label
        assert running.metric("xtalwatch_hits_total") == len(hit_wells)
        wait_for(lambda: len(_Recorder.received) >= 1, timeout=30)
        hit = next(a for a in _Recorder.received if a.get("kind") == "crystal_hit")
        assert "Crystal hit" in hit["text"] and hit["fields"]["well"] and hit["fields"]["image_path"]
        # The broken sink failed on its own thread; ingest and the good sink were not held up.
        wait_for(lambda: running.metric("xtalwatch_alerts_failed_total", sink="broken") >= 1, timeout=30)
        assert running.metric("xtalwatch_alerts_sent_total", sink="lab-chat") >= 1
        latency = running.metrics.registry.get_sample_value("xtalwatch_result_latency_seconds_count")
        assert latency == usable()
    finally:
        running.stop()
        server.shutdown()
        server.server_close()


def test_scheduled_retrain_is_promoted_and_hot_swapped_while_files_arrive(first_model: Path, tmp_path: Path) -> None:
    watch, state = tmp_path / "imager", tmp_path / "state"
    watch.mkdir()
    shutil.copytree(first_model, state, symlinks=True)  # the catalogue, crops, labels and model of the first run
    first_version = os.readlink(state / "models" / "current").rstrip("/").rsplit("/", 1)[-1]
    settings = tiny_settings(watch, state, **{
        "retrain.enabled": True, "retrain.interval_hours": 4 / 3600, "retrain.warm_start": False})
    running = RunningService(settings).__enter__()
    try:
        incoming = tmp_path / "incoming"
        files = synth(incoming, seed=13, wells=24, inspections=1)
        before = running.count("images")
        for path in files:  # arriving over several seconds, while the scheduler fires
            target = watch / path.relative_to(incoming)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
            time.sleep(0.25)
        wait_for(lambda: running.service.classify.version not in (None, first_version), timeout=240)
        new_version = running.service.classify.version
        wait_for(lambda: running.count("images") == before + len(files), timeout=60)
        usable_sql = "status = 'preprocessed'"
        wait_for(lambda: running.service.classify.idle() and running.count(
            "images", f"{usable_sql} AND id NOT IN (SELECT image_id FROM predictions WHERE model_version = '{new_version}')"
        ) == 0, timeout=120)
        catalogue = running.service.catalogue
        twice = catalogue.query("SELECT image_id, model_version, COUNT(*) FROM predictions "
                                "GROUP BY image_id, model_version HAVING COUNT(*) > 1")
        assert twice == [], "an image was classified twice by the same model"
        assert running.count("images") == before + len(files), "an image was lost"
        # The run records its outcome event as it ends; the swap may come first. The service counts
        # the event on its next periodic check (every 30 s).
        wait_for(lambda: running.count("events", "kind = 'model_promoted'") >= 1, timeout=60)
        wait_for(lambda: running.metric("xtalwatch_training_runs_total", outcome="promoted") >= 1, timeout=45)
        classes = json.loads((state / "models" / new_version / "bundle.json").read_text())["classes"]
        assert running.metrics.registry.get_sample_value("xtalwatch_model_info", {
            "version": new_version, "classes": ",".join(classes)}) == 1
    finally:
        running.stop()


def test_sigterm_in_a_burst_then_restart_classifies_every_image_once(first_model: Path, tmp_path: Path) -> None:
    watch, state = tmp_path / "imager", tmp_path / "state"
    watch.mkdir()
    version = fresh_state_with_model(first_model, state)
    incoming = tmp_path / "incoming"
    files = synth(incoming, seed=14, wells=48, inspections=1)
    overrides = {k: v for k, v in TINY.items() if k != "metrics.port"}
    cmd = [sys.executable, "-m", "xtalwatch", "run", "--watch", str(watch), "--state", str(state), "--metrics-port", "0"]

    @contextlib.contextmanager
    def service_process(log_path: Path) -> Iterator[subprocess.Popen]:
        """`xtalwatch run` as systemd runs it; the body sends SIGTERM, a stray process is killed."""
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, env=env_for(overrides), stderr=log)
            try:
                yield proc
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def stop(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0

    with service_process(tmp_path / "first.log") as proc:
        time.sleep(3)  # started and watching
        for path in files:
            target = watch / path.relative_to(incoming)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
        time.sleep(1.0)  # mid-burst: some catalogued, some preprocessed, some classified
        stop(proc)
    catalogue = Catalogue(state)
    try:
        done_before = catalogue.query("SELECT COUNT(*) FROM predictions")[0][0]
    finally:
        catalogue.close()
    assert done_before < len(files), "the burst finished before SIGTERM; the test proves nothing"

    def all_classified() -> bool:
        cat = Catalogue.open_readonly(state)
        try:
            images = cat.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            waiting = cat.execute("SELECT COUNT(*) FROM images WHERE status = 'catalogued' OR (status = "
                                  "'preprocessed' AND id NOT IN (SELECT image_id FROM predictions))").fetchone()[0]
            return images == len(files) and waiting == 0
        finally:
            cat.close()

    with service_process(tmp_path / "second.log") as proc:
        wait_for(all_classified, timeout=120)
        stop(proc)
    catalogue = Catalogue(state)
    try:
        rows = catalogue.query("SELECT image_id, COUNT(*) AS n, MIN(model_version) AS v FROM predictions GROUP BY image_id")
        usable = catalogue.query("SELECT COUNT(*) FROM images WHERE status = 'preprocessed'")[0][0]
        assert len(rows) == usable and all(r["n"] == 1 and r["v"] == version for r in rows)
        assert catalogue.query("SELECT COUNT(*) FROM images")[0][0] == len(files)
    finally:
        catalogue.close()
