"""The recovery tests: an incident's rate or mean change reads as over soon after it ends, not once
the smallest design's episode has drained, and not while the change persists."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.adaptive_rate import AdaptiveBernoulliCusum
from detectors.base import Direction
from detectors.confidence import ConfidenceShift
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


@pytest.mark.parametrize(("seed", "lift"), [(90, 2.5), (10, 4.0)])
def test_a_rate_back_inside_its_baselines_uncertainty_reads_over(seed: int, lift: float) -> None:
    """A baseline learned from 1,000 outputs (about 50 events at 5 %) is uncertain by a
    fifth of itself, and the chart holds its budget at the estimate's upper bound (its
    calibration rate). After a spike the rate returns to just inside that bound, a rate
    the chart would not alarm on: the change reads over within a few hundred outputs.
    Judged back to the estimate itself, these seeds took 1,122 and 1,407 outputs: hours
    of an incident left open at a sparse key after its cause had ended."""
    det = AdaptiveBernoulliCusum(warmup=1000)
    assert not det.update_many(flags(seed, [(0.05, 1000)]))
    signals = det.update_many(flags(seed + 1, [(0.05 * lift, 1000)]))
    assert signals
    back = signals[-1].details["calibration_rate"]
    assert back > 1.1 * signals[-1].baseline  # an estimate from a few dozen events
    n = outputs_until(det, seed + 2, 0.95 * back, 30_000)
    assert n is not None
    assert n <= 800


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


@pytest.mark.parametrize("seed", range(1, 9))
def test_a_rate_changes_end_is_estimated_where_its_test_last_stood_at_its_cap(seed: int) -> None:
    """An 8x spike at p0 = 4 %, then the baseline: once the test reads the change as over,
    ``quiet_for`` dates its end within the few dozen outputs after the true end (the
    last spike outputs that took the test back to its cap), while the reading itself
    comes a few hundred outputs later."""
    det = spiked(10 * seed, 0.04, 8.0)
    n = outputs_until(det, 10 * seed + 5, 0.04, 5000)
    assert n is not None
    ex = det.excess()
    assert ex is not None
    assert ex.recovered
    assert ex.quiet_for is not None
    ended = n - ex.quiet_for  # outputs of the baseline before the estimated end
    assert -10 <= ended <= 60
    assert n - max(ended, 0) >= 40  # the reading came well after the estimate


@pytest.mark.parametrize("seed", range(4))
def test_the_end_estimate_is_the_same_batched_or_not(seed: int) -> None:
    """``quiet_for`` counts identically through steps, resting counts and batches."""
    xs = flags(seed, [(0.03, 6000), (0.25, 300), (0.03, 2500)])
    a, b = AdaptiveBernoulliCusum(warmup=800), AdaptiveBernoulliCusum(warmup=800)
    a.update_many(xs)
    for x in xs:
        b.update(x)
    ea, eb = a.excess(), b.excess()
    assert ea is not None
    assert ea == eb
    assert ea.quiet_for is not None


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


# -- mean charts (confidence, groundedness, judge scores, latency, tokens) -------------


def dropped(seed: int, drop_sd: float, n: int = 400) -> tuple[ConfidenceShift, float]:
    """A confidence detector that learned N(0.8, 0.05) and then alarmed on a drop of
    ``drop_sd`` standard deviations; also returns the standard deviation."""
    rng = np.random.default_rng(seed)
    det = ConfidenceShift(arl0=1e6, reference_size=1000)
    sd = 0.05
    for v in rng.normal(0.8, sd, 3000):
        assert det.update(float(v)) is None
    alarms = [det.update(float(v)) for v in rng.normal(0.8 - drop_sd * sd, sd, n)]
    assert any(s is not None for s in alarms)
    return det, sd


def values_until(det: ConfidenceShift, seed: int, mean: float, sd: float, most: int) -> int | None:
    """Values from N(mean, sd) until the detector reads its drop as over."""
    rng = np.random.default_rng(seed)
    for i, v in enumerate(rng.normal(mean, sd, most)):
        det.update(float(v))
        ex = det.excess(None, Direction.DOWN)
        assert ex is not None
        if not ex.alarmed or ex.recovered:
            return i + 1
    return None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_mean_drop_reads_over_within_tens_of_values_of_its_end(seed: int) -> None:
    """A 1.5 sd drop: the matched test (d1 >= 0.75 sd, cap 5 nats = 6.7 sd) drains at
    ~0.37 sd a value, ~18 values; the smallest design's episode (k = 0.25 sd, capped at
    its threshold, ~50 sd at this ARL0) needs some 200."""
    det, sd = dropped(10 * seed, 1.5)
    ex = det.excess(None, Direction.DOWN)
    assert ex is not None
    assert ex.alarmed
    assert not ex.recovered
    n = values_until(det, 10 * seed + 5, 0.8, sd, 2000)
    assert n is not None
    assert n <= 80
    ex = det.excess(None, Direction.DOWN)
    assert ex is not None
    assert ex.alarmed  # the episode is still open: recovery came from the matched test
    up = det.excess(None, Direction.UP)
    assert up is not None
    assert not up.recovered  # no alarm armed the other direction's test


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_mean_drop_persists_while_it_lasts_or_only_eases(seed: int) -> None:
    """While the drop lasts the test never reads it over. Eased to 0.9 sd (the test drains
    below ~0.37 sd) it may, rarely: at 5 nats a long run of values near the baseline
    takes it to zero (one seed of six, ~100 values in 3,000), until the next alarm
    re-arms it."""
    det, sd = dropped(10 * seed, 1.5)
    assert values_until(det, 10 * seed + 6, 0.8 - 1.5 * sd, sd, 3000) is None
    rng = np.random.default_rng(10 * seed + 7)
    over = 0
    for v in rng.normal(0.8 - 0.9 * sd, sd, 3000):
        det.update(float(v))
        ex = det.excess(None, Direction.DOWN)
        assert ex is not None
        over += not ex.alarmed or ex.recovered
    assert over <= 150


@pytest.mark.parametrize("seed", range(1, 9))
def test_a_mean_drops_end_is_estimated_where_its_test_last_stood_at_its_cap(seed: int) -> None:
    """After a 1.5 sd drop the estimate of its end errs late by at most 25 values."""
    det, sd = dropped(10 * seed, 1.5)
    n = values_until(det, 10 * seed + 5, 0.8, sd, 2000)
    assert n is not None
    ex = det.excess(None, Direction.DOWN)
    assert ex is not None
    assert ex.quiet_for is not None
    assert n - 25 <= ex.quiet_for <= n + 5


def test_mean_recovery_survives_a_restart_and_older_state_falls_back() -> None:
    det, sd = dropped(7, 1.5)
    state = det.get_state()
    copy = ConfidenceShift(arl0=1e6, reference_size=1000)
    copy.set_state(state)
    rng = np.random.default_rng(8)
    for v in rng.normal(0.8, sd, 200):
        det.update(float(v))
        copy.update(float(v))
    assert det.get_state() == copy.get_state()
    ex = copy.excess(None, Direction.DOWN)
    assert ex is not None
    assert ex.recovered

    old = ConfidenceShift(arl0=1e6, reference_size=1000)
    assert "rec" in state
    old.set_state({k: v for k, v in state.items() if k != "rec"})
    ex = old.excess(None, Direction.DOWN)
    assert ex is not None
    assert ex.alarmed
    assert not ex.recovered  # never armed: the episode alone decides, as before
