"""A whole imaging run: plan every frame, then render it in a pool, as fast as possible or paced.

The plan is a pure function of the arguments: each frame carries its own seeds (derived from
the run seed and its plate, well, drop and inspection), so the bytes written do not depend on
how many workers there are or in which order they finish.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from xtalwatch.tools.synth import layouts
from xtalwatch.tools.synth.render import render_frame
from xtalwatch.tools.synth.scene import STYLES, sample_scene
from xtalwatch.tools.synth.timeline import parse_mix, sample_timeline
from xtalwatch.tools.synth.writer import LabelRow, LabelWriter, encode, write_file, write_partially

__all__ = ["Job", "default_labels_path", "generate_plates", "plan_jobs", "render_job"]

# Which imager look each layout's plates get: (marco, minstrel, vmxi) weights.
_STYLE_WEIGHTS = {"rockmaker": (0.6, 0.2, 0.2), "export": (0.4, 0.3, 0.3), "minstrel": (0.15, 0.7, 0.15),
                  "imagefolder": (0.4, 0.35, 0.25)}


@dataclass(frozen=True)
class Job:
    """Everything needed to render and place one frame, independent of any other."""

    row: LabelRow
    state: str  # the drop's real state (differs from row.label only for dark frames)
    growth: float
    style: str
    colour: bool
    size: tuple[int, int]  # (width, height)
    scene_seed: tuple[int, ...]
    content_seed: int
    frame_seed: tuple[int, ...]


def default_labels_path(out_dir: Path) -> Path:
    """Beside the image tree, never inside it: ``OUT_DIR/../<name>_labels.csv``."""
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f"{out_dir.name}_labels.csv"


def _look(rng: np.random.Generator, weights: tuple[float, ...]) -> tuple[str, bool]:
    p = np.asarray(weights) / sum(weights)
    style = STYLES[int(rng.choice(len(STYLES), p=p))]
    return style, style != "vmxi" and bool(rng.random() < 0.85)


def plan_jobs(*, plates: int, layout: str, wells: int = 96, drops: int = 3, inspections: int = 1,
              size: tuple[int, int] = (512, 512), seed: int = 0, balance: str | Mapping[str, float] | None = None,
              imagefolder: bool = False) -> list[Job]:
    """Every frame of the run, in the order an imager takes them (inspection, plate, well, drop).

    ``balance`` None is a screen's mix, or ``even`` for an ImageFolder: a classification set
    wants every class, where a screen would leave the crystal folders nearly empty.
    """
    if plates < 1 or drops < 1 or inspections < 1:
        raise ValueError("plates, drops and inspections must each be >= 1")
    mix = parse_mix("even" if balance is None and imagefolder else balance)
    rows, cols = layouts.well_grid(wells)
    plate_list = layouts.make_plates(seed, layout, plates)
    per_drop: list[list[Job]] = []
    for plate in plate_list:
        plate_look = _look(np.random.default_rng([seed, 1, plate.index]), _STYLE_WEIGHTS[layout])
        for w in range(rows * cols):
            row, col = divmod(w, cols)
            well = layouts.well_name(row, col + 1)
            for d in range(1, drops + 1):
                key = (seed, plate.index, w, d)
                style, colour = (_look(np.random.default_rng([*key, 5]), _STYLE_WEIGHTS["imagefolder"])
                                 if imagefolder else plate_look)
                frames = sample_timeline(np.random.default_rng([*key, 3]), inspections, mix.weights,
                                         crystals_after=mix.crystals_after)
                content_seed = int(np.random.default_rng([*key, 2]).integers(0, 2**63))
                jobs = []
                for k, frame in enumerate(frames, start=1):
                    path = (f"{frame.label}/{plate.barcode}_{well}_d{d}_i{k:02d}.png" if imagefolder
                            else layouts.relpath(layout, plate, row, col, d, k, wells))
                    jobs.append(Job(LabelRow(path, frame.label, plate.barcode, well, d, k), frame.state,
                                    frame.growth, style, colour, size, (*key, 1), content_seed, (*key, 4, k)))
                per_drop.append(jobs)
    return [drop_jobs[k] for k in range(inspections) for drop_jobs in per_drop]


def render_job(job: Job) -> np.ndarray:
    """The frame's pixels: BGR uint8, or single-channel uint8 for a greyscale imager."""
    width, height = job.size
    scene = sample_scene(np.random.default_rng(job.scene_seed), width, height, job.style, job.colour)
    img = render_frame(scene, job.state, content_seed=job.content_seed, growth=job.growth,
                       frame_rng=np.random.default_rng(job.frame_seed), dark=job.row.label == "dark")
    return img if job.colour else img[..., 0]


def _encoded(job: Job) -> bytes:
    return encode(render_job(job), job.row.path.rsplit(".", 1)[-1])


def _render_and_write(args: tuple[Path, Job]) -> None:
    out_dir, job = args
    write_file(out_dir / job.row.path, _encoded(job))


def _quiet_worker() -> None:
    # Ctrl-C is the parent's to handle; workers just get terminated. One OpenCV thread per
    # worker, since the pool already uses every core.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)


def _pool(workers: int) -> multiprocessing.pool.Pool:
    # forkserver, not fork: the demo and the service call this from a process with threads.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context.Pool(workers, initializer=_quiet_worker)


def _run_batch(out_dir: Path, jobs: list[Job], workers: int, progress: Callable[[int], None] | None) -> None:
    if workers <= 1:
        for job in jobs:
            _render_and_write((out_dir, job))
            if progress:
                progress(1)
        return
    pool = _pool(workers)
    try:
        for _ in pool.imap_unordered(_render_and_write, [(out_dir, j) for j in jobs], chunksize=8):
            if progress:
                progress(1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _run_paced(out_dir: Path, jobs: list[Job], workers: int, rate: float, stop: threading.Event,
               labels: LabelWriter | None, progress: Callable[[int], None] | None) -> int:
    """Write ``rate`` files per second, each partially then complete; returns how many were written."""
    pause = min(0.25, 0.5 / rate)
    pool = _pool(workers) if workers > 1 else None
    ahead: deque = deque()
    todo = iter(jobs)
    written = 0
    start = time.monotonic()
    try:
        while not stop.is_set():
            # Keep a bounded number of frames rendering ahead, never the whole run in memory.
            while len(ahead) < max(2, 2 * workers) and (job := next(todo, None)) is not None:
                ahead.append((job, pool.apply_async(_encoded, (job,)) if pool else None))
            if not ahead:
                break
            job, pending = ahead.popleft()
            data = pending.get() if pending is not None else _encoded(job)
            if stop.wait(max(0.0, start + written / rate - time.monotonic())):
                break
            try:
                write_partially(out_dir / job.row.path, data, pause, stop=stop)
            finally:  # the file is complete even when interrupted, so it is counted and labelled
                written += 1
                if labels:
                    labels.write([job.row])
                if progress:
                    progress(1)
    finally:
        if pool:
            pool.terminate()
            pool.join()
    return written


def generate_plates(out_dir: Path | str, *, plates: int = 1, layout: str = "rockmaker", wells: int = 96,
                    drops: int = 3, inspections: int = 1, size: tuple[int, int] = (512, 512), seed: int = 0,
                    balance: str | Mapping[str, float] | None = None, imagefolder: bool = False,
                    labels: Path | str | None = None, write_labels: bool = True, workers: int | None = None,
                    rate: float | None = None, stop: threading.Event | None = None,
                    progress: Callable[[int], None] | None = None) -> list[LabelRow]:
    """Write a synthetic imaging run under ``out_dir`` and return the ground truth of what was written.

    Args:
        layout: ``rockmaker``, ``export`` or ``minstrel`` folder layout (ignored with ``imagefolder``).
        size: (width, height) of each frame in pixels.
        balance: class weights, e.g. ``"clear=1,needles=2"`` (unnamed classes weigh 1), or a mix
            (``"screen"``, ``"even"``), optionally followed by weights (``"screen,dark=0.1"``); None
            is ``screen`` (a few percent of drops crystallise, from the second inspection on), or
            ``even`` with ``imagefolder``.
        imagefolder: write ``out_dir/<class>/*.png`` instead of an instrument layout.
        labels: CSV path; default ``out_dir/../<name>_labels.csv`` (beside the tree).
        workers: processes; default one per core.
        rate: images per second, written partially then completed; None writes as fast as possible.
        stop: set it to end a paced run after the current file (which is always completed).
        progress: called with 1 after each file is complete.
    """
    out_dir = Path(out_dir)
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0 images/s, got {rate}")
    jobs = plan_jobs(plates=plates, layout=layout, wells=wells, drops=drops, inspections=inspections, size=size,
                     seed=seed, balance=balance, imagefolder=imagefolder)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    label_path = Path(labels) if labels is not None else default_labels_path(out_dir)
    writer = LabelWriter(label_path) if write_labels else None
    try:
        if rate is None:
            _run_batch(out_dir, jobs, workers, progress)
            if writer:
                writer.write(j.row for j in jobs)
            return [j.row for j in jobs]
        done = _run_paced(out_dir, jobs, workers, rate, stop or threading.Event(), writer, progress)
        return [j.row for j in jobs[:done]]
    finally:
        if writer:
            writer.close()
