"""A long soak of the real service: memory growth, queue depth and latency over time.

    .venv/bin/python bench/bench_soak.py --minutes 30 --rate 5 --size 1280x960 --plot docs/img/soak.png
    .venv/bin/python bench/bench_latency.py --rate 20 --seconds 60   # the 20 images/s load run

A first model is trained on a small synthetic plate (as ``bench_latency.py`` does), then the
real ``xtalwatch run`` process watches a folder into which JPEGs arrive at a steady rate for the
whole run, each written in two parts as an imager does. Every 10 s the soak samples the memory
(PSS: resident, with shared pages split between processes) of the service and of all its child
processes (the preprocessing workers), and scrapes ``/metrics`` for the queue depth of every
stage. Latency is measured per image from the moment the writer closed the file to the moment
its prediction row was committed. Printed at the end: memory in the first and last fifth of the
run (after its first minute) and the growth between them, the largest queue depth, and p50 / p95
latency per fifth of the run; ``--plot`` draws all three over time.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from bench_latency import SUBCLASSES, train_first_model
from xtalwatch.tools.synth import generate_plates

SAMPLE_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _pss_mb(pid: int) -> float:
    """Proportional set size: resident memory, with pages shared between processes split among them
    (plain RSS would count the workers' shared torch and OpenCV pages once per worker)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else 0.0


def _tree_pss_mb(pid: int) -> tuple[float, float]:
    """(the service process, all of its descendants) PSS in MB."""
    seen, todo, kids = set(), _children(pid), 0.0
    while todo:
        child = todo.pop()
        if child in seen:
            continue
        seen.add(child)
        kids += _pss_mb(child)
        todo += _children(child)
    return _pss_mb(pid), kids


def _queue_depths(port: int) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^xtalwatch_queue_depth\{imager="[^"]*",stage="([^"]+)"\} ([0-9.e+-]+)$', text, re.M)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long images arrive")
    parser.add_argument("--rate", type=float, default=5.0, help="images per second")
    parser.add_argument("--size", default="1280x960")
    parser.add_argument("--plot", type=Path, help="write a PNG of memory, queue depth and latency over time")
    parser.add_argument("--frames", type=Path, help="render the frames into this folder once and reuse them "
                        "(rendering 9,000 frames of 1280x960 takes about 10 minutes on 2 cores)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    n = int(args.rate * args.minutes * 60)
    with tempfile.TemporaryDirectory(prefix="xtalwatch-soak-") as tmp:
        root = Path(tmp)
        print("training a first model ...", file=sys.stderr)
        state = train_first_model(root, size)
        frames = args.frames or root / "frames"
        rows = [p.relative_to(frames) for p in sorted(frames.rglob("*.jpg"))][:n] if frames.is_dir() else []
        if len(rows) < n:
            print(f"rendering {n} frames of {size[0]}x{size[1]} ...", file=sys.stderr)
            rows = [r.path for r in generate_plates(frames, plates=max(1, n // 96 + 1), layout="export", wells=96,
                                                    drops=1, inspections=1, size=size, seed=3,
                                                    write_labels=False, balance="even")[:n]]
        watch = root / "watch"
        watch.mkdir()
        port = _free_port()
        env = {**os.environ, "XTALWATCH_CLASSIFY__SUBCLASSES": '["' + '","'.join(SUBCLASSES) + '"]',
               "XTALWATCH_RETRAIN__ENABLED": "false", "XTALWATCH_LOGGING__LEVEL": "WARNING"}
        env.pop("XTALWATCH_CONFIG", None)
        log = open(root / "service.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "xtalwatch", "run", "--watch", str(watch), "--state",
                                 str(state), "--metrics-port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not _queue_depths(port) and time.monotonic() < deadline:
                time.sleep(0.5)
            closed_at: dict[str, float] = {}
            samples: list[tuple[float, float, float, dict[str, float]]] = []
            stop = threading.Event()

            def sample() -> None:
                t0 = time.monotonic()
                while not stop.is_set():
                    main_mb, kids_mb = _tree_pss_mb(proc.pid)
                    samples.append((time.monotonic() - t0, main_mb, kids_mb, _queue_depths(port)))
                    stop.wait(SAMPLE_SECONDS)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            start = time.monotonic()
            for k, row in enumerate(rows):
                time.sleep(max(0.0, start + k / args.rate - time.monotonic()))
                data = (frames / row).read_bytes()
                target = watch / row
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    time.sleep(0.02)
                    handle.write(data[len(data) // 2:])
                closed_at[str(target.resolve())] = time.time()
                if k % 1000 == 999:
                    print(f"  {k + 1}/{n} written, {(time.monotonic() - start) / 60:.1f} min", file=sys.stderr)
            time.sleep(20)  # let the last arrivals through before the final sample
            stop.set()
            sampler.join()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
            log.close()
        conn = sqlite3.connect(f"file:{state / 'catalogue.sqlite3'}?mode=ro", uri=True)
        result = conn.execute("SELECT i.path, MIN(p.created_at) FROM images i JOIN predictions p "
                              "ON p.image_id = i.id GROUP BY i.id").fetchall()
        conn.close()
        done = sorted((closed_at[p], created - closed_at[p]) for p, created in result if p in closed_at)
        t_close = np.array([c for c, _ in done]) - min(closed_at.values())
        lat = np.array([latency for _, latency in done])
        tracebacks = (root / "service.log").read_text(errors="replace").count("Traceback")
        t = np.array([s[0] for s in samples])
        rss = np.array([s[1] + s[2] for s in samples])
        main_rss = np.array([s[1] for s in samples])
        depth = np.array([sum(v for k, v in s[3].items() if k != "settle") for s in samples])
        warm = t >= min(60.0, t[-1] / 2)  # the pool's workers start with the first images: growth counts after that
        rss_w, main_w = rss[warm], main_rss[warm]
        fifth = max(1, len(rss_w) // 5)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"arrivals: {n} JPEG {size[0]}x{size[1]} at {args.rate:g}/s for {args.minutes:g} min; "
              f"classified {len(lat)}; tracebacks in the service log: {tracebacks}")
        print(f"memory (PSS), service + workers, after the first minute: first fifth {rss_w[:fifth].mean():.0f} MB, "
              f"last fifth {rss_w[-fifth:].mean():.0f} MB, growth {rss_w[-fifth:].mean() - rss_w[:fifth].mean():+.1f} MB "
              f"(main process alone {main_w[-fifth:].mean() - main_w[:fifth].mean():+.1f} MB)")
        print(f"queue depth (ingest + preprocess + classify): max {depth.max():.0f}, mean {depth.mean():.1f}")
        span = args.minutes * 60 / 5
        for i in range(5):
            part = lat[(t_close >= i * span) & (t_close < (i + 1) * span)]
            if len(part):
                print(f"  minutes {i * span / 60:4.1f}-{(i + 1) * span / 60:<4.1f} latency p50 "
                      f"{np.percentile(part, 50):.3f} s, p95 {np.percentile(part, 95):.3f} s ({len(part)} images)")
        if args.plot:
            from xtalwatch.figures import pyplot, save_figure

            plt = pyplot()
            fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
            axes[0].plot(t / 60, rss, label="service + workers")
            axes[0].plot(t / 60, main_rss, label="service process")
            axes[0].set_ylabel("memory, PSS (MB)")
            axes[0].legend()
            axes[1].plot(t / 60, depth)
            axes[1].set_ylabel("queue depth")
            axes[2].plot(t_close / 60, lat, ".", markersize=2, alpha=0.4)
            axes[2].set_ylabel("file closed → result (s)")
            axes[2].set_xlabel("minutes")
            fig.suptitle(f"soak: {args.rate:g} images/s of {size[0]}x{size[1]} for {args.minutes:g} min, 2 cores")
            print(f"plot: {save_figure(fig, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
