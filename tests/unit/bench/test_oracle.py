"""The oracle: its delay in minutes is read off the window's own traffic, and it is fed
late feedback and evaluations as they arrive."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.oracle import (
    Probe,
    _bernoulli_chart,
    _gaussian_chart,
    _minutes_at,
    bernoulli_recovery_delay,
    gaussian_cusum_delay,
    gaussian_recovery_delay,
    location_llr_delay,
    ramp_delay,
    realized_delay,
)
from detectors.arl import bernoulli_cusum_delay
from streams.settings import load_settings


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


def test_a_change_that_arrives_at_once_costs_the_zero_state_arl() -> None:
    """With every observation changed, the ramp's delay is the exact CUSUM's ARL1."""
    chart = _bernoulli_chart(0.05, 0.2, 1e6)
    assert ramp_delay(*chart, np.ones(300, dtype=bool)) == pytest.approx(
        bernoulli_cusum_delay(0.05, 0.2, 1e6), rel=1e-9
    )
    # Ending the changed run early leaves the rest to the chart's ARL from its state.
    assert ramp_delay(*chart, np.ones(5, dtype=bool)) == pytest.approx(
        bernoulli_cusum_delay(0.05, 0.2, 1e6), rel=1e-9
    )
    gauss = _gaussian_chart(1.0, 1e6)
    assert ramp_delay(*gauss, np.ones(200, dtype=bool)) == pytest.approx(
        gaussian_cusum_delay(1.0, 1e6), rel=1e-9
    )


def test_late_observations_of_earlier_requests_delay_the_oracle() -> None:
    """Feedback about requests made before the change reads at the old rate: each such
    observation in front costs about one observation more (the chart gains ~nothing)."""
    chart = _bernoulli_chart(0.05, 0.2, 1e6)
    abrupt = bernoulli_cusum_delay(0.05, 0.2, 1e6)
    ramp = np.ones(400, dtype=bool)
    ramp[:30] = False
    assert abrupt + 25 < ramp_delay(*chart, ramp) < abrupt + 30


def test_the_probe_reads_feedback_at_its_own_requests_time() -> None:
    """A downvote arriving after the start about a request made before it is unchanged."""
    probe = Probe("downvote_spike", None, load_settings(None).detection)
    start = 1_000_000.0

    def at(seconds: float) -> str:
        return str(np.datetime64(int(seconds * 1000), "ms")) + "Z"

    for minute in range(-600, 60):  # one request a minute, its feedback 10 minutes later
        request = start + minute * 60.0
        probe.feed(
            f'{{"event_type":"output","timestamp":"{at(request + 0.5)}",'
            f'"gen_ai.response.id":"r{minute}","latency_ms":500.0}}',
            True,
        )
        down = minute % 2 == 0 if minute >= 0 else minute % 20 == 0
        probe.feed(
            f'{{"event_type":"feedback","timestamp":"{at(request + 600.0)}",'
            f'"gen_ai.response.id":"r{minute}","vote":"{"down" if down else "up"}"}}',
            True,
        )
    out = probe.result(start, start + 3600.0, 1e4)
    assert out["window_events"] == 60  # the hour's feedback: 10 of it about earlier requests
    assert out["unchanged"] == 10
    assert out["p1"] == pytest.approx(0.5)  # the changed requests' rate, not the window's
    abrupt = bernoulli_cusum_delay(out["p0"], out["p1"], 1e4)
    assert abrupt + 8 < out["delay_events"] < abrupt + 10


@pytest.mark.parametrize("d", [0.5, 1.5])
def test_the_likelihood_ratio_oracle_is_the_gaussian_one_on_gaussian_scores(d: float) -> None:
    """On Gaussian scores the log-likelihood ratio of a mean drop is linear in the score:
    the exact LLR CUSUM is the Gaussian mean CUSUM, on another lattice."""
    best = location_llr_delay(stats.norm(loc=0.7, scale=0.1), d, 1e8)
    assert best == pytest.approx(gaussian_cusum_delay(d, 1e8), rel=0.02)


def test_the_likelihood_ratio_oracle_reads_the_shape_of_skewed_scores() -> None:
    """On the simulator's skewed confidence (Beta(12, 3), long low tail) the Gaussian
    oracle is not what the best detector achieves: the exact LLR CUSUM sees a drop of
    0.5 sd sooner than it says, and one of 2 sd later."""
    skewed = stats.beta(12.0, 3.0)
    assert location_llr_delay(skewed, 0.5, 1e8) < 0.9 * gaussian_cusum_delay(0.5, 1e8)
    assert location_llr_delay(skewed, 2.0, 1e8) > 1.1 * gaussian_cusum_delay(2.0, 1e8)


def test_the_realized_oracle_averages_to_the_expected_delay() -> None:
    """Run on draws of the changed stream, the oracle's realised delays average to its
    expected delay (seeded: 400 runs, the mean within 6 %, about three standard errors)."""
    p0, p1, arl0 = 0.05, 0.2, 1e4
    _before, after, offset, h = _bernoulli_chart(p0, p1, arl0)
    rng = np.random.default_rng(11)
    delays = []
    for _ in range(400):
        flags = rng.random(2_000) < p1
        found = realized_delay(flags.astype(np.int64) * (after.size - 1) + offset, h)
        assert found is not None
        delays.append(found)
    expected = bernoulli_cusum_delay(p0, p1, arl0)
    assert float(np.mean(delays)) == pytest.approx(expected, rel=0.06)
    # Pre-change draws of the same length do not alarm (ARL0 1e4 against 2,000 values).
    quiet = rng.random(2_000) < p0
    assert realized_delay(quiet.astype(np.int64) * (after.size - 1) + offset, h) is None


def test_the_probe_reports_the_oracle_on_the_window_it_saw() -> None:
    """The realised oracle reads the window's own flags: a burst at the start alarms in
    the burst; the same rise spread thinly over the window does not alarm in it."""

    def at(seconds: float) -> str:
        return str(np.datetime64(int(seconds * 1000), "ms")) + "Z"

    start = 1_000_000.0
    settings = load_settings(None).detection
    cut = settings.prompt_injection_cutoff
    for burst, caught in ((40, True), (0, False)):
        probe = Probe("prompt_injection_wave", None, settings)
        for i in range(-2_000, 1_000):
            flagged = (i % 50 == 0) if i < 0 else (i < burst if burst else i % 40 == 0)
            score = cut + 0.01 if flagged else 0.0
            probe.feed(
                f'{{"event_type":"output","timestamp":"{at(start + i * 2.0)}",'
                f'"gen_ai.response.id":"r{i}","prompt_injection":{score}}}',
                True,
            )
        out = probe.result(start, start + 2_000.0, 1e4)
        if caught:
            assert out["realized_events"] is not None
            assert out["realized_events"] <= burst
            assert out["realized_minutes"] == pytest.approx(
                (out["realized_events"] - 1) * 2.0 / 60.0
            )
        else:
            assert out["p1"] > out["p0"]
            assert math.isfinite(out["delay_events"])
            assert out["realized_events"] is None
            assert out["realized_minutes"] is None


def test_the_recovery_oracle_averages_to_its_expected_delay() -> None:
    """The recovery oracle's expected delay is what the test it describes achieves: the
    CUSUM of the log-likelihood ratio of the baseline against the change, from zero to
    5 nats, run on draws at the baseline (seeded: 400 runs each, the means within 6 %)."""
    rng = np.random.default_rng(5)
    p0, p1 = 0.02, 0.1
    flag, clean = math.log(p0 / p1), math.log((1 - p0) / (1 - p1))
    runs = []
    for _ in range(400):
        s, n = 0.0, 0
        while s < 5.0:
            n += 1
            s = max(0.0, s + (flag if rng.random() < p0 else clean))
        runs.append(n)
    assert float(np.mean(runs)) == pytest.approx(bernoulli_recovery_delay(p0, p1), rel=0.06)
    d = 0.8
    runs = []
    for _ in range(400):
        s, n = 0.0, 0
        while s < 5.0:
            n += 1
            s = max(0.0, s - d * (rng.standard_normal() - d / 2))
        runs.append(n)
    assert float(np.mean(runs)) == pytest.approx(gaussian_recovery_delay(d), rel=0.06)
    # A larger change is read as over sooner; a change too small to measure never is.
    assert bernoulli_recovery_delay(p0, 0.3) < bernoulli_recovery_delay(p0, p1)
    assert gaussian_recovery_delay(0.01) == math.inf


def test_the_probe_says_whether_any_test_could_read_the_end_in_time() -> None:
    """After a 2 % -> 12 % wave, the recovery oracle needs about fifty observations at the
    baseline: a busy scope has them within minutes of the end; a scope that sees ten
    after the end could not have its incident resolved by any test."""

    def at(seconds: float) -> str:
        return str(np.datetime64(int(seconds * 1000), "ms")) + "Z"

    start, end = 1_000_000.0, 1_002_000.0
    settings = load_settings(None).detection
    cut = settings.prompt_injection_cutoff
    for after, in_time in ((2_000, True), (10, False)):
        probe = Probe("prompt_injection_wave", None, settings)
        lines = [(start - 4_000.0 + 2.0 * i, i % 50 == 0) for i in range(2_000)]
        lines += [(start + 2.0 * i, i % 8 == 0) for i in range(1_000)]
        lines += [(end + 1.0 * i, i % 50 == 7) for i in range(after)]
        for i, (t, flagged) in enumerate(lines):
            score = cut + 0.01 if flagged else 0.0
            probe.feed(
                f'{{"event_type":"output","timestamp":"{at(t)}",'
                f'"gen_ai.response.id":"r{i}","prompt_injection":{score}}}',
                True,
            )
        rec = probe.result(start, end, 1e6)["recovery"]
        assert rec["events_after"] == after
        assert rec["events"] == pytest.approx(bernoulli_recovery_delay(0.02, 0.125), rel=1e-9)
        assert rec["recoverable"] is in_time
        if in_time:  # read off the traffic after the end: one observation a second
            assert rec["minutes"] == pytest.approx((rec["events"] - 1) / 60.0)
