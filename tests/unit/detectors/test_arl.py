"""The exact CUSUM run-length computation against DESIGN.md and against simulation."""

from __future__ import annotations

import functools
import itertools
import math
import tracemalloc

import numpy as np
import pytest

from detectors.arl import (
    SPARSE_ABOVE,
    _banded_arl,
    _down1_arls,
    _search,
    _sparse_arl,
    bernoulli_arl,
    bernoulli_cusum_delay,
    bernoulli_lattice,
    bernoulli_threshold,
    clear_thresholds,
    lattice_arl,
    zero_drift_rate,
)
from detectors.rate import BernoulliCusum

# DESIGN.md: exact CUSUM delays (events) at ARL0 = 1e4, 1e5, 3e5.
DESIGN_TABLE = [
    (0.05, 0.10, (202, 312, 365)),
    (0.05, 0.075, (531, 915, 1104)),
    (0.02, 0.04, (411, 691, 829)),
    (0.01, 0.02, (670, 1222, 1499)),
    (0.10, 0.20, (112, 163, 188)),
]


@pytest.mark.parametrize(("p0", "p1", "delays"), DESIGN_TABLE)
def test_reproduces_design_table(p0: float, p1: float, delays: tuple[int, ...]) -> None:
    for arl0, expected in zip((1e4, 1e5, 3e5), delays, strict=True):
        assert bernoulli_cusum_delay(p0, p1, arl0) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize(("p0", "p1", "delays"), DESIGN_TABLE)
def test_threshold_is_smallest_reaching_target(
    p0: float, p1: float, delays: tuple[int, ...]
) -> None:
    lat = bernoulli_lattice(p0, p1)
    assert abs(lat.up * lat.unit / math.log(p1 / p0) - 1) <= 1e-2
    for arl0 in (1e4, 1e5):
        h = bernoulli_threshold(p0, p1, arl0)
        assert bernoulli_arl(lat.up, lat.down, h, p0) >= arl0
        assert bernoulli_arl(lat.up, lat.down, h - 1, p0) < arl0


def test_close_to_wald_approximation() -> None:
    p0, p1, arl0 = 0.05, 0.10, 1e4
    kl0 = p0 * math.log(p0 / p1) + (1 - p0) * math.log((1 - p0) / (1 - p1))
    kl1 = p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    h = bernoulli_threshold(p0, p1, arl0) * bernoulli_lattice(p0, p1).unit
    wald_delay = (h + math.exp(-h) - 1) / kl1
    assert (math.exp(h) - h - 1) / kl0 == pytest.approx(arl0, rel=0.3)
    assert bernoulli_cusum_delay(p0, p1, arl0) == pytest.approx(wald_delay, rel=0.1)


def test_general_lattice_agrees_with_bernoulli_solver() -> None:
    up, down, h, p = 7, 2, 40, 0.2
    pmf = np.zeros(up + down + 1)
    pmf[0], pmf[-1] = 1 - p, p  # steps -down .. +up
    assert lattice_arl(pmf, -down, h) == pytest.approx(bernoulli_arl(up, down, h, p), rel=1e-9)


def _dense_lattice_arl(pmf: np.ndarray, offset: int, h: int) -> float:
    """The zero-state ARL from the definition: the full transition matrix over the
    states 0 .. h-1, built entry by entry, and a dense solve of (I - P) L = 1."""
    trans = np.zeros((h, h))
    for i in range(h):
        for j, p in enumerate(pmf):
            nxt = max(0, i + offset + j)
            if nxt < h:
                trans[i, nxt] += p
    return float(np.linalg.solve(np.eye(h) - trans, np.ones(h))[0])


def test_banded_lattice_arl_matches_the_dense_chain() -> None:
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(200):
        size = int(rng.integers(2, 25))
        offset = int(rng.integers(-24, 2))
        h = int(rng.integers(1, 50))
        pmf = rng.random(size)
        pmf /= pmf.sum()
        if offset + size - 1 <= 0:
            continue  # never alarms: infinite ARL, a singular chain
        expected = _dense_lattice_arl(pmf, offset, h)
        if not 0 < expected < 1e9:
            continue  # (I - P) is too ill-conditioned for either solve to be a reference
        assert lattice_arl(pmf, offset, h) == pytest.approx(expected, rel=1e-8), (size, offset, h)
        checked += 1
    assert checked >= 50


def test_simulated_run_lengths_match_exact_arl() -> None:
    """Run lengths of the running detector are i.i.d. with mean exactly the chain's ARL."""
    p0, p1, arl0 = 0.05, 0.10, 500.0
    lat = bernoulli_lattice(p0, p1)
    h = bernoulli_threshold(p0, p1, arl0)
    rng = np.random.default_rng(7)
    for rate, n in ((p0, 1_000_000), (p1, 200_000)):
        det = BernoulliCusum(p0=p0, arl0=arl0)
        signals = det.update_many(rng.random(n) < rate)
        exact = bernoulli_arl(lat.up, lat.down, h, rate)
        measured = signals[-1].last_index / len(signals)
        # ~2000 (1e6 / ~500) and ~1600 run lengths: standard error about 2-3 %.
        assert measured == pytest.approx(exact, rel=0.08)


@pytest.mark.parametrize("p0", [0.002, 0.03, 0.2])
def test_threshold_search_near_the_zero_drift_rate(p0: float) -> None:
    """Calibrating at a true rate close to where the CUSUM stops drifting down (as the
    learned-baseline guard may) still returns the smallest threshold reaching the target."""
    p1 = 2 * p0
    lat = bernoulli_lattice(p0, p1)
    top = zero_drift_rate(p0, p1)
    for frac in (0.2, 0.5, 0.8):
        rate = p0 + frac * (top - p0)
        for arl0 in (300.0, 1e4):
            h = bernoulli_threshold(p0, p1, arl0, rate)
            assert bernoulli_arl(lat.up, lat.down, h, rate) >= arl0
            assert h == 1 or bernoulli_arl(lat.up, lat.down, h - 1, rate) < arl0


# -- the down == 1 recursion ----------------------------------------------------------


@pytest.mark.parametrize(
    ("up", "p"),
    [
        (up, p)
        for up in (1, 2, 3, 7, 40, 205, 810)
        for p in (0.001, 0.003, 0.01, 0.05, 0.2, 0.45)
        if up * p < 1 - p  # drifts down: a CUSUM in control
    ],
)
def test_down1_recursion_matches_the_banded_solve(up: int, p: float) -> None:
    arls = list(itertools.islice(_down1_arls(up, p), 3000))
    checked = 0
    for h in sorted({1, 2, up, up + 1, up + 2, 2 * up + 3, 997, 2999}):
        if h > 3000:
            continue
        exact = _banded_arl(up, 1, h, p)
        if not 0 < exact < 1e10:  # the banded solve itself loses all digits up there
            continue
        assert arls[h - 1] == pytest.approx(exact, rel=2e-7), (up, p, h)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize(("p0", "shift"), [(0.003, 1.0), (0.01, 3.0), (0.002, 0.5)])
def test_down1_threshold_is_the_smallest_by_the_banded_solve(p0: float, shift: float) -> None:
    p1 = p0 * (1 + shift)
    lat = bernoulli_lattice(p0, p1)
    assert lat.down == 1
    h = bernoulli_threshold(p0, p1, 1e5)
    assert _banded_arl(lat.up, 1, h, p0) >= 1e5 * (1 - 1e-7)
    assert _banded_arl(lat.up, 1, h - 1, p0) < 1e5


def test_rare_rate_calibration_needs_little_memory() -> None:
    """p0 = 0.1 %, half shift, the learned-rate bound: the banded search peaked at 1.4 GB
    (and ~5 s in the worker's event loop); the recursion holds O(up) numbers."""
    p0, p1 = 0.001, 0.0015
    rate = float(f"{p0 + 0.8 * (zero_drift_rate(p0, p1) - p0):.3g}")
    clear_thresholds()
    tracemalloc.start()
    try:
        h = bernoulli_threshold(p0, p1, 1.4e8, rate)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert h > 50_000  # a lattice of this size is the case that mattered
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize(
    ("up", "down", "h", "p"), [(205, 3, 7195, 0.0115), (275, 2, 9078, 0.0062), (64, 5, 2561, 0.06)]
)
def test_sparse_solve_matches_the_banded_solve(up: int, down: int, h: int, p: float) -> None:
    assert _sparse_arl(up, down, h, p) == pytest.approx(_banded_arl(up, down, h, p), rel=1e-7)
    # Below the size where it pays, bernoulli_arl keeps the banded solve.
    assert (h * up > SPARSE_ABOVE) == (up > 100)


def test_searches_on_one_chain_reuse_its_solved_arls() -> None:
    """A key's run length moves between a few targets as its traffic cycles: later searches
    on the same chain start from the ARLs already solved and agree with a fresh search."""
    calls: list[int] = []

    def counted(up: int, down: int, p: float, h: int) -> float:
        calls.append(h)
        return bernoulli_arl(up, down, h, p)

    lat = bernoulli_lattice(0.02, 0.04)
    assert lat.down > 1
    arl_of = functools.partial(counted, lat.up, lat.down, 0.02)
    known: dict[int, float] = {}
    targets = [1e5 * 2 ** (k / 4) for k in (0, 2, 4, 2, 0, 6)]
    found = []
    for i, target in enumerate(targets):
        before = len(calls)
        found.append(_search(arl_of, target, 1, known=known))
        if target in targets[:i]:
            assert len(calls) == before  # a target seen before: no solve
        elif i > 0:
            assert len(calls) - before <= 3  # from the nearest solved points
    fresh = [_search(functools.partial(counted, lat.up, lat.down, 0.02), t, 1) for t in targets]
    assert found == fresh
    for h, target in zip(found, targets, strict=True):
        assert bernoulli_arl(lat.up, lat.down, h, 0.02) >= target
        assert bernoulli_arl(lat.up, lat.down, h - 1, 0.02) < target


def _arl_lost_above(h: int, limit: int) -> float:
    """ARL e^h, as a linear solve returns it: garbage (negative) past double precision."""
    return math.exp(h) if h <= limit else -1.2e17


def test_a_solve_that_loses_precision_counts_as_above_the_target() -> None:
    """A search step far above the answer meets an ARL beyond double precision, which a
    solve returns negative (met in a harm chart designed for 16x, set_arl0 on a chain
    with solved ARLs); the search must step back, not fail on log(negative)."""
    arl_of = functools.partial(_arl_lost_above, limit=37)
    known: dict[int, float] = {}
    assert _search(arl_of, math.exp(29.5), start=200, known=known) == 30
    assert math.inf in known.values()  # kept as "above any target", not as garbage
