"""The oracle's delay in minutes is read off the window's own traffic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.oracle import _minutes_at


def test_oracle_minutes_follow_the_window_traffic_not_its_average_rate() -> None:
    start = 1_000.0
    # Sparse at first, dense later (a daily cycle's rising flank): 4 observations.
    times = start + np.array([60.0, 120.0, 600.0, 1_200.0])
    assert _minutes_at(times, 3.0, start) == pytest.approx(10.0)
    assert _minutes_at(times, 2.5, start) == pytest.approx(6.0)  # between the 2nd and 3rd
    assert _minutes_at(times, 0.5, start) == pytest.approx(1.0)  # never before the 1st
    # The window's average rate would have said 3 / 4 of 20 minutes = 15.
    assert _minutes_at(times, 6.0, start) == pytest.approx(20.0 + 2 * 5.0)  # extrapolated
    assert _minutes_at(times, math.inf, start) is None
    assert _minutes_at(np.array([]), 2.0, start) is None
