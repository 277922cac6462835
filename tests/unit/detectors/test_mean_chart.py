"""The mean chart's designs (detectors.mean_chart): an alarm restarts every design of its
direction, as a multi-chart CUSUM does, so the slower designs carry no evidence of a
change past its alarm."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import Direction
from detectors.mean_chart import MeanChart


def test_an_alarm_restarts_every_design_of_its_direction() -> None:
    rng = np.random.default_rng(5)
    chart = MeanChart(0.5, (1.0, 2.0, 4.0), 0.125, 0.95)
    chart.fit(rng.normal(0.0, 1.0, 2000), 2000, 5_000.0)
    values = np.concatenate([rng.normal(0.0, 1.0, 1000), rng.normal(-0.7, 1.0, 3000)])
    alarms = 0
    for n, x in enumerate(values, start=2000):
        for fired in chart.update(float(x), n):
            alarms += 1
            assert fired.direction == Direction.DOWN
            down = 1  # the second direction's statistics
            assert chart.s[down] == [0, 0, 0]
            assert chart.start[down] == [n + 1] * 3
    assert alarms >= 5  # a persisting drop alarms again and again, each time from zero


def _stream(rng: np.random.Generator) -> np.ndarray:
    """Quiet values, a drop that alarms and pins the recovery tests at their caps, a
    return, a rise, and quiet again: every path of the chart's update."""
    return np.concatenate(
        [
            rng.normal(0.0, 1.0, 1500),
            rng.normal(-1.2, 1.0, 700),
            rng.normal(0.0, 1.0, 900),
            rng.normal(0.6, 1.3, 1200),
            rng.normal(0.0, 1.0, 800),
        ]
    )


@pytest.mark.parametrize("seed", range(6))
def test_a_batch_update_equals_the_steps_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.normal(0.0, 1.0, 1000)
    steps, batched = (MeanChart(0.5, (1.0, 2.0, 4.0), 0.125, 0.95) for _ in range(2))
    steps.fit(reference, 1000, 4_000.0)
    batched.fit(reference, 1000, 4_000.0)
    values = _stream(rng)
    want = [(n, f) for n, x in enumerate(values.tolist(), start=1000) for f in steps.update(x, n)]
    got, i = [], 0
    while i < values.size:
        size = int(rng.choice([1, 5, 16, 40, 300, 2000]))
        got += batched.update_many(values[i : i + size].tolist(), 1000 + i)
        i += size
    assert len(want) >= 4  # the drop and the rise both alarm
    assert {f.direction for _, f in want} == {Direction.UP, Direction.DOWN}
    assert got == want
    assert batched.get_state() == steps.get_state()
    assert batched.rec == steps.rec
