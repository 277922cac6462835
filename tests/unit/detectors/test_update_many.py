"""Batch updates are the same computation as per-event updates, for every detector kind.

A columnar pipeline (issue 14, not built yet) would feed each key's detectors
one batch at a time through ``update_many``; these seeded property tests check that any
split of a stream into batches gives the signals and the final state of ``update`` called
on each observation, for every registered detector, and for the CUSUM kernels directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detectors.adaptive_rate import AdaptiveBernoulliCusum
from detectors.base import Detector, Signal
from detectors.kernels import capped_walk, recovery_walk, reflected_walk
from detectors.rate import BernoulliCusum
from tests.unit.detectors.cases import CASES, update_each

N = 1500


def _chunked(det: Detector[Any], xs: list[Any], rng: np.random.Generator) -> list[Signal]:
    out: list[Signal] = []
    i = 0
    while i < len(xs):
        size = int(rng.choice([1, 2, 7, 64, 333, 1000]))
        out += det.update_many(xs[i : i + size])
        i += size
    return out


@pytest.mark.parametrize("case", CASES)
def test_any_batching_equals_per_event_updates(case: Any) -> None:
    cls, params = case
    xs = cls._conformance_stream(11, N)
    seq, batch = cls(**params), cls(**params)
    expected = update_each(seq, xs)
    got = _chunked(batch, xs, np.random.default_rng(3))
    assert got == expected
    assert batch.get_state() == seq.get_state()


@pytest.mark.parametrize("seed", range(3))
def test_bernoulli_cusum_batches_through_shifts_and_relearning(seed: int) -> None:
    """Long runs of a doubled and a 10x rate pin the episode at its cap (the kernel's
    piecewise path), and re-estimates of the baseline end chunks early."""
    rng = np.random.default_rng(seed)
    rates = np.concatenate([np.full(6000, 0.02), np.full(1500, 0.2), np.full(3000, 0.04)])
    xs = [bool(v) for v in rng.random(rates.size) < rates]
    params: dict[str, Any] = {"warmup": 500, "arl0": 2000.0, "max_reference": 8000}
    for cls in (BernoulliCusum, AdaptiveBernoulliCusum):
        seq, batch = cls(**params), cls(**params)
        expected = update_each(seq, xs)
        assert expected, "the stream must alarm"
        assert _chunked(batch, xs, rng) == expected
        assert batch.get_state() == seq.get_state()


def test_rare_rate_waits_for_min_events_in_one_batch() -> None:
    """Past the warm-up length, warm-up ends at the ``min_events``-th event exactly."""
    rng = np.random.default_rng(5)
    xs = [bool(v) for v in rng.random(20_000) < 0.002]
    seq, batch = BernoulliCusum(warmup=1000), BernoulliCusum(warmup=1000)
    assert batch.update_many(xs) == update_each(seq, xs)
    assert batch.get_state() == seq.get_state()


@pytest.mark.parametrize("seed", range(20))
def test_kernels_equal_their_recursions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    flags = rng.random(int(rng.integers(1, 400))) < rng.uniform(0.05, 0.9)
    up, down, cap = int(rng.integers(1, 9)), int(rng.integers(1, 4)), int(rng.integers(1, 40))
    s0 = int(rng.integers(0, cap + 1))
    steps = np.where(flags, up, -down).astype(np.int64)
    s, want = s0, []
    for z in steps:
        s = max(0, s + int(z))
        want.append(s)
    assert reflected_walk(s0, steps).tolist() == want
    e, last_zero, hits, last_cap = s0, -1, 0, -1
    for t, x in enumerate(flags):
        e += up if x else -down
        if e <= 0:
            e, last_zero, hits = 0, t, 0
        else:
            e = min(e, cap)
            hits += int(x)
            last_cap = t if e == cap else last_cap
    walk = capped_walk(s0, flags, up, down, cap)
    assert (walk.value, walk.last_zero, walk.hits, walk.last_cap) == (e, last_zero, hits, last_cap)
    r, since, armed = s0, int(rng.integers(0, 50)), bool(rng.random() < 0.8)
    want_r, want_since = r, since
    for z in steps:  # the recovery test's step (detectors.recovery.RecoveryTest.step)
        if want_r:
            want_r = max(0, min(want_r + int(z), cap))
            want_since = 0 if want_r == cap else want_since + 1
        elif armed:
            want_since += 1
    assert recovery_walk(r, steps, cap, since, armed) == (want_r, want_since)
