"""The demo: the synthetic imager writes plates over time while the real service runs the whole loop.

Nothing is simulated on the service side: the same ``Service`` that systemd runs watches the
folder with a real observer, catalogues into real SQLite, preprocesses in worker processes,
trains a first SimCLR model in a ``nice``d child process, hot-swaps it in, classifies, raises
hit alerts in the log and serves ``/metrics``. The imager writes a screen's mix: most drops stay
clear or precipitate, a few percent turn crystalline from the second inspection on.

The demo plays the lab's part from the imager's ground truth. A first model that has never seen
a crystal can call none, so the lab waits for the first inspection whose images show every class
the model needs, then labels what a scientist would: a tenth of everything in so far, at random,
plus the crystals (and failed frames) they spotted on the plates, up to a few of each class,
since random picks alone would give one or two. Then it asks for the first training. At the end,
or on Ctrl-C, it prints a plate map per plate, writes it as a PNG, and scores the called hit
wells against the wells that truly crystallised.

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

from xtalwatch.alerts.events import CRYSTAL_HIT, PLATE_HITS
from xtalwatch.config import ClassifyConfig, Settings, load_settings
from xtalwatch.logs import setup_logging
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.status import collect_status
from xtalwatch.service import Service
from xtalwatch.store.catalogue import Catalogue, Db
from xtalwatch.store.events import events_after
from xtalwatch.store.labels import import_labels
from xtalwatch.store.models import model_statuses
from xtalwatch.store.predictions import newest_prediction_labels
from xtalwatch.store.report import images_past_preprocessing
from xtalwatch.tools.platemap import plate_map_png, plate_map_text, well_outcomes
from xtalwatch.tools.synth import generate_plates

__all__ = ["DemoOptions", "run_demo", "demo_settings"]

log = logging.getLogger("xtalwatch.tools.demo")

# Labelled images of each class the lab gives the first model at least, where the images in hold
# that many: enough for a stratified holdout (2 per class) and a few to fit on.
_FIRST_EXAMPLES = 6


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
    service = Service(settings, Metrics(imager=settings.site.imager))
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
                                    seed=options.seed, labels=labels_csv, rate=options.rate, stop=stop))
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
    """Wait for an inspection that shows every class, label what a lab would, and ask for the first training."""
    rows: list[dict[str, str]] = []
    for seen in range(1, options.inspections + 1):
        _wait_for_images(service, (seen - 1) * per_inspection, per_inspection, f"inspection {seen} in")
        # The ground-truth file grows as the imager writes: keep what is in the catalogue so far.
        rows = [r for r in _read_csv(labels_csv) if int(r["inspection"]) <= seen]
        missing = _missing(rows, settings.classify)
        if not missing or seen == options.inspections:
            break
        log.info("inspection %d in, no %s yet: the lab waits for the next before the first training", seen,
                 " or ".join(missing))
    chosen = _lab_picks(rows, settings.classify, np.random.default_rng(options.seed), options.label_fraction)
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
    log.info("the lab labelled %d images (%d%% of what is in at random, plus up to %d of each class it spotted); "
             "first training starts now", result.added, round(100 * options.label_fraction), _FIRST_EXAMPLES)
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


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _wait_for_images(service: Service, before: int, count: int, desc: str) -> None:
    """Wait until ``before + count`` images are past preprocessing, showing the last ``count`` arrive."""
    bar = tqdm(total=count, desc=desc, unit="img", file=sys.stderr)
    while (done := _catalogued(service) - before) < count:
        bar.n = max(0, done)
        bar.refresh()
        time.sleep(0.5)
    bar.n = count
    bar.close()


def _missing(rows: list[dict[str, str]], classify: ClassifyConfig) -> list[str]:
    """Classes the model needs that no image in ``rows`` shows."""
    present = {classify.class_of(r["class"]) for r in rows}
    return [c for c in classify.classes if c not in present]


def _lab_picks(rows: list[dict[str, str]], classify: ClassifyConfig, rng: np.random.Generator,
               fraction: float) -> list[dict[str, str]]:
    """A ``fraction`` of ``rows`` at random, topped up to ``_FIRST_EXAMPLES`` of each class from the rest."""
    take = rng.random(len(rows)) < fraction
    for cls in classify.classes:
        of_class = [i for i, r in enumerate(rows) if classify.class_of(r["class"]) == cls]
        short = _FIRST_EXAMPLES - int(take[of_class].sum()) if of_class else 0
        spare = [i for i in of_class if not take[i]]
        if short > 0 and spare:
            take[rng.choice(spare, size=min(short, len(spare)), replace=False)] = True
    return [r for r, t in zip(rows, take, strict=True) if t]


@dataclass(frozen=True)
class HitScores:
    """Hit wells against the imager's ground truth."""

    found: int  # called and truly crystalline
    called: int  # named by a crystal_hit event or a plate_hits summary
    true: int  # crystalline in any inspection's ground truth
    labelled: int  # of the true ones, those with an image the lab labelled
    found_unlabelled: int  # of the found ones, those the lab had not labelled

    def line(self) -> str:
        precision = f"{self.found / self.called:.0%}" if self.called else "n/a"
        unseen = self.true - self.labelled
        return (f"hit wells against the synthetic imager's ground truth: precision {precision} ({self.found} of "
                f"{self.called} called), recall {self.found / max(self.true, 1):.0%} ({self.found} of {self.true} "
                f"wells that crystallised; {self.found_unlabelled} of the {unseen} the lab had not labelled)")


def _hit_scores(db: Db, labels_csv: Path, lab_csv: Path, classify: ClassifyConfig) -> HitScores:
    """Score the called hit wells: a well is truly a hit when its ground truth is crystalline in any
    inspection, and called one when a ``crystal_hit`` event or a ``plate_hits`` summary names it."""
    truth = _read_csv(labels_csv) if labels_csv.is_file() else []
    true_hits = {(r["plate"], r["well"]) for r in truth if classify.class_of(r["class"]) in classify.crystal_classes}
    called: set[tuple[str, str]] = set()
    for event in events_after(db, 0, kinds=[CRYSTAL_HIT, PLATE_HITS]):
        p = event["payload"]
        wells = [p.get("well")] if event["kind"] == CRYSTAL_HIT else p.get("wells") or []
        called |= {(str(p.get("plate")), str(w)) for w in wells}
    well_of = {r["path"]: (r["plate"], r["well"]) for r in truth}
    labelled = set()
    if lab_csv.is_file():
        root = labels_csv.parent / "imager"
        labelled = {well_of.get(Path(r["path"]).relative_to(root).as_posix()) for r in _read_csv(lab_csv)}
    found = called & true_hits
    return HitScores(len(found), len(called), len(true_hits), len(true_hits & labelled), len(found - labelled))


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
        truth = {str(imager / r["path"]): fold(r["class"]) or r["class"] for r in _read_csv(labels_csv)}
    scored = [(truth[path], label) for path, label in newest_prediction_labels(db) if path in truth]
    return sum(t == p for t, p in scored), len(scored)


def _print_summary(state: Path, out: Path, wells: int, labels_csv: Path, settings: Settings,
                   label_fraction: float) -> None:
    try:
        status = collect_status(settings)
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
        hits_scored = _hit_scores(conn, labels_csv, labels_csv.with_name("labelled-by-the-lab.csv"),
                                  settings.classify)
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
    if hits_scored.true or hits_scored.called:
        print(hits_scored.line())
    if scored:
        print(f"agreement with the synthetic imager's ground truth: {right / scored:.0%} of {scored} classified images "
              f"(a short CPU training on {label_fraction:.0%} of the images in, plus the lab's spotted examples; see docs/RESULTS.md for what longer training gives)")
    print(f"  see: xtalwatch status --state {state}")
