"""The vectorised paths used for long calibration runs give exactly what sequential
updates give (issue #19)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.confidence import ConfidenceShift
from detectors.coverage import HarmRate
from detectors.rate import BernoulliCusum


@pytest.mark.parametrize(("p", "shift"), [(0.002, 0.5), (0.01, 3.0), (0.05, 1.0)])
def test_update_many_equals_update_at_rare_rates_with_capped_episodes(
    p: float, shift: float
) -> None:
    rng = np.random.default_rng(19)
    x = rng.random(60_000) < p
    x[40_000:] |= rng.random(20_000) < 2 * p  # a shift: episodes reach their cap
    one = BernoulliCusum(relative_shift=shift, arl0=2e4, warmup=500, max_reference=20_000)
    many = BernoulliCusum(relative_shift=shift, arl0=2e4, warmup=500, max_reference=20_000)
    seq = [s.last_index for s in (one.update(v) for v in x.tolist()) if s is not None]
    vec = [s.last_index for s in many.update_many(x[:3333])]
    vec += [s.last_index for s in many.update_many(x[3333:])]
    assert seq == vec
    assert seq  # the shift was caught: the capped path ran
    assert one.get_state() == many.get_state()


def test_update_columns_equals_update_per_mapping() -> None:
    rng = np.random.default_rng(20)
    cols = {"a": rng.random(8000) < 0.03, "b": rng.random(8000) < 0.01}
    cols["a"][6000:] |= rng.random(2000) < 0.1
    one = HarmRate(max_categories=3, arl0=1e3, warmup=300)
    seq = []
    for i in range(8000):
        s = one.update({c: bool(v[i]) for c, v in cols.items()})
        if s is not None:
            seq.append((s.last_index, s.feature))
    many = HarmRate(max_categories=3, arl0=1e3, warmup=300)
    vec = [(s.last_index, s.feature) for s in many.update_columns(cols)]
    assert seq == vec
    assert seq
    assert one.get_state() == many.get_state()


def test_the_mean_charts_allow_for_the_estimated_reference_mean() -> None:
    """The thresholds are solved as if the mean were 1.645 standard errors towards each
    alarm: the calibrated increments move by that margin and the thresholds rise."""
    ref = np.random.default_rng(5).normal(0.7, 0.1, 1000)
    charts = {}
    for conf in (0.5, 0.95):
        det = ConfidenceShift(arl0=1e5, reference_size=ref.size, baseline_confidence=conf)
        for x in ref:
            det.update(float(x))
        charts[conf] = det
    res = charts[0.5]._res

    def mean(stored: list[float]) -> float:
        pmf = np.asarray(stored[1:])
        return float((np.arange(pmf.size) + stored[0]) @ pmf) * res

    margin = 1.645 / np.sqrt(ref.size)
    for direction in (0, 1):
        moved = mean(charts[0.95]._chart.pmf[direction]) - mean(charts[0.5]._chart.pmf[direction])
        assert moved == pytest.approx(margin, abs=0.01)
    assert charts[0.95]._chart.h[0][0] > charts[0.5]._chart.h[0][0]  # up
    assert charts[0.95]._chart.h[1][0] > charts[0.5]._chart.h[1][0]  # down
    with pytest.raises(ValueError, match="baseline_confidence"):
        ConfidenceShift(baseline_confidence=0.4)
