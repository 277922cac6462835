"""Thresholds without waiting for a solve (detectors.arl.defer_solves): the stand-in bound
keeps the ARL0, and a detector that gets its exact threshold back behaves exactly as one
that solved at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from detectors.arl import (
    SolveRequest,
    add_thresholds,
    answers,
    bernoulli_arl,
    bernoulli_lattice,
    bernoulli_threshold,
    bernoulli_threshold_now,
    clear_thresholds,
    defer_solves,
    drift_bound,
    lattice_arl,
    lattice_threshold,
    lattice_threshold_now,
    record_solved,
    solved,
)
from detectors.base import Detector, Signal
from detectors.confidence import ConfidenceShift
from detectors.rate import BernoulliCusum


class Requests:
    """An in-process stand-in for the worker's child process: keeps what is sent, answers
    when told (the test decides when an answer comes back)."""

    def __init__(self) -> None:
        self.sent: list[SolveRequest] = []

    def __call__(self, request: SolveRequest) -> None:
        self.sent.append(request)

    def answer(self) -> int:
        n = len(self.sent)
        for request in self.sent:
            record_solved(request, request.solve())
        self.sent.clear()
        return n


@pytest.fixture
def requests() -> Iterator[Requests]:
    clear_thresholds()
    sent = Requests()
    defer_solves(sent)
    try:
        yield sent
    finally:
        defer_solves(None)
        clear_thresholds()


BERNOULLI = [
    (0.05, 0.10, 1e4, None),
    (0.005, 0.01, 1e6, None),
    (0.001, 0.003, 1e5, 0.0012),
    (0.2, 0.3, 1e3, 0.21),
    (0.02, 0.03, 3e5, 0.0205),
]


@pytest.mark.parametrize(("p0", "p1", "arl0", "rate"), BERNOULLI)
def test_the_bound_keeps_the_arl0_of_a_rate_chart(
    p0: float, p1: float, arl0: float, rate: float | None
) -> None:
    lat = bernoulli_lattice(p0, p1)
    r = p0 if rate is None else rate
    bound = drift_bound(np.array([lat.up, -lat.down]), np.array([r, 1 - r]), arl0)
    exact = bernoulli_threshold(p0, p1, arl0, rate)
    assert bound >= exact
    assert bernoulli_arl(lat.up, lat.down, bound, r) >= arl0


@pytest.mark.parametrize("seed", range(6))
def test_the_bound_keeps_the_arl0_of_a_mean_chart(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.beta(2.0 + 10 * rng.random(), 2.0 + 3 * rng.random(), 800)
    z = (scores - scores.mean()) / scores.std()
    inc = np.rint(z / 0.125).astype(np.int64) - int(rng.integers(2, 6))
    lo = int(inc.min())
    pmf = np.bincount(inc - lo).astype(np.float64) / inc.size
    for arl0 in (1e3, 1e5):
        bound = drift_bound(lo + np.arange(pmf.size), pmf, arl0)
        assert bound >= lattice_threshold(pmf, lo, arl0, 5)
        assert lattice_arl(pmf, lo, bound) >= arl0


def test_the_bound_refuses_increments_that_never_alarm_or_never_return() -> None:
    with pytest.raises(ValueError, match="drift downwards"):
        drift_bound(np.array([1, -1]), np.array([0.6, 0.4]), 1e3)
    with pytest.raises(ValueError, match="drift downwards"):
        drift_bound(np.array([-2, 0]), np.array([0.5, 0.5]), 1e3)


def test_a_deferred_threshold_is_a_bound_until_answered(requests: Requests) -> None:
    h, request = bernoulli_threshold_now(0.05, 0.1, 1e4)
    again, _ = bernoulli_threshold_now(0.05, 0.1, 1e4)
    assert request is not None
    assert h == request.bound == again
    assert requests.sent == [request]  # sent once while in flight
    assert solved(request) is None
    assert requests.answer() == 1
    exact = solved(request)
    assert exact is not None
    assert exact < h
    assert bernoulli_threshold_now(0.05, 0.1, 1e4) == (exact, None)
    defer_solves(None)
    clear_thresholds()
    assert bernoulli_threshold(0.05, 0.1, 1e4) == exact


def test_a_request_that_was_lost_is_sent_again_or_solved_here(requests: Requests) -> None:
    pmf = np.array([0.15, 0.3, 0.2, 0.2, 0.15])
    h, request = lattice_threshold_now(pmf, -2, 1e4, 3)
    assert request is not None
    assert requests.sent == [request]
    requests.sent.clear()  # the child died with it
    defer_solves(requests)  # a new child: nothing is in flight
    assert solved(request) is None
    assert requests.sent == [request]
    defer_solves(None)  # the worker stops deferring
    assert solved(request) == lattice_threshold(pmf, -2, 1e4, 3) < h


def _run(detector: Detector[Any], xs: list[Any], each: Callable[[], object]) -> list[Signal]:
    out = []
    for x in xs:
        signal = detector.update(x)
        if signal is not None:
            out.append(signal)
        each()
    return out


def _rates(seed: int) -> list[bool]:
    rng = np.random.default_rng(seed)
    p = np.where(np.arange(40_000) < 25_000, 0.02, 0.04)
    return [bool(v) for v in rng.random(p.size) < p]


def _scores(seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    a = np.where(np.arange(6_000) < 4_000, 12.0, 9.0)
    return [float(v) for v in rng.beta(a, 3.0)]


CASES: list[tuple[Callable[[], Detector[Any]], Callable[[int], list[Any]]]] = [
    (lambda: BernoulliCusum(warmup=500, arl0=1e6), _rates),
    (lambda: ConfidenceShift(arl0=1e5, reference_size=500), _scores),
]


@pytest.mark.parametrize(("make", "stream"), CASES)
def test_answered_at_once_a_deferred_detector_is_the_exact_one(
    requests: Requests, make: Callable[[], Detector[Any]], stream: Callable[[int], list[Any]]
) -> None:
    xs = stream(3)
    deferred = _run(make(), xs, requests.answer)
    assert deferred  # the change is caught
    defer_solves(None)
    clear_thresholds()
    assert _run(make(), xs, lambda: None) == deferred


@pytest.mark.parametrize(("make", "stream"), CASES)
def test_a_detector_on_bounds_is_no_more_alarmed_and_takes_the_answer_later(
    requests: Requests, make: Callable[[], Detector[Any]], stream: Callable[[int], list[Any]]
) -> None:
    """Before the change, never answered: no alarm, as the exact detector. Saved on bounds
    and restored after the answers came back, it charts on, exactly as the detector that
    solved at once (no alarm moved a statistic apart)."""
    xs = stream(4)
    before_change = xs[: int(len(xs) * 0.6)]
    on_bounds = make()
    assert _run(on_bounds, before_change, lambda: None) == []
    assert requests.sent  # it asked, and charted on bounds meanwhile
    state = on_bounds.get_state()
    requests.answer()
    defer_solves(None)
    exact = make()
    assert _run(exact, before_change, lambda: None) == []
    assert state != exact.get_state()  # thresholds: bounds, and flagged as such
    restored = make()
    restored.set_state(state)
    rest = xs[len(before_change) :]
    caught = _run(restored, rest, lambda: None)
    assert caught  # the change
    assert caught == _run(exact, rest, lambda: None)
    assert restored.get_state() == exact.get_state()


@pytest.mark.parametrize(("make", "stream"), CASES)
def test_a_detector_on_bounds_asks_again_only_when_an_answer_came(
    requests: Requests,
    make: Callable[[], Detector[Any]],
    stream: Callable[[int], list[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Polling the solves is one comparison per update while no answer comes back
    (:func:`detectors.arl.answers`); the first update after an answer takes it."""
    import detectors.mean_chart
    import detectors.rate

    asked: list[SolveRequest] = []

    def counted(request: SolveRequest) -> int | None:
        asked.append(request)
        return solved(request)

    for module in (detectors.mean_chart, detectors.rate):
        monkeypatch.setattr(module, "solved", counted)
    xs = stream(5)[:3_000]
    detector = make()
    assert _run(detector, xs[:2_000], lambda: None) == []
    waiting = len(requests.sent)
    assert waiting  # on bounds since its warm-up ended
    assert len(asked) <= waiting  # not once per update: at most once per request
    moved = answers()
    requests.answer()
    assert answers() > moved
    before = len(asked)
    _run(detector, xs[2_000:2_001], lambda: None)
    assert len(asked) > before  # the next update asked, and took the answers
    assert "bound_arl0" not in str(detector.get_state())
    settled = len(asked)
    _run(detector, xs[2_001:], lambda: None)
    assert len(asked) == settled  # exact thresholds: nothing left to ask


def test_the_answer_count_moves_with_every_change_of_the_answers(requests: Requests) -> None:
    moves = [answers()]
    _, request = bernoulli_threshold_now(0.05, 0.1, 1e4)
    assert request is not None
    assert answers() == moves[-1]  # asking is no answer
    requests.answer()
    moves.append(answers())
    add_thresholds({(0.05, 0.2, 1e4, None): 40})
    moves.append(answers())
    defer_solves(requests)
    moves.append(answers())
    clear_thresholds()
    moves.append(answers())
    assert moves == sorted(set(moves))  # each moved it
