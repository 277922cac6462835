"""The vectorised paths used for long calibration runs give exactly what sequential
updates give (issue #19)."""

from __future__ import annotations

import numpy as np
import pytest

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
