"""Server time of the review app's pages at lab scale: a 1,536-well plate map among 100,000 images.

    .venv/bin/python bench/bench_platemap.py --images 100000 --repeats 50

The catalogue is filled through the store's own functions (``Catalogue.record_image`` per image,
``insert_predictions`` in batches), as the service fills it: one 1,536-well plate imaged at several
inspections, and as many 96-well plates as it takes to reach ``--images``, every image classified
(a fifth of them twice, by an older and a newer model, so that "newest prediction" has work to do).

Each page is requested through the very app the service serves (``observe.web.build_app`` with
the review routes), in process over ASGI, so the figure is the server's time: the named queries
on a read-only connection, the per-well rule, and the template. The median and 95th percentile of
``--repeats`` requests are printed as a markdown table. Goal: the plate map in <= 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from xtalwatch.config import load_settings
from xtalwatch.observe.metrics import Metrics
from xtalwatch.observe.web import build_app
from xtalwatch.plate import ImageIdentity, well_from_index
from xtalwatch.preprocess.probe import Probe
from xtalwatch.review.app import ReviewContext
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.outcomes import plate_wells
from xtalwatch.store.predictions import StoredCall, insert_predictions
from xtalwatch.store.report import totals
from xtalwatch.store.review import plate_by_barcode, plate_summaries

CLASSES = ("clear", "precipitate", "crystals", "other")
BIG = "BIG1536"


def fill(cat: Catalogue, n_images: int, inspections: int, seed: int = 0) -> dict[str, int]:
    """``n_images`` images: the 1,536-well plate at ``inspections`` inspections first, then 96-well plates."""
    rng = np.random.default_rng(seed)
    probe = Probe("jpeg", 1280, 960, 3)
    plan: list[tuple[str, int, int]] = [(BIG, w, i) for i in range(1, inspections + 1) for w in range(1, 1537)]
    plate = 0
    while len(plan) < n_images:
        plate += 1
        plan += [(f"P{plate:04d}", w, i) for i in range(1, inspections + 1) for w in range(1, 97)]
    plan = plan[:n_images]
    batch: list[StoredCall] = []
    started = time.perf_counter()
    for k, (barcode, well_no, inspection) in enumerate(plan):
        wells = 1536 if barcode == BIG else 96
        identity = ImageIdentity(barcode, well_from_index(well_no, wells), 1, inspection, adapter="bench")
        new = cat.record_image(f"/imager/{barcode}/{well_no}/{inspection}.jpg", 250_000, k, f"{k:064x}", probe,
                               identity, completed_at=float(k))
        p = rng.dirichlet(np.ones(len(CLASSES)) * 0.6)
        top = int(p.argmax())
        probs = dict(zip(CLASSES, p.round(4).tolist(), strict=True))
        if k % 5 == 0:
            batch.append(StoredCall(new.image_id, "v0", CLASSES[(top + 1) % 4], float(p.max()), probs))
        batch.append(StoredCall(new.image_id, "v1", CLASSES[top], float(p[top]), probs, bool(p[top] < 0.6)))
        if len(batch) >= 5000:
            insert_predictions(cat, batch, time.time())
            batch.clear()
    insert_predictions(cat, batch, time.time())
    return {"images": len(plan), "plates": plate + 1, "fill_seconds": round(time.perf_counter() - started, 1)}


async def _time(app: object, url: str, repeats: int) -> tuple[list[float], list[float], int]:
    """Wall and CPU seconds of each request (CPU: this process's, all threads; on a shared machine it is
    what the request costs, while wall time also counts waiting for a core), and the page's size."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        first = await client.get(url)  # warm: templates compiled, pages of the database in the cache
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            response = await client.get(url)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            assert response.status_code == 200, (url, response.status_code)
    return wall, cpu, len(first.content)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--inspections", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--state", type=Path, help="reuse (or build) the catalogue in this folder")
    args = parser.parse_args()

    state = args.state or Path(tempfile.mkdtemp(prefix="bench-platemap-"))
    settings = load_settings(None, {"state.dir": state, "logging.level": "WARNING"})
    cat = Catalogue(state)
    filled = fill(cat, args.images, args.inspections) if totals(cat)["images"] == 0 else None
    counts = totals(cat)
    metrics = Metrics(process_collectors=False)
    app = build_app(metrics, review=ReviewContext(settings=settings, state_dir=state, catalogue=cat, metrics=metrics))
    gc.freeze()  # as the service does once started: long-lived objects out of the collector's full passes
    big = plate_by_barcode(cat, BIG)
    assert big is not None, f"{state} holds no plate {BIG}: use an empty --state"
    big_well = next(i for i, name in plate_wells(cat, big["id"]).items() if name == "P24")
    pages = [
        ("plate map, 1,536 wells, all inspections", f"/plates/{BIG}"),
        ("plate map, 1,536 wells, inspection 3", f"/plates/{BIG}?inspection=3"),
        ("plate map, 96 wells", "/plates/P0001"),
        ("plate list", "/plates"),
        ("well page", f"/wells/{big_well}"),
        ("export CSV, 1,536 wells", f"/plates/{BIG}/export.csv"),
        ("hits feed", "/hits"),
    ]
    print(f"\n{counts['images']:,} images in {len(plate_summaries(cat, ['crystals']))} plates; "
          f"{counts['predictions']:,} predictions"
          + (f"; filled in {filled['fill_seconds']} s" if filled else ""))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{args.repeats} requests each after one warm-up\n")
    print(f"load average before: {os.getloadavg()[0]:.1f}\n")
    print("| page | median (ms) | p95 (ms) | CPU median (ms) | CPU p95 (ms) | bytes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, url in pages:
        wall, cpu, size = asyncio.run(_time(app, url, args.repeats))
        print(f"| {name} | {statistics.median(wall) * 1000:.1f} | {_p95(wall) * 1000:.1f} "
              f"| {statistics.median(cpu) * 1000:.1f} | {_p95(cpu) * 1000:.1f} | {size:,} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    print(f"\ncommand: .venv/bin/python bench/bench_platemap.py --images {args.images} "
          f"--inspections {args.inspections} --repeats {args.repeats}")
    cat.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
