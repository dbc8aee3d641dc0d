"""Pure checks the service loop runs now and then: imager stalled, disk low, embedding drift.

Each takes plain numbers (or arrays) and the ``alerts`` config section and returns a verdict;
the service owns the clock, the disk and the embeddings, and turns a True into an event.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import numpy as np

from xtalwatch.learn.features import unit_mean

__all__ = ["StalledSettings", "DiskSettings", "expected_seconds_between", "imager_stalled", "disk_low", "drift_distance"]

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class StalledSettings(Protocol):
    """What ``imager_stalled`` reads (``AlertsConfig`` has it)."""

    stalled_after_seconds: float
    expected_hours: str
    weekdays: list[str]


class DiskSettings(Protocol):
    disk_low_bytes: int
    disk_low_fraction: float


def _window(hours: str) -> tuple[dt.timedelta, dt.timedelta]:
    start, end = (h.split(":") for h in hours.split("-"))
    begin = dt.timedelta(hours=int(start[0]), minutes=int(start[1]))
    finish = dt.timedelta(hours=int(end[0]), minutes=int(end[1]))
    if finish <= begin:  # wraps past midnight: 22:00-06:00 belongs to the day it starts on
        finish += dt.timedelta(days=1)
    return begin, finish


def expected_seconds_between(t0: float, t1: float, expected_hours: str, weekdays: list[str],
                             tz: dt.tzinfo | None = None) -> float:
    """Seconds of [t0, t1] (Unix seconds) that fall in expected hours on expected days, in local time.

    ``tz`` defaults to the machine's local zone; windows are laid on local calendar days, so a
    daylight-saving change shifts them with the wall clock, as the imager's schedule does.
    """
    if t1 <= t0:
        return 0.0
    begin, finish = _window(expected_hours)
    days = {_WEEKDAYS.index(d) for d in weekdays}
    a = dt.datetime.fromtimestamp(t0, tz).replace(tzinfo=None)
    b = dt.datetime.fromtimestamp(t1, tz).replace(tzinfo=None)
    if (b - a).days > 366:  # a year of silence: surely stalled; skip counting day by day
        a = b - dt.timedelta(days=366)
    total = 0.0
    day = dt.datetime.combine(a.date(), dt.time()) - dt.timedelta(days=1)  # yesterday's window may wrap into today
    while day <= b:
        if day.weekday() in days:
            lo, hi = max(a, day + begin), min(b, day + finish)
            if hi > lo:
                total += (hi - lo).total_seconds()
        day += dt.timedelta(days=1)
    return total


def imager_stalled(last_image_ts: float | None, now: float, cfg: StalledSettings,
                   tz: dt.tzinfo | None = None) -> bool:
    """True when no image arrived for ``cfg.stalled_after_seconds`` of expected hours up to ``now``.

    Only time inside the expected hours on the expected weekdays counts, so a quiet night or
    weekend never raises it, and Monday morning does only once the imager is really late.
    ``last_image_ts`` is the newest image's Unix time; pass the service start when there is none
    (None: nothing to judge, False).
    """
    if last_image_ts is None:
        return False
    silent = expected_seconds_between(last_image_ts, now, cfg.expected_hours, cfg.weekdays, tz)
    return silent >= cfg.stalled_after_seconds


def disk_low(free_bytes: int, total_bytes: int, cfg: DiskSettings) -> bool:
    """True when free space is under ``cfg.disk_low_bytes`` or under ``cfg.disk_low_fraction`` of the disk."""
    if free_bytes < 0 or total_bytes < 0:
        raise ValueError(f"byte counts must be >= 0, got free={free_bytes}, total={total_bytes}")
    if cfg.disk_low_bytes and free_bytes < cfg.disk_low_bytes:
        return True
    return bool(cfg.disk_low_fraction and total_bytes > 0 and free_bytes / total_bytes < cfg.disk_low_fraction)


def drift_distance(train_mean: np.ndarray, new_embeddings: np.ndarray) -> float:
    """1 − cosine between the training feature mean and the mean of L2-normalised new embeddings.

    Args:
        train_mean: (D,) mean embedding of the training images (any scale; only its direction counts).
        new_embeddings: (N, D) embeddings of recent images, N ≥ 1.

    Returns a distance in [0, 2]: 0 when the recent images point the same way on average, ~1 when
    unrelated. The mean of unit vectors is also shorter when new images scatter, but cosine uses
    the direction only, so scatter alone does not read as drift.
    """
    mean = np.asarray(train_mean, dtype=np.float64)
    new = np.asarray(new_embeddings, dtype=np.float64)
    if mean.ndim != 1 or new.ndim != 2 or new.shape[1] != mean.shape[0] or new.shape[0] == 0:
        raise ValueError(f"expected train_mean (D,) and new_embeddings (N>=1, D); got {mean.shape} and {new.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(new).all()):
        raise ValueError("embeddings contain NaN or infinity")
    recent = unit_mean(new).astype(np.float64)
    denom = np.linalg.norm(mean) * np.linalg.norm(recent)
    if denom < 1e-12:
        return 1.0  # one side has no direction at all: as far as unrelated
    return float(np.clip(1.0 - mean @ recent / denom, 0.0, 2.0))
