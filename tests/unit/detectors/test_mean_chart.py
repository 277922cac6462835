"""The mean chart's designs (detectors.mean_chart): an alarm restarts every design of its
direction, as a multi-chart CUSUM does, so the slower designs carry no evidence of a
change past its alarm."""

from __future__ import annotations

import numpy as np

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
