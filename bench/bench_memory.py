"""Peak resident memory of ``xtalwatch evaluate`` and ``xtalwatch train``, per phase, against the image count.

Issue 14: evaluate on 750 frames of 128 px held 10 GB. The goal: peak RSS ≤ 2 GB for 5,000
images at 128 px, not growing with the number of images beyond the uint8 crop caches. So each
count gets its own ImageFolder of ready crops (``--preprocess none``), and each command runs in
its own process (separate peaks) while this script samples ``/proc/<pid>/status`` every 0.1 s:

  VmHWM     the kernel's exact peak RSS of the process (anonymous + file-backed)
  anon      sampled peak RssAnon: heap, tensors, copies; this must not grow with N
  file      RssFile at that moment: pages of the memory-mapped crop caches (and libraries),
            which the kernel can drop at will; these grow with N by design

Phases of ``evaluate`` are cut at its own output lines (the data log line, the SimCLR log line,
then one printed row per method), so the peak of each method is its own. ``train`` reuses the
crop cache evaluate decoded, so its peak is the training loop's.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_memory.py --counts 1000,5000 --size 128

Run an older tree's code with ``PYTHONPATH=<old>/daemon`` in front (the children inherit it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("clear", "needles", "plates", "precipitate")
METHODS = ["raw_pixels_logreg", "random_encoder_linear", "supervised_scratch", "simclr_linear", "simclr_knn",
           "simclrv2_finetune", "simclrv2_distill"]


def make_imagefolder(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` ready crops of ``size`` px in ``root/<class>/*.png``: a disc and class-made marks on noise."""
    done = root / ".complete"
    if done.is_file() and done.read_text() == f"{n} {size} {seed}":
        return root
    rng = np.random.default_rng(seed)
    for i in range(n):
        cls = CLASSES[i % len(CLASSES)]
        img = rng.integers(90, 140, (size, size, 3), np.uint8)
        cv2.circle(img, (size // 2, size // 2), int(size * 0.42), (170, 160, 150), -1)
        for _ in range(int(rng.integers(2, 8))):
            x, y = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
            r = int(rng.integers(2, max(3, size // 10)))
            if cls == "needles":
                cv2.line(img, (x - r, y - 2 * r), (x + r, y + 2 * r), (40, 60, 200), 1)
            elif cls == "plates":
                cv2.rectangle(img, (x - r, y - r), (x + r, y + r), (200, 120, 40), -1)
            elif cls == "precipitate":
                cv2.circle(img, (x, y), max(1, r // 2), (60, 60, 60), -1)
        path = root / cls / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)
    done.write_text(f"{n} {size} {seed}")
    return root


def _status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM of ``pid`` in KiB ({} once it has gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    peak_anon_mib: float = 0.0
    file_at_peak_mib: float = 0.0
    peak_rss_mib: float = 0.0  # sampled VmRSS


@dataclass
class Run:
    command: str
    n_images: int
    size: int
    seconds: float
    vmhwm_mib: float  # exact peak RSS of the process
    rc: int
    phases: list[Phase] = field(default_factory=list)
    tail: str = ""


def _phase_of(line: str) -> str | None:
    """The name of the phase this output line ends, or None for any other line."""
    words = line.split()
    if "evaluate:" in line and " classes, " in line:
        return "load (decode/cache, split)"
    if "evaluate: SimCLR done" in line:
        return "simclr"
    if words and words[0] in METHODS:
        return words[0]
    return None


def run_measured(argv: list[str], command: str, n: int, size: int, timeout: float) -> Run:
    """Run one xtalwatch command, sampling its memory; phases end at the lines :func:`_phase_of` knows."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    marks: list[tuple[float, str]] = []
    lines: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            name = _phase_of(line)
            if name is not None:
                marks.append((time.perf_counter(), name))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    samples: list[tuple[float, dict[str, int]]] = []
    hwm = 0
    while proc.poll() is None:
        st = _status(proc.pid)
        if st:
            samples.append((time.perf_counter(), st))
            hwm = max(hwm, st.get("VmHWM", 0))
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            break
        time.sleep(0.1)
    proc.wait()
    thread.join(timeout=5)
    end = time.perf_counter()
    marks.append((end, "rest" if command == "evaluate" else "train (cache hit, SimCLR steps)"))
    phases, start = [], t0
    for t_end, name in marks:
        seg = [s for t, s in samples if start <= t <= t_end]
        ph = Phase(name, round(t_end - start, 1))
        if seg:
            top = max(seg, key=lambda s: s.get("RssAnon", 0))
            ph.peak_anon_mib = round(top.get("RssAnon", 0) / 1024, 1)
            ph.file_at_peak_mib = round(top.get("RssFile", 0) / 1024, 1)
            ph.peak_rss_mib = round(max(s.get("VmRSS", 0) for s in seg) / 1024, 1)
        phases.append(ph)
        start = t_end
    return Run(command, n, size, round(end - t0, 1), round(hwm / 1024, 1), proc.returncode, phases,
               "\n".join(lines[-15:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="1000,5000", help="image counts, comma-separated")
    ap.add_argument("--size", type=int, default=128, help="crop side in px")
    ap.add_argument("--batch-size", type=int, default=256, help="SimCLR images per step (the default config's)")
    ap.add_argument("--steps", type=int, default=2, help="SimCLR steps per run (train.max_steps)")
    ap.add_argument("--commands", default="evaluate,train", help="evaluate, train or both")
    ap.add_argument("--work", type=Path, default=Path("/tmp/xtalwatch-bench-memory"), help="images and run folders")
    ap.add_argument("--extra-config", default="", help="more YAML lines under train:, e.g. 'max_memory_gb: 4'")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per command")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    config = work / "bench.yaml"
    extra = "".join(f"  {line.strip()}\n" for line in args.extra_config.split(";") if line.strip())
    config.write_text(f"state:\n  dir: {work / 'state'}\ntrain:\n  max_steps: {args.steps}\n  min_images: 2\n{extra}")
    exe = [sys.executable, "-m", "xtalwatch"]
    runs: list[Run] = []
    for n in [int(c) for c in args.counts.split(",")]:
        images = make_imagefolder(work / f"images-{n}-{args.size}", n, args.size)
        out = work / f"eval-{n}-{args.size}"
        for command in args.commands.split(","):
            if command == "evaluate":
                argv = exe + ["evaluate", str(images), "--config", str(config), "--log-level", "INFO",
                              "--preprocess", "none", "--image-size", str(args.size), "--batch-size",
                              str(args.batch_size), "--label-fraction", "0.1", "--supervised-epochs", "1",
                              "--min-steps", "2", "--distill-epochs", "0", "--methods", ",".join(METHODS),
                              "--no-progress", "--out", str(out), "--json", str(out / "table.json")]
            else:
                argv = exe + ["train", "--images", str(images), "--config", str(config), "--preprocess", "none",
                              "--image-size", str(args.size), "--batch-size", str(args.batch_size), "--steps",
                              str(args.steps), "--cache", str(out / "cache"), "--out", str(work / f"train-{n}"),
                              "--no-resume", "--no-progress", "--min-images", "2"]
            run = run_measured(argv, command, n, args.size, args.timeout)
            runs.append(run)
            print(f"\n{command} N={n} S={args.size}: rc {run.rc}, {run.seconds} s, peak RSS (VmHWM) "
                  f"{run.vmhwm_mib:.0f} MiB", flush=True)
            for ph in run.phases:
                print(f"  {ph.name:34s} {ph.seconds:7.1f} s  anon {ph.peak_anon_mib:7.0f} MiB  "
                      f"+ file {ph.file_at_peak_mib:5.0f} MiB  (RSS max {ph.peak_rss_mib:.0f})", flush=True)
            if run.rc != 0:
                print(run.tail, flush=True)
    if args.json is not None:
        meta = {"python": sys.version.split()[0], "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                "pythonpath": os.environ.get("PYTHONPATH", ""), "batch_size": args.batch_size, "steps": args.steps}
        args.json.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=1))
    return 0 if all(r.rc == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
