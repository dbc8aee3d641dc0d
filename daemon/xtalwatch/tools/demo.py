"""The demo: the synthetic imager writes plates over time while the real service runs the whole loop.

Nothing is simulated on the service side: the same ``Service`` that systemd runs watches the
folder with a real observer, catalogues into real SQLite, preprocesses in worker processes,
trains a first SimCLR model in a ``nice``d child process, hot-swaps it in, classifies, raises
hit alerts in the log and serves ``/metrics``. The demo plays the lab's part: once the first
inspection is in, it labels a tenth of those images from the imager's ground truth (as a
scientist would label a few) and asks for the first training. At the end, or on Ctrl-C, it
prints a plate map per plate and writes it as a PNG.

Sizes are chosen so that the whole loop finishes in a few minutes on two CPU cores: small
frames, a small training crop and a short training. Real deployments train longer (see
``train`` in the config).
"""

from __future__ import annotations

import csv
import logging
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from xtalwatch.config import Settings, load_settings
from xtalwatch.logs import setup_logging
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.status import collect_status
from xtalwatch.service import Service
from xtalwatch.store.catalogue import Catalogue, Db
from xtalwatch.store.labels import import_labels
from xtalwatch.store.models import model_statuses
from xtalwatch.store.predictions import newest_prediction_labels
from xtalwatch.store.report import images_past_preprocessing
from xtalwatch.tools.platemap import plate_map_png, plate_map_text, well_outcomes
from xtalwatch.tools.synth import generate_plates

__all__ = ["DemoOptions", "run_demo", "demo_settings"]

log = logging.getLogger("xtalwatch.tools.demo")


@dataclass(frozen=True)
class DemoOptions:
    out: Path
    plates: int = 2
    wells: int = 96
    drops: int = 1
    inspections: int = 3
    layout: str = "rockmaker"
    size: tuple[int, int] = (480, 360)
    rate: float = 12.0
    seed: int = 0
    label_fraction: float = 0.1
    train_steps: int = 120
    metrics_port: int = 9108
    fresh: bool = False
    serve: bool = False  # keep the service (and its review app) up after the summary, until Ctrl-C
    open_browser: bool = True  # open the review app where there is a display to open it on


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


def demo_settings(options: DemoOptions, imager: Path, state: Path) -> Settings:
    """The service's settings for the demo: the defaults, with a small, quick first training."""
    return load_settings(None, {
        "watch.dir": imager, "state.dir": state, "watch.settle_seconds": 0.5,
        "metrics.port": _free(options.metrics_port), "adapters.plate_wells": options.wells,
        # The demo asks for the first training itself, once it has labelled some images.
        "train.min_images": 50, "retrain.auto_first_training": False, "retrain.enabled": False,
        "retrain.gate_margin": 1.0,
        # A 32 px crop with the standard stem: about 16x cheaper than the small stem on a CPU.
        "train.image_size": 32, "train.small_stem": False, "train.batch_size": 32,
        "train.max_steps": options.train_steps,
        "train.checkpoint_every_steps": 50, "retrain.holdout_fraction": 0.25, "retrain.nice": 5,
        # The synthetic imager's failed frames are "dark": MARCO's "other".
        "classify.subclasses": ["needles:crystals", "plates:crystals", "prisms:crystals", "microcrystals:crystals",
                                "dark:other"],
        # The first model classifies everything that arrived before it at once: let the log show every hit.
        "alerts.rate_per_minute": 6000, "alerts.burst": 1000,
    })


def run_demo(options: DemoOptions) -> int:
    """Run the demo; returns the exit status."""
    setup_logging("WARNING")
    logging.getLogger("xtalwatch.stages.outcomes").setLevel(logging.INFO)
    logging.getLogger("xtalwatch.tools.demo").setLevel(logging.INFO)
    out = options.out.resolve()
    if options.fresh and out.exists():
        shutil.rmtree(out)
    imager, state = out / "imager", out / "state"
    imager.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(options, imager, state)
    service = Service(settings, Metrics())
    service_thread = threading.Thread(target=service.run, name="service", daemon=True)
    service_thread.start()
    while not service.ready.is_set():
        if not service_thread.is_alive():
            print("xtalwatch demo: the service failed to start; see the log above", file=sys.stderr)
            return 1
        time.sleep(0.05)
    per_inspection = options.plates * options.wells * options.drops
    total = per_inspection * options.inspections
    print(f"xtalwatch demo: {total} synthetic images ({options.plates} plates x {options.wells} wells x "
          f"{options.drops} drops x {options.inspections} inspections) at {options.rate:g}/s into {imager}")
    if service.web is not None:
        review = f"http://127.0.0.1:{service.web.port}"
        print(f"  review app: {review}/plates  (open it now: plates fill in as the imager writes them)")
        print(f"  metrics: {review}/metrics   state: {state}")
        if options.open_browser:
            _open_in_browser(f"{review}/plates")
    stop = threading.Event()
    labels_csv = out / "labels.csv"
    imager_thread = threading.Thread(
        target=generate_plates, name="imager", daemon=True,
        args=(imager,), kwargs=dict(plates=options.plates, layout=options.layout, wells=options.wells,
                                    drops=options.drops, inspections=options.inspections, size=options.size,
                                    seed=options.seed, labels=labels_csv, rate=options.rate, stop=stop,
                                    balance="dark=0.3"))
    imager_thread.start()
    summarised = False
    try:
        _play_the_lab(service, settings, labels_csv, per_inspection, options)
        imager_thread.join()
        _wait_until_caught_up(service, timeout=600)
        if options.serve and service.web is not None:
            _print_summary(state, out, options.wells, labels_csv, settings, options.label_fraction)
            summarised = True
            print(f"\nxtalwatch demo: serving the review app at http://127.0.0.1:{service.web.port}/plates "
                  "until Ctrl-C (label at /review)")
            while service_thread.is_alive():
                service_thread.join(timeout=1.0)
    except KeyboardInterrupt:
        print("\nxtalwatch demo: interrupted; stopping cleanly", file=sys.stderr)
    finally:
        stop.set()
        service.request_stop()
        service_thread.join(timeout=120)
        imager_thread.join(timeout=30)
    if not summarised:
        _print_summary(state, out, options.wells, labels_csv, settings, options.label_fraction)
    return 0


def _open_in_browser(url: str) -> None:
    """Open ``url`` in the desktop's browser; on a server without a display, only the printed link is left."""
    import os
    import webbrowser

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin"):
        return
    try:
        webbrowser.open(url, new=2)
    except webbrowser.Error:
        pass


def _catalogued(service: Service) -> int:
    """Images past preprocessing (preprocessed, flagged or failed)."""
    assert service.catalogue is not None
    return images_past_preprocessing(service.catalogue)


def _play_the_lab(service: Service, settings: Settings, labels_csv: Path, per_inspection: int,
                  options: DemoOptions) -> None:
    """Wait for the first inspection, label a fraction of it, and ask for the first training."""
    bar = tqdm(total=per_inspection, desc="first inspection in", unit="img", file=sys.stderr)
    while _catalogued(service) < per_inspection:
        bar.n = _catalogued(service)
        bar.refresh()
        time.sleep(0.5)
    bar.n = per_inspection
    bar.close()
    # Only the first inspection is in the catalogue yet; the ground truth file grows as the imager writes.
    rows = [r for r in csv.DictReader(labels_csv.open()) if r["inspection"] == "1"]
    rng = np.random.default_rng(options.seed)
    chosen = [r for r in rows if rng.random() < options.label_fraction]
    picked = labels_csv.with_name("labelled-by-the-lab.csv")
    with picked.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "labeller"])
        for r in chosen:
            writer.writerow([str(service.settings.watch.dir / r["path"]), r["class"], "demo"])
    assert service.catalogue is not None
    result = import_labels(service.catalogue, picked, settings.classify, labeller="demo")
    if result.errors:
        log.warning("label import: %d errors, e.g. %s", len(result.errors), result.errors[0])
    log.info("the lab labelled %d images (%d%% of what is in); first training starts now", result.added,
             round(100 * options.label_fraction))
    assert service.scheduler is not None
    service.scheduler.trigger_now()
    started = time.monotonic()
    with tqdm(desc="first training (child process)", unit="s", file=sys.stderr,
              bar_format="{desc}: {elapsed}") as tbar:
        while service.classify is not None and service.classify.version is None:
            if not service.scheduler.running and time.monotonic() - started > 5:
                outcome = service.scheduler.last_outcome
                if outcome is not None and outcome.status != "promoted":
                    log.warning("first training did not give a model: %s", outcome.summary())
                    return
            tbar.update(0)
            time.sleep(1)
    log.info("model %s is serving; classifying everything that arrived", service.classify.version)


def _wait_until_caught_up(service: Service, timeout: float) -> None:
    """Wait until every written file is catalogued, preprocessed and classified."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.idle():
            return
        time.sleep(0.5)


def _agreement(db: Db, imager: Path, labels_csv: Path, settings: Settings) -> tuple[int, int]:
    """How many classified images the serving model called as the imager's ground truth says."""
    truth = {}
    if labels_csv.is_file():
        fold = settings.classify.class_of
        truth = {str(imager / r["path"]): fold(r["class"]) or r["class"] for r in csv.DictReader(labels_csv.open())}
    scored = [(truth[path], label) for path, label in newest_prediction_labels(db) if path in truth]
    return sum(t == p for t, p in scored), len(scored)


def _print_summary(state: Path, out: Path, wells: int, labels_csv: Path, settings: Settings,
                   label_fraction: float) -> None:
    try:
        status = collect_status(state)
    except FileNotFoundError:
        return
    print(f"\ncatalogue: {status['images_total']} images, {len(status['plates'])} plates, "
          f"{status['wells_total']} wells, {status['rejected_total']} rejected")
    print("  by status: " + ", ".join(f"{k} {v}" for k, v in sorted(status["images_by_status"].items())))
    if status["flagged_by_flag"]:
        print("  quality flags: " + ", ".join(f"{k} {v}" for k, v in sorted(status["flagged_by_flag"].items())))
    hits = status["hits_total"]
    conn = Catalogue.open_readonly(state)  # the service has stopped: its state only needs reading
    try:
        right, scored = _agreement(conn, out / "imager", labels_csv, settings)
        models = model_statuses(conn)
        for plate in status["plates"]:
            outcomes = well_outcomes(conn, plate)
            if not outcomes:
                continue
            png = plate_map_png(outcomes, out / "plate_maps" / f"{plate}.png", f"plate {plate}", wells=wells)
            print(f"\nplate {plate} ({png}):")
            print(plate_map_text(outcomes, wells=wells))
    finally:
        conn.close()
    print(f"\nmodels: {', '.join(f'{m[0]} ({m[1]})' for m in models) or 'none'}; crystal hits: {hits}")
    if scored:
        print(f"agreement with the synthetic imager's ground truth: {right / scored:.0%} of {scored} classified images "
              f"(a short CPU training, {label_fraction:.0%} of the first inspection labelled; see docs/RESULTS.md for what longer training gives)")
    print(f"  see: xtalwatch status --state {state}")
