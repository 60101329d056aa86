"""The emulator's busiest-second and busiest-window figures: what a client's pacing is checked against."""

from __future__ import annotations

from airflow_batchcode.emulator.common import CallPeaks


def test_the_busiest_second_and_window_of_each_caller() -> None:
    peaks = CallPeaks(window=30)
    for now in (60.0, 60.5, 60.99, 61.0, 75.0, 89.99):  # three calls in second 60; five in window [60, 90)
        peaks.count("a", now)
    for now in (90.0, 91.0):  # a new window starts counting from one
        peaks.count("a", now)
    peaks.count("b", 60.2)
    assert peaks.stats() == {
        "calls_busiest_second": {"a": 3, "b": 1},
        "calls_busiest_window": {"a": 6, "b": 1},
    }


def test_a_day_long_window_counts_utc_days() -> None:
    peaks = CallPeaks(window=86400)
    day = 20_000 * 86400.0
    for now in (day - 1, day, day + 86399):
        peaks.count("a", now)
    assert peaks.stats()["calls_busiest_window"] == {"a": 2}
    assert peaks.stats()["calls_busiest_second"] == {"a": 1}
