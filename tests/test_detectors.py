"""Detectors: the stalled imager honours expected hours and days; disk low; embedding drift."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from xtalwatch.alerts.detectors import disk_low, drift_distance, expected_seconds_between, imager_stalled
from xtalwatch.config import AlertsConfig

UTC = dt.UTC
H = 3600.0


def ts(day: int, hour: float) -> float:
    """Unix time of 2024-01-<day> at ``hour`` UTC; 2024-01-01 is a Monday."""
    return (dt.datetime(2024, 1, day, tzinfo=UTC) + dt.timedelta(hours=hour)).timestamp()


CFG = AlertsConfig(stalled_after_seconds=2 * H, expected_hours="07:00-19:00",
                   weekdays=["mon", "tue", "wed", "thu", "fri"])


@pytest.mark.parametrize("last, now, stalled", [
    (ts(1, 8), ts(1, 9.5), False),    # Monday, 1.5 h quiet in working hours
    (ts(1, 8), ts(1, 10.5), True),    # 2.5 h quiet
    (ts(1, 18), ts(1, 23), False),    # 1 h of working time, then the evening does not count
    (ts(1, 18), ts(2, 7.5), False),   # overnight: 1 h + 0.5 h
    (ts(1, 18), ts(2, 8.5), True),    # 1 h + 1.5 h
    (ts(5, 18), ts(8, 7.5), False),   # Friday 18:00 to Monday 07:30: the weekend does not count
    (ts(5, 18), ts(8, 8.0), True),    # ... until Monday 08:00 (1 h + 1 h)
    (ts(6, 10), ts(7, 20), False),    # all weekend
    (ts(1, 3), ts(1, 8.9), False),    # before hours does not count: 1.9 h
    (ts(1, 3), ts(1, 9.0), True),
])
def test_stalled_honours_expected_hours_and_days(last: float, now: float, stalled: bool) -> None:
    assert imager_stalled(last, now, CFG, tz=UTC) is stalled


def test_window_wrapping_midnight_belongs_to_its_start_day() -> None:
    # Night shift Mon-Fri 22:00-06:00: Friday night runs into Saturday morning; Saturday night does not exist.
    assert expected_seconds_between(ts(5, 21), ts(6, 7), "22:00-06:00", ["fri"], UTC) == 8 * H
    assert expected_seconds_between(ts(6, 21), ts(7, 7), "22:00-06:00", ["fri"], UTC) == 0
    assert expected_seconds_between(ts(1, 0), ts(1, 12), "00:00-24:00", ["mon"], UTC) == 12 * H


def test_stalled_without_any_image_is_not_judged() -> None:
    assert imager_stalled(None, ts(3, 12), CFG, tz=UTC) is False


def test_a_year_of_silence_is_stalled_and_quick() -> None:
    assert imager_stalled(ts(1, 8) - 5 * 365 * 24 * H, ts(1, 12), CFG, tz=UTC)


def test_disk_low_by_bytes_or_fraction() -> None:
    cfg = AlertsConfig(disk_low_bytes=10_000, disk_low_fraction=0.1)
    assert disk_low(9_999, 10**9, cfg) and not disk_low(10**8 + 1, 10**9, cfg)
    assert disk_low(10**8 - 1, 10**9, cfg)  # 10 GB disk, 9.99 % free
    off = AlertsConfig(disk_low_bytes=0, disk_low_fraction=0)
    assert not disk_low(0, 10**9, off)
    with pytest.raises(ValueError, match="byte counts"):
        disk_low(-1, 10, cfg)


def test_drift_distance() -> None:
    rng = np.random.default_rng(0)
    centre = rng.normal(size=64)
    same = centre + 0.3 * rng.normal(size=(200, 64))
    assert drift_distance(centre, same) < 0.05
    assert drift_distance(10 * centre, same) == pytest.approx(drift_distance(centre, same))  # scale-free
    other = rng.normal(size=64)
    moved = other + 0.3 * rng.normal(size=(200, 64))
    assert drift_distance(centre, moved) > 0.5
    assert drift_distance(centre, -same) > 1.9
    with pytest.raises(ValueError, match=r"\(D,\)"):
        drift_distance(centre, rng.normal(size=(5, 32)))
    with pytest.raises(ValueError, match="NaN"):
        drift_distance(centre, np.full((2, 64), np.nan))
