"""The demo: the synthetic imager writes plates over time while the real service runs on them.

Nothing is simulated on the service side: the same ``Service`` that systemd runs watches the
folder with a real observer, catalogues into real SQLite, preprocesses in worker processes and
serves ``/metrics``. Ctrl-C stops the imager and the service cleanly and still prints the summary.
"""

from __future__ import annotations

import logging
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from xtalwatch.config import load_settings
from xtalwatch.logs import setup_logging
from xtalwatch.metrics import Metrics
from xtalwatch.service import Service
from xtalwatch.status import collect_status
from xtalwatch.synth import generate_plates

__all__ = ["DemoOptions", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    out: Path
    plates: int = 2
    wells: int = 96
    drops: int = 1
    inspections: int = 2
    layout: str = "rockmaker"
    size: tuple[int, int] = (640, 480)
    rate: float = 20.0
    seed: int = 0
    metrics_port: int = 9108
    fresh: bool = False


def _free(port: int) -> int:
    if port == 0:
        return 0
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            log.warning("port %d is busy; serving /metrics on a free port instead", port)
            return 0
    return port


def run_demo(options: DemoOptions) -> int:
    """Run the demo; returns the exit status."""
    setup_logging("WARNING")
    out = options.out.resolve()
    if options.fresh and out.exists():
        shutil.rmtree(out)
    imager, state = out / "imager", out / "state"
    imager.mkdir(parents=True, exist_ok=True)
    settings = load_settings(None, {"watch.dir": imager, "state.dir": state, "watch.settle_seconds": 0.5,
                                    "metrics.port": _free(options.metrics_port), "adapters.plate_wells": options.wells})
    service = Service(settings, Metrics())
    service_thread = threading.Thread(target=service.run, name="service", daemon=True)
    service_thread.start()
    while not service.ready.is_set():
        if not service_thread.is_alive():
            print("xtalwatch demo: the service failed to start; see the log above", file=sys.stderr)
            return 1
        time.sleep(0.05)
    total = options.plates * options.wells * options.drops * options.inspections
    print(f"xtalwatch demo: {total} synthetic images at {options.rate:g}/s into {imager}")
    if service.web is not None:
        print(f"  metrics: http://127.0.0.1:{service.web.port}/metrics   state: {state}")
    stop = threading.Event()
    written = tqdm(total=total, desc="imager writes", unit="img", file=sys.stderr)
    try:
        generate_plates(imager, plates=options.plates, layout=options.layout, wells=options.wells,
                        drops=options.drops, inspections=options.inspections, size=options.size, seed=options.seed,
                        labels=out / "labels.csv", rate=options.rate, stop=stop,
                        progress=lambda n: written.update(n))
        written.close()
        _wait_until_caught_up(service, timeout=120)
    except KeyboardInterrupt:
        stop.set()
        print("\nxtalwatch demo: interrupted; stopping cleanly", file=sys.stderr)
    finally:
        written.close()
        service.request_stop()
        service_thread.join(timeout=60)
    _print_summary(state)
    return 0


def _wait_until_caught_up(service: Service, timeout: float) -> None:
    """Wait until every written file is catalogued and preprocessed."""
    deadline = time.monotonic() + timeout
    bar = tqdm(desc="service catches up", unit="img", file=sys.stderr)
    while time.monotonic() < deadline:
        pending = len(service.tracker) + service._queue.qsize() + (len(service.preprocess) if service.preprocess else 0)
        bar.set_postfix(pending=pending)
        if pending == 0:
            break
        time.sleep(0.2)
    bar.close()


def _print_summary(state: Path) -> None:
    try:
        status = collect_status(state)
    except FileNotFoundError:
        return
    print(f"\ncatalogue: {status['images_total']} images, {len(status['plates'])} plates, "
          f"{status['wells_total']} wells, {status['rejected_total']} rejected")
    print("  by status: " + ", ".join(f"{k} {v}" for k, v in sorted(status["images_by_status"].items())))
    if status["flagged_by_flag"]:
        print("  quality flags: " + ", ".join(f"{k} {v}" for k, v in sorted(status["flagged_by_flag"].items())))
    print(f"  see: xtalwatch status --state {state}")
