"""kill -9 of a preprocessing worker, or of the service itself: nothing stuck, nothing left behind.

The OOM killer takes the biggest process, often a preprocessing worker. The pool is rebuilt
(once per death, logged once and counted), the images in flight are tried again, and an image
that kills its worker twice is recorded ``failed: worker_died`` instead of killing the pool for
ever. When the service itself is killed, its workers, fork server and resource tracker go too.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

from chaos_helpers import ServiceProcess, wait_until
from conftest import jpeg_bytes
from proc_helpers import alive, descendants, preprocess_workers
from prometheus_client.parser import text_string_to_metric_families

POISON_SITE = Path(__file__).parent / "poison_site"
WORKERS = "2"
SHUTDOWN_TIMEOUT = 30.0  # service.shutdown_timeout_seconds, the default


# -- the service ------------------------------------------------------------------------------
def _service(tmp_path: Path, **env: str) -> ServiceProcess:
    watch, state = tmp_path / "watch", tmp_path / "state"
    watch.mkdir()
    state.mkdir()
    return ServiceProcess(watch, state, tmp_path / "service.log", XTALWATCH_INGEST__WORKERS=WORKERS, **env)


def _write(svc: ServiceProcess, first: int, last: int) -> None:
    for i in range(first, last):
        (svc.watch / f"kw{i:03d}_01A_1.jpg").write_bytes(jpeg_bytes(seed=1000 + i))


def _metric(svc: ServiceProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{svc.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == name]  # the one series of an unlabelled metric (it carries only `imager`)
    if not values:
        raise AssertionError(f"{name} not in /metrics")
    return sum(values)


def _all_preprocessed(svc: ServiceProcess, n: int) -> bool:
    return svc.count("images") == n and svc.count("images", "status = 'catalogued'") == 0


# -- the tests --------------------------------------------------------------------------------
def test_a_killed_worker_is_replaced_and_nothing_is_stuck(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    try:
        svc.start().wait_ready()
        assert svc.proc is not None
        _write(svc, 0, 20)
        worker = wait_until(lambda: preprocess_workers(svc.proc.pid), 120, "a preprocessing worker")[0]
        os.kill(worker, signal.SIGKILL)
        _write(svc, 20, 60)
        wait_until(lambda: _all_preprocessed(svc, 60), 180, "every image preprocessed after the worker died")
        assert svc.count("images", "status IN ('preprocessed', 'flagged')") == 60
        assert svc.output().count("pool rebuilt") == 1
        assert _metric(svc, "xtalwatch_preprocess_pool_restarts_total") == 1
        assert svc.stop(timeout=SHUTDOWN_TIMEOUT + 15) == 0, "SIGTERM did not stop the service"
        svc.assert_healthy_end(60)
    finally:
        svc.cleanup()


def test_an_image_that_kills_its_worker_twice_is_failed(tmp_path: Path) -> None:
    poison = "kw010_01A_1.jpg"
    path = os.pathsep.join(p for p in (str(POISON_SITE), os.environ.get("PYTHONPATH", "")) if p)
    svc = _service(tmp_path, PYTHONPATH=path, XTALWATCH_TEST_POISON=poison)
    try:
        svc.start().wait_ready()
        _write(svc, 0, 30)
        wait_until(lambda: _all_preprocessed(svc, 30), 180, "every image preprocessed or failed")
        assert svc.query("SELECT i.path, p.error FROM images i JOIN preprocess p ON p.image_id = i.id "
                         "WHERE i.status = 'failed'") == [(str(svc.watch / poison), "worker_died")]
        assert svc.count("images", "status IN ('preprocessed', 'flagged')") == 29
        assert _metric(svc, "xtalwatch_preprocess_pool_restarts_total") == 2
        assert svc.output().count("pool rebuilt") == 2
        # The pool still works after the poison image.
        _write(svc, 30, 40)
        wait_until(lambda: _all_preprocessed(svc, 40), 120, "images after the poison one preprocessed")
        assert svc.stop(timeout=SHUTDOWN_TIMEOUT + 15) == 0
        svc.assert_healthy_end(40)
    finally:
        svc.cleanup()


def test_no_child_outlives_a_killed_service(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    try:
        svc.start().wait_ready()
        assert svc.proc is not None
        _write(svc, 0, 10)
        wait_until(lambda: preprocess_workers(svc.proc.pid), 120, "a preprocessing worker")
        family = descendants(svc.proc.pid)  # fork server, resource tracker, workers
        svc.kill9()
        wait_until(lambda: not [p for p in family if alive(p)], 15,
                   f"the service's children {family} to end with it")
    finally:
        svc.cleanup()
