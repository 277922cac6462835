"""Normal scores: the value charted for a score against its key's reference."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

import numpy as np
import pytest
from scipy.special import ndtri

from detectors.mean_chart import normal_score, normal_scores


@pytest.mark.parametrize("n", [7, 256, 1000])
def test_the_tabled_score_is_the_mid_rank_formula(n: int) -> None:
    """``normal_score`` reads a table made per reference size: the same value, bit for
    bit, as ``Phi^-1`` of the clipped mid-rank, for values inside the reference, on its
    ties and beyond both ends; and the vectorised ``normal_scores`` agrees, NaN included."""
    rng = np.random.default_rng(n)
    reference = sorted(np.round(rng.normal(size=n), 1).tolist())  # rounded: ties
    xs = [*reference[:: max(1, n // 50)], -10.0, 10.0, *rng.normal(size=200).tolist()]
    for x in xs:
        rank = (bisect_left(reference, x) + bisect_right(reference, x)) / 2.0
        expected = float(ndtri(min(max(rank / n, 0.5 / n), 1.0 - 0.5 / n)))
        assert normal_score(reference, x) == expected
    vectorised = normal_scores(np.asarray(reference), np.asarray(xs))
    assert [normal_score(reference, x) for x in xs] == vectorised.tolist()
    # NaN: bisect places it at the middle rank (searchsorted would sort it last)
    with_nan = normal_scores(np.asarray(reference), np.asarray([math.nan, 0.0]))
    assert with_nan.tolist() == [normal_score(reference, math.nan), normal_score(reference, 0.0)]
    assert math.isfinite(normal_score(reference, -10.0))
