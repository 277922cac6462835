"""A change while a rate test is still learning its baseline (issue 13: a model watched
from its first day, and no failure learned as the normal rate).

A rare flag's test waits for ``min_events`` events before it has a baseline: hours or
days for a quiet model with no parent key. :mod:`detectors.warmup` pages a change in that
time without a baseline, and the charts then start from the rate before the change.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import hypergeom

from detectors.adaptive_rate import AdaptiveBernoulliCusum
from detectors.rate import BernoulliCusum
from detectors.warmup import WINDOWS, WarmupScan, log_tail


@pytest.mark.parametrize(
    ("x", "total", "events", "draws"),
    [(5, 1000, 30, 64), (12, 1000, 30, 64), (40, 20_000, 100, 2048), (3, 200, 5, 16),
     (1, 50, 10, 8), (9, 100, 9, 64), (0, 10, 3, 4), (4, 10, 3, 4),
     (27, 14_594, 1_303, 12_598), (500, 90_000, 3_000, 20_000)],
)  # fmt: skip
def test_log_tail_is_the_hypergeometric_tail(x: int, total: int, events: int, draws: int) -> None:
    want = float(hypergeom.logsf(x - 1, total, events, draws))
    got = log_tail(x, total, events, draws)
    assert got == pytest.approx(want, abs=1e-9) if math.isfinite(want) else got == want


def test_clean_streams_stay_within_the_budget() -> None:
    """Per observation the scan's false-alarm probability is at most 1 / arl0 (a union
    bound over its windows, each exact): 600 clean streams of 2,000 observations at rates
    from 0.5 % to 30 %, arl0 = 20,000, may raise 60 alarms in expectation; the slack of
    the bound leaves far fewer. The windows' p-values are exact: the test at an event
    that counted the event itself in its window's tail would alarm several times as
    often (measured 31 against 6 here at arl0 = 2,000)."""
    rng = np.random.default_rng(5)
    alarmed = 0
    for stream in range(600):
        p = (0.005, 0.03, 0.3)[stream % 3]
        scan = WarmupScan(20_000.0)
        for i in np.flatnonzero(rng.random(2_000) < p):
            if scan.event(int(i)) is not None:
                alarmed += 1
                break
    assert alarmed <= 12


def _stream(seed: int, before: int, p0: float, p1: float, after: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(before) < p0, rng.random(after) < p1])


def _learning_test() -> AdaptiveBernoulliCusum:
    return AdaptiveBernoulliCusum(arl0=1e8, warmup=1000)


@pytest.mark.parametrize("seed", range(6))
def test_a_change_during_warmup_pages_and_is_not_learned(seed: int) -> None:
    """A 0.5 % flag rate jumps to 10 % after 1,500 observations, while the test still
    waits for its 20th event: the scan pages it within a few hundred observations (the
    change's own events may complete the warm-up first; the scan goes on after it), the
    charts start from the rate before the change, and they alarm again as it goes on."""
    det = _learning_test()
    signals = det.update_many(_stream(seed, 1_500, 0.005, 0.1, 3_000))
    first = signals[0]
    assert first.details["warmup_scan"] == 1.0
    assert 1_500 <= first.last_index < 1_500 + 400
    assert first.first_index >= 1_500 - 200
    assert first.baseline < 0.02
    assert first.observed > 0.05
    assert first.p_value is not None
    assert first.p_value <= 1.0 / (1e8 * WINDOWS)
    assert not det.learning
    assert det.get_state()["scan"] is None
    assert det._parts[0].baseline < 0.01
    assert len(signals) >= 2  # the charts, on the pre-change baseline, see it go on
    ex = det.excess()
    assert ex is not None
    assert ex.alarmed


def test_without_the_scan_the_change_became_the_baseline() -> None:
    """The same stream through the charts alone (the scan's budget set out of reach):
    the warm-up ends on the change's events, and the baseline it learns is the change."""
    det = _learning_test()
    assert det._scan is not None
    det._scan.set_arl0(1e300)
    det.update_many(_stream(0, 1_500, 0.005, 0.1, 3_000))
    assert det._parts[0].baseline > 0.01  # twice the rate before the change


def test_the_scan_ends_a_warmup_after_the_charts_start() -> None:
    """A clean stream: the scan runs through the warm-up and ``warmup`` observations
    more, then the charts judge alone."""
    det = _learning_test()
    det.update_many(_stream(2, 1_200, 0.03, 0.03, 0))
    state = det.get_state()
    assert not det.learning
    assert state["scan"] is not None
    until = state["scan"]["until"]
    assert 2_000 <= until <= 2_200
    det.update_many(_stream(3, until - 1_200 + 50, 0.03, 0.03, 0))
    assert det.get_state()["scan"] is None


@pytest.mark.parametrize("seed", range(3))
def test_batches_states_and_steps_agree(seed: int) -> None:
    """Fed in one batch, one observation at a time, or stopped and restored from its
    state mid-warm-up: the same signals and the same final state."""
    xs = _stream(seed, 1_200, 0.01, 0.12, 800)
    one = _learning_test()
    batch = [(s.last_index, s.statistic) for s in one.update_many(xs)]
    two = _learning_test()
    steps = [(s.last_index, s.statistic) for x in xs if (s := two.update(bool(x))) is not None]
    three = _learning_test()
    head = three.update_many(xs[:700])
    assert three.get_state()["scan"] is not None
    restored = _learning_test()
    restored.set_state(three.get_state())
    tail = restored.update_many(xs[700:])
    resumed = [(s.last_index, s.statistic) for s in head + tail]
    assert batch == steps == resumed
    assert batch[0][0] >= 1_200
    assert one.get_state() == two.get_state() == restored.get_state()


def test_state_saved_before_the_scan_scans_what_follows_against_all_of_it() -> None:
    """A learning test restored from state without a scan: its windows lie after the
    restore (where the events fell before it is unknown), and the warm-up so far enters
    the test and the re-estimate as counts. A rate change after the restore is paged as
    by a test that scanned from the start, on a baseline from before the change."""
    xs = _stream(1, 900, 0.01, 0.15, 600)
    fresh = _learning_test()
    want = fresh.update_many(xs)
    det = _learning_test()
    det.update_many(xs[:850])
    state = det.get_state()
    ref_n, ref_k = state["parts"][0]["ref_n"], state["parts"][0]["ref_k"]
    del state["scan"]
    restored = _learning_test()
    restored.set_state(state)
    scan = restored.get_state()["scan"]
    assert scan == {"origin": 850, "base_n": ref_n, "base_k": ref_k, "until": None, "events": []}
    got = restored.update_many(xs[850:])
    assert got[0].details["warmup_scan"] == 1.0
    assert got[0].last_index == want[0].last_index
    assert got[0].baseline == want[0].baseline
    assert got[0].baseline < 0.02


def test_a_scan_past_its_end_is_gone_from_the_state_however_fed() -> None:
    """The scan's last observation passed among non-events that are only counted: the
    state shows it gone, as after the same observations in one batch."""
    xs = _stream(4, 1_200, 0.03, 0.03, 0)
    steps, batch = _learning_test(), _learning_test()
    for x in xs:
        steps.update(bool(x))
    batch.update_many(xs)
    until = steps.get_state()["scan"]["until"]
    quiet = np.zeros(until - 1_200 + 5, dtype=bool)
    for x in quiet:
        steps.update(bool(x))
    batch.update_many(quiet)
    assert steps.get_state() == batch.get_state()
    assert steps.get_state()["scan"] is None


def test_a_given_or_prior_baseline_has_no_scan() -> None:
    assert AdaptiveBernoulliCusum(p0=0.01).get_state()["scan"] is None
    young = _learning_test()
    young.adopt_prior(AdaptiveBernoulliCusum(p0=0.01), 500.0)
    assert not young.learning
    assert young.get_state()["scan"] is None


def test_relearn_takes_the_observations_before_a_change() -> None:
    det = BernoulliCusum(warmup=1000)
    det.update_many([False] * 50 + [True] * 5)
    with pytest.raises(ValueError, match="observations <= 55"):
        det.relearn(60, 1)  # more observations than it has seen
    with pytest.raises(ValueError, match="events <= observations"):
        det.relearn(3, 4)
    det.relearn(50, 0)
    assert det.calibrated
    assert det.get_state()["ref_n"] == 50
    assert det.get_state()["start"] == 55  # the chart starts afresh
