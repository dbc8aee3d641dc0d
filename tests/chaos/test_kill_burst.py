"""kill -9 of ``xtalwatch run`` at random points of a burst of files, five times over.

Each kill leaves none of the service's children (workers, fork server, resource tracker)
running, and the service is started again, as systemd would. At the end every file is catalogued
exactly once, none is left ``catalogued`` (preprocessing resumed what each kill interrupted),
the catalogue is intact, and no traceback was printed.
"""

from __future__ import annotations

import random
from pathlib import Path

from chaos_helpers import ServiceProcess, wait_until
from conftest import jpeg_bytes
from proc_helpers import alive, descendants

KILLS = 5
PER_BURST = 60


def test_kill_nine_during_a_burst_five_times(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    watch, state = tmp_path / "watch", tmp_path / "state"
    watch.mkdir()
    state.mkdir()
    svc = ServiceProcess(watch, state, tmp_path / "service.log", XTALWATCH_INGEST__WORKERS="2")
    written = 0
    try:
        for _ in range(KILLS):
            svc.start().wait_ready()
            before = svc.count("images")
            for i in range(written, written + PER_BURST):
                (watch / f"burst{i:04d}_01A_1.jpg").write_bytes(jpeg_bytes(seed=5000 + i))
            written += PER_BURST
            # A random point of the burst: once this many of its files are in the catalogue.
            target = before + rng.randrange(0, PER_BURST)
            wait_until(lambda t=target: svc.count("images") >= t, 120, f"{target} images catalogued (seed {seed})")
            assert svc.proc is not None
            family = descendants(svc.proc.pid)
            svc.kill9()
            wait_until(lambda f=family: not [p for p in f if alive(p)], 15,
                       f"the killed service's children {family} to end with it")
        svc.start().wait_ready()
        wait_until(lambda: svc.count("images") == written and svc.count("images", "status = 'catalogued'") == 0,
                   180, f"all {written} images catalogued and preprocessed after {KILLS} kills (seed {seed})")
        assert svc.stop() == 0
        svc.assert_healthy_end(written)
    finally:
        svc.cleanup()
