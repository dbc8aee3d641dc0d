"""A simulated site on this machine: N imagers, each with its own agent, on one PostgreSQL catalogue.

    .venv/bin/python bench/bench_site.py                      # both modes, 4 imagers x 20 images/s x 60 s
    .venv/bin/python bench/bench_site.py --mode postgresql --imagers 2 --rate 5 --duration 10 --json site.json

Mode ``postgresql``: a throwaway PostgreSQL server (tests/postgres_server.py) holds the catalogue;
``--imagers`` real ``xtalwatch run`` agents (bay-1, bay-2, ...) each watch their own folder, share one
model registry (``site.models_dir``) and write as their ``site.imager``. Mode ``sqlite``: the same load
on one imager with the default SQLite catalogue. Either way a tiny first model is trained once (or
taken from ``--model-dir``), the frames are rendered before any agent starts, and after every agent
logged "ready: start-up scan done" one feeder thread per imager puts ``--rate`` complete JPEGs a second
into its folder (hidden temp name, then a rename) for ``--duration`` seconds. Then the bench waits, at
most ``--drain`` seconds, until every image is classified.

Latency is per image, from the feeder's rename (the file complete on disk) to its first prediction's
``created_at``: ``images.completed_at`` is the moment the watcher handed the settled file to ingest,
which already includes the settle wait. While the agents run, PostgreSQL's connections to the
catalogue database are sampled every second (``pg_stat_activity``, the bench's own excluded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from loop_helpers import TINY, env_for, train_first_model  # noqa: E402
from postgres_server import PostgresServer, start_server  # noqa: E402
from xtalwatch.store.catalogue import CATALOGUE_FILE  # noqa: E402
from xtalwatch.tools.synth import generate_plates  # noqa: E402

READY_LINE = "ready: start-up scan done"
READY_TIMEOUT_SECONDS = 300.0  # several agents importing torch at once on 2 cores
STOP_TIMEOUT_SECONDS = 60.0
BENCH_APP = "xtalwatch-bench-site"  # our own connections' application_name, left out of the counts
BALANCE = "clear=1,needles=1,precipitate=0.5,plates=0.5,dark=0.01"  # as the site test's synthetic imager
UNFINISHED_SQL = """SELECT COUNT(*) FROM images i WHERE i.status = 'catalogued' OR (i.status = 'preprocessed'
                    AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.image_id = i.id))"""


# -- the pieces: frames, model, agents, feeders ---------------------------------------------------
def render_frames(staging: Path, imagers: int, per_imager: int, size: tuple[int, int]) -> list[list[Path]]:
    """Distinct frames for each imager (its own seed, so its own plates and bytes), relative to its folder."""
    out = []
    for n in range(imagers):
        folder = staging / f"bay-{n + 1}"
        rows = generate_plates(folder, plates=math.ceil(per_imager / 96), layout="export", wells=96, drops=1,
                               inspections=1, size=size, seed=1000 + n, balance=BALANCE, write_labels=False)
        out.append([Path(r.path) for r in rows[:per_imager]])
    return out


def first_model(root: Path, model_dir: Path | None) -> Path:
    """A model registry with a served model: ``model_dir`` when it has one, else trained now (into it, if given)."""
    if model_dir is not None and (model_dir / "current").exists():
        return model_dir
    print("training a tiny first model ...", file=sys.stderr)
    trained = train_first_model(root / "first-model") / "models"
    if model_dir is None:
        return trained
    shutil.copytree(trained, model_dir, symlinks=True, dirs_exist_ok=True)
    return model_dir


@dataclass
class Agent:
    imager: str
    watch: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def ready(self) -> bool:
        return READY_LINE in self.log.read_text(errors="replace")


def start_agent(root: Path, imager: str, models: Path, url: str | None, workers: int) -> Agent:
    """One ``xtalwatch run`` for ``imager``, in its own process group (its preprocessing workers with it)."""
    watch = (root / "watch" / imager).resolve()
    watch.mkdir(parents=True)
    overrides = {k: v for k, v in TINY.items() if k != "metrics.port"}
    overrides.update({"site.imager": imager, "site.agent": f"agent-{imager}", "site.models_dir": str(models),
                      "ingest.workers": workers})
    if url:
        overrides["catalogue.url"] = url
    env = env_for(overrides)
    env.pop("XTALWATCH_CONFIG", None)
    log = root / "logs" / f"{imager}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "xtalwatch", "run", "--watch", str(watch), "--state", str(root / "state" / imager),
           "--metrics-port", "0"]
    with open(log, "wb") as handle:
        proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    return Agent(imager, watch, log, proc)


def stop_agents(agents: list[Agent]) -> None:
    """SIGTERM to every agent at once, then SIGKILL to the process group of any still running."""
    for agent in agents:
        if agent.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                agent.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for agent in agents:
        try:
            agent.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(agent.proc.pid, signal.SIGKILL)  # its own group (start_new_session): leftover workers too
        agent.proc.wait()


def wait_ready(agents: list[Agent]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not all(a.ready() for a in agents):
        dead = [a for a in agents if a.proc.poll() is not None]
        if dead:
            raise RuntimeError(f"agent {dead[0].imager} exited ({dead[0].proc.returncode}):\n"
                               f"{dead[0].log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"agents not ready after {READY_TIMEOUT_SECONDS:.0f} s: "
                               f"{[a.imager for a in agents if not a.ready()]}")
        time.sleep(0.5)


def feed(source: Path, frames: list[Path], watch: Path, rate: float, start: float, stop: threading.Event,
         written: dict[str, float]) -> None:
    """Put ``frames`` into ``watch`` at ``rate``/s from ``start`` (monotonic), each complete at once; record when."""
    for k, rel in enumerate(frames):
        if stop.wait(max(0.0, start + k / rate - time.monotonic())):
            return
        target = watch / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp")  # ignored by the watcher (watch.ignore_globs)
        shutil.copyfile(source / rel, temp)
        os.replace(temp, target)
        written[str(target)] = time.time()


# -- the catalogue, read from outside ---------------------------------------------------------------
Query = Callable[[str], list[tuple[Any, ...]]]


@contextlib.contextmanager
def reader(url: str | None, state: Path) -> Iterator[Query]:
    """Plain SQL against the catalogue the agents write (PostgreSQL, or the one SQLite file, read-only)."""
    if url:
        import psycopg

        pg = psycopg.connect(url, autocommit=True, application_name=BENCH_APP)
        try:
            yield lambda sql: pg.execute(sql).fetchall()
        finally:
            pg.close()
        return
    lite = sqlite3.connect(f"file:{state / CATALOGUE_FILE}?mode=ro", uri=True, timeout=30)
    try:
        yield lambda sql: lite.execute(sql).fetchall()
    finally:
        lite.close()


@dataclass
class ConnectionSampler:
    """Connections to the catalogue database in use, once a second, from a thread of its own."""

    url: str
    samples: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, application_name=BENCH_APP) as conn:
            while not self._stop.is_set():
                rows = conn.execute("""SELECT COALESCE(NULLIF(application_name, ''), '(none)'), COUNT(*)
                                       FROM pg_stat_activity WHERE datname = current_database()
                                       AND application_name <> %s GROUP BY 1""", (BENCH_APP,)).fetchall()
                by_app = {name: int(n) for name, n in rows}
                self.samples.append((time.time(), sum(by_app.values()), by_app))
                self._stop.wait(1.0)

    def summary(self, since: float, until: float) -> dict[str, Any]:
        window = [s for s in self.samples if since <= s[0] <= until] or self.samples
        if not window:
            return {}
        apps = sorted({a for _, _, by_app in window for a in by_app})
        return {"samples": len(window), "max": max(n for _, n, _ in window),
                "mean": round(float(np.mean([n for _, n, _ in window])), 1),
                "max_by_application": {a: max(b.get(a, 0) for _, _, b in window) for a in apps}}


# -- one mode ----------------------------------------------------------------------------------------
def run_mode(mode: str, root: Path, staging: Path, frames: list[list[Path]], models: Path, server: PostgresServer | None,
             rate: float, duration: float, drain: float, workers: int) -> dict[str, Any]:
    """Start the agents, feed them, wait for the results; the measurements of this mode."""
    imagers = len(frames)
    url = server.create_database() if server is not None else None
    site_models = root / "models"  # a copy: agents may write to the registry they share
    shutil.copytree(models, site_models, symlinks=True)
    agents: list[Agent] = []
    sampler = ConnectionSampler(url) if url else None
    stop_feeding = threading.Event()
    feeders: list[threading.Thread] = []
    try:
        if url:  # the schema exists before several agents start at once
            from xtalwatch.store.catalogue import Catalogue

            Catalogue(root / "schema", url=url).close()
        for n in range(imagers):
            agents.append(start_agent(root, f"bay-{n + 1}", site_models, url, workers))
        print(f"[{mode}] waiting for {imagers} agent(s) to be ready ...", file=sys.stderr)
        wait_ready(agents)
        if sampler is not None:
            sampler.start()
        written: dict[str, float] = {}
        per_imager = int(rate * duration)
        print(f"[{mode}] feeding {imagers} x {rate:g} images/s for {duration:g} s ...", file=sys.stderr)
        start_mono, feed_start = time.monotonic() + 0.5, time.time() + 0.5
        for agent, rels in zip(agents, frames, strict=True):
            thread = threading.Thread(target=feed, daemon=True, args=(staging / agent.imager, rels[:per_imager],
                                      agent.watch, rate, start_mono, stop_feeding, written))
            feeders.append(thread)
            thread.start()
        for thread in feeders:
            thread.join()
        feed_end = time.time()
        fed = len(written)
        print(f"[{mode}] fed {fed} in {feed_end - feed_start:.1f} s; waiting up to {drain:g} s for results ...",
              file=sys.stderr)
        with reader(url, root / "state" / "bay-1") as query:
            deadline = time.monotonic() + drain
            while True:
                images = query("SELECT COUNT(*) FROM images")[0][0]
                rejected = query("SELECT COUNT(*) FROM rejected")[0][0]
                unfinished = query(UNFINISHED_SQL)[0][0]
                drained = images + rejected >= fed and unfinished == 0
                if drained or time.monotonic() > deadline:
                    break
                dead = [a.imager for a in agents if a.proc.poll() is not None]
                if dead:
                    raise RuntimeError(f"agents exited during the run: {dead}")
                time.sleep(1.0)
            drain_end = time.time()
            rows = query("""SELECT i.path, i.status, (SELECT MIN(p.created_at) FROM predictions p
                            WHERE p.image_id = i.id) FROM images i""")
            rejected = query("SELECT COUNT(*) FROM rejected")[0][0]
        if sampler is not None:
            sampler.stop()
    finally:
        stop_feeding.set()
        for thread in feeders:
            thread.join(5)
        if sampler is not None:
            sampler.stop()
        stop_agents(agents)
        if server is not None and url is not None:
            with contextlib.suppress(Exception):
                server.drop_database(url)

    done = {path: created for path, _status, created in rows if path in written}
    firsts = np.array(sorted(c for c in done.values() if c is not None))
    latency = np.array([done[p] - written[p] for p in done if done[p] is not None])
    classified = len(latency)
    by_feed_end = int((firsts <= feed_end).sum()) if classified else 0
    end = float(firsts[-1]) if drained and classified else drain_end
    tracebacks = sum(a.log.read_text(errors="replace").count("Traceback") for a in agents)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(latency, q)), 2) if classified else None

    result: dict[str, Any] = {
        "mode": mode, "imagers": imagers, "rate_per_imager": rate, "duration_s": duration,
        "ingest_workers_per_agent": workers, "cpu_count": os.cpu_count(),
        "fed": fed, "feed_s": round(feed_end - feed_start, 1), "catalogued": len(done), "rejected": rejected,
        "classified": classified, "flagged": sum(1 for p, s, _ in rows if p in written and s == "flagged"),
        "backlog_at_feed_end": fed - by_feed_end, "drained": drained,
        "drain_s": round(drain_end - feed_end, 1),
        "throughput_feed_per_s": round(by_feed_end / (feed_end - feed_start), 2),
        "throughput_until_drained_per_s": round(classified / max(end - feed_start, 1e-9), 2),
        "latency_p50_s": pct(50), "latency_p95_s": pct(95), "latency_max_s": pct(100),
        "tracebacks_in_agent_logs": tracebacks,
    }
    if sampler is not None:
        result["db_connections"] = sampler.summary(feed_start, drain_end)
    return result


# -- the report --------------------------------------------------------------------------------------
ROWS = [("imagers x rate", lambda r: f"{r['imagers']} x {r['rate_per_imager']:g}/s for {r['duration_s']:g} s"),
        ("CPU count", lambda r: r["cpu_count"]),
        ("preprocessing processes per agent (ingest.workers)", lambda r: r["ingest_workers_per_agent"]),
        ("images fed", lambda r: f"{r['fed']} in {r['feed_s']} s"),
        ("images catalogued", lambda r: r["catalogued"]),
        ("rejected", lambda r: r["rejected"]),
        ("classified", lambda r: r["classified"]),
        ("flagged by preprocessing (never classified)", lambda r: r["flagged"]),
        ("backlog at end of feeding", lambda r: r["backlog_at_feed_end"]),
        ("throughput over the feed window (img/s)", lambda r: r["throughput_feed_per_s"]),
        ("throughput until drained (img/s)", lambda r: r["throughput_until_drained_per_s"]),
        ("drained", lambda r: f"{'yes' if r['drained'] else 'no'} ({r['drain_s']} s after feeding)"),
        ("latency p50 / p95 / max (s)", lambda r: f"{r['latency_p50_s']} / {r['latency_p95_s']} / {r['latency_max_s']}"),
        ("DB connections max / mean", lambda r: (f"{r['db_connections']['max']} / {r['db_connections']['mean']}"
                                                 if r.get("db_connections") else "-")),
        ("DB connections max by application", lambda r: (", ".join(f"{a}: {n}" for a, n in
                                                         r["db_connections"]["max_by_application"].items())
                                                         if r.get("db_connections") else "-")),
        ("tracebacks in agent logs", lambda r: r["tracebacks_in_agent_logs"])]


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| | " + " | ".join(r["mode"] for r in results) + " |", "|---|" + "---|" * len(results)]
    lines += [f"| {name} | " + " | ".join(str(cell(r)) for r in results) + " |" for name, cell in ROWS]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--imagers", type=int, default=4, help="imagers (agents) in postgresql mode")
    parser.add_argument("--rate", type=float, default=20.0, help="images per second per imager")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of feeding")
    parser.add_argument("--drain", type=float, default=300.0, help="seconds to wait for results after feeding")
    parser.add_argument("--workers", type=int, default=1, help="ingest.workers (preprocessing processes) per agent")
    parser.add_argument("--size", default="320x240", help="frame size WxH")
    parser.add_argument("--model-dir", type=Path, help="a model registry to reuse; trained into it when it has none")
    parser.add_argument("--out", type=Path, help="keep frames, states and agent logs here (default: a temp folder, removed)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    modes = ["postgresql", "sqlite"] if args.mode == "both" else [args.mode]

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM):  # a kill cleans up as Ctrl-C does, even if SIGINT came ignored
        signal.signal(signum, terminate)
    root = args.out.resolve() if args.out else Path(tempfile.mkdtemp(prefix="xtalwatch-site-"))
    root.mkdir(parents=True, exist_ok=True)
    server: PostgresServer | None = None
    results = []
    try:
        models = first_model(root, args.model_dir.resolve() if args.model_dir else None)
        imagers = args.imagers if "postgresql" in modes else 1
        per_imager = int(args.rate * args.duration)
        print(f"rendering {imagers} x {per_imager} frames of {width}x{height} ...", file=sys.stderr)
        staging = root / "frames"
        frames = render_frames(staging, imagers, per_imager, (width, height))
        for mode in modes:
            if mode == "postgresql" and server is None:
                server = start_server()
            mode_frames = frames if mode == "postgresql" else frames[:1]
            results.append(run_mode(mode, root / mode, staging, mode_frames, models,
                                    server if mode == "postgresql" else None, args.rate, args.duration, args.drain,
                                    args.workers))
            print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"frames {width}x{height} JPEG")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
