"""The recovery test: an incident's rate change reads as over soon after it ends, not once
the smallest design's episode has drained, and not while the change persists."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.adaptive_rate import AdaptiveBernoulliCusum
from detectors.coverage import HarmRate
from detectors.recovery import RateRecovery, recovery_rate


def flags(seed: int, rates: list[tuple[float, int]]) -> list[bool]:
    rng = np.random.default_rng(seed)
    return [bool(v) for p, n in rates for v in rng.random(n) < p]


def spiked(seed: int, p0: float, lift: float, n: int = 1500) -> AdaptiveBernoulliCusum:
    det = AdaptiveBernoulliCusum(warmup=1000)
    assert not det.update_many(flags(seed, [(p0, 20_000)]))
    assert det.update_many(flags(seed + 1, [(p0 * lift, n)]))
    return det


def outputs_until(det: AdaptiveBernoulliCusum, seed: int, p: float, most: int) -> int | None:
    """Observations at rate ``p`` until the detector reads its change as over."""
    for i, x in enumerate(flags(seed, [(p, most)])):
        det.update(x)
        ex = det.excess()
        assert ex is not None
        if not ex.alarmed or ex.recovered:
            return i + 1
    return None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_8x_spike_reads_over_within_a_few_hundred_outputs_of_its_end(seed: int) -> None:
    """p0 = 4 %: the episode alone needs ~5 / (0.095 p0) ~ 1,300 baseline outputs; the
    matched test (f1 = 2.83 p0, KL ~ 0.79 p0) ~ 160."""
    det = spiked(10 * seed, 0.04, 8.0)
    ex = det.excess()
    assert ex is not None
    assert ex.alarmed
    assert not ex.recovered
    n = outputs_until(det, 10 * seed + 5, 0.04, 5000)
    assert n is not None
    assert n <= 500
    ex = det.excess()
    assert ex is not None
    assert ex.alarmed  # the episode is still open: recovery came from the matched test


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_change_persists_while_the_spike_lasts_or_only_eases(seed: int) -> None:
    det = spiked(10 * seed, 0.04, 8.0)
    assert outputs_until(det, 10 * seed + 6, 0.32, 5000) is None
    assert outputs_until(det, 10 * seed + 7, 0.12, 5000) is None  # eased to 3x


def test_a_small_change_recovers_no_faster_than_its_design() -> None:
    """A 1.5x alarm is judged against the smallest design's rate, as the episode is."""
    assert recovery_rate(0.04, 0.05, 0.5) == pytest.approx(0.06)
    assert recovery_rate(0.04, 0.32, 0.5) == pytest.approx(0.04 * 8**0.5)
    assert recovery_rate(0.4, 1.0, 3.0) == pytest.approx(0.7)


@pytest.mark.parametrize("seed", range(4))
def test_batched_and_resting_updates_equal_per_observation_ones(seed: int) -> None:
    xs = flags(seed, [(0.03, 6000), (0.25, 300), (0.03, 2000), (0.1, 400), (0.03, 3000)])
    a, b = AdaptiveBernoulliCusum(warmup=800), AdaptiveBernoulliCusum(warmup=800)
    rng = np.random.default_rng(seed)
    got, i = [], 0
    while i < len(xs):
        k = int(rng.integers(1, 700))
        got += a.update_many(xs[i : i + k])
        i += k
    want = [s for x in xs if (s := b.update(x)) is not None]
    assert got == want
    assert a.get_state() == b.get_state()
    assert a.excess() == b.excess()
    assert a.get_state()["recovery"] is not None


def test_state_round_trips_and_older_state_reads_not_recovered() -> None:
    det = spiked(4, 0.04, 8.0)
    outputs_until(det, 9, 0.04, 5000)
    ex = det.excess()
    assert ex is not None
    assert ex.recovered
    restored = AdaptiveBernoulliCusum(warmup=1000)
    restored.set_state(det.get_state())
    assert restored.get_state() == det.get_state()
    assert restored.excess() == ex
    older = {k: v for k, v in det.get_state().items() if k != "recovery"}
    restored.set_state(older)
    old_ex = restored.excess()
    assert old_ex is not None
    assert not old_ex.recovered
    assert old_ex.alarmed


def test_recovery_latches_until_the_next_alarm() -> None:
    rec = RateRecovery()
    assert not rec.recovered  # never armed
    rec.arm(0.04, 0.32, 0.5)
    rec.walk(np.zeros(2000, dtype=bool))
    assert rec.recovered
    rec.step(True)
    rec.walk(np.ones(5, dtype=bool))
    assert rec.recovered  # events after recovery do not reopen it: only an alarm re-arms
    rec.arm(0.04, 0.32, 0.5)
    assert not rec.recovered


def test_a_harm_category_reads_over_soon_after_its_spike() -> None:
    det = HarmRate(max_categories=3, warmup=500)
    base = flags(1, [(0.03, 8000)])
    det.update_many([{"self_harm": x} for x in base])
    assert det.update_many([{"self_harm": x} for x in flags(2, [(0.24, 1000)])])
    det.update_many([{"self_harm": x} for x in flags(3, [(0.03, 600)])])
    ex = det.excess("self_harm")
    assert ex is not None
    assert ex.alarmed
    assert ex.recovered
