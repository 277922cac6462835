"""Two-sided mean CUSUMs of a score, exact for its empirical reference distribution.

The mean part of the score charts (:class:`detectors.confidence.ConfidenceShift` and its
subclasses) and of numeric input drift (:class:`detectors.drift.NumericDrift`). Values
are standardised by the reference mean and standard deviation, ``z = (x - mu) / sigma``.
Each direction (up, down) runs one one-sided CUSUM per design shift ``d`` (``shift``
times each of ``designs``), with reference value ``d / 2``, optimal for a mean shift of
``d`` standard deviations. Scores are bounded and skewed, so no Gaussian formula is used:
each increment is rounded to a grid of ``resolution`` standard deviations and each
threshold is the exact Markov-chain value for the empirical reference distribution of the
rounded increments (:func:`detectors.arl.lattice_threshold`).

A direction's designs split its ARL0 as the adaptive rates do
(:class:`detectors.adaptive_rate.AdaptiveBernoulliCusum`): each runs at ``len(designs)``
times it, so the direction keeps its ARL0 (false-alarm rates add). A chart for half a
standard deviation reacts to a shift of 1.5 at about 0.55 of the optimal speed, one for 1
or 2 at about 0.9; the split costs a few percent at half a standard deviation.

The reference mean is an estimate (standard error ``1 / sqrt(n)`` standard deviations),
and a chart designed on a mean that came out on the wrong side alarms far sooner than its
ARL0 (the estimated-parameter effect). Each direction's thresholds are therefore solved
as if the mean were ``baseline_confidence``'s one-sided bound towards its alarm, as the
learned-rate charts do (:data:`detectors.rate.BASELINE_CONFIDENCE`).
"""

from __future__ import annotations

import functools
import itertools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.special import ndtri
from scipy.stats import chi2

from detectors.arl import (
    NoThresholdError,
    SolveRequest,
    answers,
    lattice_threshold_now,
    solved,
)
from detectors.base import Direction, Excess, JsonState, Signal, SignalKind, frozen
from detectors.kernels import capped_steps, recovery_walk
from detectors.rate import episode_cap

__all__ = [
    "PRIOR_MIN_OWN",
    "PRIOR_QUANTILES",
    "Fired",
    "MeanChart",
    "PriorCharts",
    "PriorStep",
    "normal_score",
    "normal_scores",
    "prior_min_own",
    "reference_awaiting",
]

PRIOR_QUANTILES = 256
"""Order statistics of a parent's reference a young key keeps per feature for its prior."""

_DIRECTIONS = (Direction.UP, Direction.DOWN)


def normal_score(reference: Sequence[float], x: float) -> float:
    """``Phi^-1(F(x))``, ``F`` the mid-rank empirical distribution of the sorted
    ``reference`` (clipped to ``[1/2n, 1 - 1/2n]``): under no change the scores are standard
    normal whatever the scale and shape of the values, so a chart on them is scale-free
    and its exact lattice calibration well conditioned."""
    scores = _rank_scores(len(reference))
    return scores[bisect_left(reference, x) + bisect_right(reference, x)]


@functools.lru_cache(maxsize=64)
def _rank_scores(n: int) -> tuple[float, ...]:
    """:func:`normal_score` at each of the ``2n + 1`` mid-ranks a reference of ``n`` values
    gives, indexed by twice the rank (``bisect_left + bisect_right``): computed once per
    reference size, not once per value charted."""
    return tuple(
        float(ndtri(min(max(twice / 2.0 / n, 0.5 / n), 1.0 - 0.5 / n)))
        for twice in range(2 * n + 1)
    )


def normal_scores(
    reference: np.ndarray[Any, Any], xs: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """:func:`normal_score` of every value in ``xs`` against the sorted ``reference``: the
    same table read at the same ranks, so the same floats (NaN too: ``bisect`` places it
    at the middle rank, where ``searchsorted`` would sort it last)."""
    n = reference.size
    twice = np.searchsorted(reference, xs, "left") + np.searchsorted(reference, xs, "right")
    twice[np.isnan(xs)] = n
    scores: np.ndarray[Any, Any] = _rank_table(n)[twice]
    return scores


@functools.lru_cache(maxsize=64)
def _rank_table(n: int) -> np.ndarray[Any, Any]:
    """:func:`_rank_scores` as a read-only array (for :func:`normal_scores`)."""
    table = np.asarray(_rank_scores(n), dtype=np.float64)
    table.flags.writeable = False
    return table


def _unarmed() -> list[list[int]]:
    """Both directions' recovery tests before any alarm: never recovered. Each is
    ``[height, reference value, cap, armed, values since it last stood at its cap]``."""
    return [[0, 1, 0, 0, 0], [0, 1, 0, 0, 0]]


def _copied(value: Any) -> Any:
    """A state value copied: lists (of lists) one level deep, numbers as they are."""
    if isinstance(value, list):
        return [list(v) if isinstance(v, list) else v for v in value]
    return value


@dataclass(frozen=True)
class Fired:
    """One direction's alarm: the design furthest over its threshold on that observation."""

    direction: Direction
    design_sd: float
    statistic: float  # in standard deviations
    threshold: float
    start: int  # change-point estimate: the first observation of the excursion
    observed: float  # mean of the charted values since ``start``


class MeanChart:
    """Up and down mean CUSUMs for several design shifts (not a detector: a part of one).

    ``fit(reference, n, arl0)`` estimates the reference and solves the thresholds;
    ``update(x, n)`` charts one value; ``excess`` reads the smallest design's episode per
    direction. ``arl0`` is each direction's.
    """

    def __init__(
        self,
        shift: float,
        designs: tuple[float, ...],
        resolution: float,
        baseline_confidence: float,
    ) -> None:
        if not designs or designs[0] != 1.0 or any(b <= a for a, b in itertools.pairwise(designs)):
            raise ValueError(f"designs must ascend from 1.0, got {designs}")
        self.shift = shift
        self.designs = designs
        self.resolution = resolution
        self.baseline_confidence = baseline_confidence
        self.arl0 = 0.0
        m = len(designs)
        self.mu = 0.0
        self.sigma = 1.0
        self.kq = [0] * m  # reference value k of each design, in grid units
        # Per direction (up, down) and design: thresholds in grid units (empty until
        # fitted), statistics, change-point estimates, sums of the values since them.
        self.h: list[list[int]] = []
        self.s = [[0] * m, [0] * m]
        self.start = [[0] * m, [0] * m]
        self.sum = [[0.0] * m, [0.0] * m]
        # Episodes (see ``excess``): shadow CUSUMs of the smallest design per direction
        # that do not restart at an alarm and are capped at its threshold; [stat, start,
        # sum, alarmed by any design's CUSUM].
        self.ep: list[list[Any]] = [[0, 0, 0.0, False], [0, 0, 0.0, False]]
        # Recovery tests per direction (see ``_arm``): [height, reference k, cap, armed],
        # in grid units; height 0 once the change that armed it reads as over.
        self.rec: list[list[int]] = _unarmed()
        # The smallest design's rounded reference increments per direction ([offset,
        # pmf...]), kept so a new ARL0 re-derives the thresholds without the reference; a
        # larger design's increments are the same, offset by its k.
        self.pmf: list[list[float]] = []
        # Thresholds still on drift_bound's stand-in, with their deferred solves
        # (detectors.arl.defer_solves): (direction, design, request). Not state: a chart
        # restored with stand-ins (``bound``) asks again.
        self.bound = False
        self._pending: list[tuple[int, int, SolveRequest]] = []
        self._asked = -1  # detectors.arl.answers() at the last poll (not state)
        # Values stepped since the last alarm in update_many, carried from call to call
        # (how it schedules its work, not state: any value gives the same results).
        self._calm = _MANY_MIN

    @property
    def ready(self) -> bool:
        return bool(self.h)

    @property
    def alarmed(self) -> bool:
        """Whether a direction is in an alarmed change: its episode alarmed and its
        recovery test does not read the change as over (:meth:`recovered`)."""
        return any(
            bool(ep[3]) and not self.recovered(direction)
            for ep, direction in zip(self.ep, (Direction.UP, Direction.DOWN), strict=True)
        )

    def blank(self) -> MeanChart:
        """An unfitted chart with this one's shift, designs and resolution."""
        return MeanChart(self.shift, self.designs, self.resolution, self.baseline_confidence)

    _KEYS = ("mu", "sigma", "kq", "h", "s", "start", "sum", "ep", "pmf")

    def get_state(self) -> JsonState:
        state = {key: _copied(getattr(self, key)) for key in self._KEYS}
        state["rec"] = _copied(self.rec)
        if self.bound:
            state["bound_arl0"] = self.arl0  # the stand-ins' target, to ask for again
        return state

    def set_state(self, state: JsonState) -> None:
        if len(state["kq"]) != len(self.designs):
            raise ValueError(
                f"state has {len(state['kq'])} design(s), the chart {len(self.designs)}"
            )
        for key in self._KEYS:
            setattr(self, key, _copied(state[key]))
        # Absent in state of older releases: recovery is then judged by the episode; a
        # test saved without its count counts from the restore (a later end estimate).
        self.rec = [[*r, 0][:5] for r in _copied(state["rec"])] if "rec" in state else _unarmed()
        # Saved on stand-ins: the first update (or retarget) asks for the exact ones again.
        self.bound, self._pending = "bound_arl0" in state, []
        if self.bound:
            self.arl0 = float(state["bound_arl0"])

    def fit(self, reference: np.ndarray[Any, Any], n: int, arl0: float) -> None:
        """Estimate the reference (``n``: the index of the next observation) and solve
        every threshold at ``arl0`` per direction."""
        self.arl0 = arl0
        self._estimate(reference, reference.size)
        self._start_charts(n)

    def refit(self, reference: np.ndarray[Any, Any], stands_for: int, arl0: float) -> None:
        """Estimate a grown reference (quantiles standing for ``stands_for`` values, whose
        mean the guard bounds) and re-solve the thresholds at ``arl0``, keeping the
        statistics, episodes and recovery tests
        (:meth:`detectors.confidence.ConfidenceShift._refit` refits at rest)."""
        self.arl0 = arl0
        guesses = [[max(1, h) for h in hs] for hs in self.h]
        self._estimate(reference, stands_for)
        self._thresholds(guesses)

    def _estimate(self, reference: np.ndarray[Any, Any], stands_for: int) -> None:
        """Mean, standard deviation and each direction's rounded increments of
        ``reference``, the mean taken at the guard's bound for ``stands_for`` values."""
        self.mu = float(reference.mean())
        self.sigma = max(float(reference.std(ddof=1)), 1e-9)
        res = self.resolution
        self.kq = [max(1, round(m * self.shift / 2 / res)) for m in self.designs]
        z = (reference - self.mu) / self.sigma
        # The mean's upper confidence bound towards each alarm, in standard deviations:
        # rounding z + margin onto the grid moves the increments' mean by the margin.
        margin = NormalDist().inv_cdf(self.baseline_confidence) / math.sqrt(stands_for)
        self.pmf = []
        for sign in (1, -1):
            inc = np.rint((sign * z + margin) / res).astype(np.int64) - self.kq[0]
            lo = int(inc.min())
            pmf = np.bincount(inc - lo).astype(np.float64) / inc.size
            self.pmf.append([float(lo), *pmf.tolist()])

    def fit_shape(
        self,
        sample: np.ndarray[Any, Any],
        shape: MeanChart,
        shape_size: int,
        n: int,
        arl0: float,
    ) -> None:
        """Fit on a short ``sample`` of this key's own values, borrowing the standardised
        shape of ``shape``'s (a parent key's) reference of ``shape_size`` values: the
        shrinkage prior of a young segment's score chart
        (:meth:`detectors.confidence.ConfidenceShift.adopt_prior`).

        Location and scale are this key's own (a segment's scores may sit apart from its
        model's), each taken at its one-sided ``baseline_confidence`` bound: the mean's
        margin is that of ``sample.size`` values (the parent's increments are moved by the
        difference of the two margins, rounded up to the grid), the standard deviation is
        its chi-square upper bound. Only the tails of the increments come from the parent,
        which a few dozen values cannot estimate. ``shape`` must be fitted, with this
        chart's shift, designs and resolution."""
        if not shape.ready or (shape.shift, shape.designs, shape.resolution) != (
            self.shift,
            self.designs,
            self.resolution,
        ):
            raise ValueError("shape must be a fitted chart with the same designs")
        m = sample.size
        if m < 2:
            raise ValueError("need at least two values of the key's own")
        self.arl0 = arl0
        self.mu = float(sample.mean())
        upper = math.sqrt((m - 1) / float(chi2.ppf(1.0 - self.baseline_confidence, m - 1)))
        self.sigma = max(float(sample.std(ddof=1)) * upper, 1e-9)
        self.kq = list(shape.kq)
        z = NormalDist().inv_cdf(self.baseline_confidence)
        move = math.ceil((z / math.sqrt(m) - z / math.sqrt(shape_size)) / self.resolution)
        self.pmf = [[p[0] + max(move, 0), *p[1:]] for p in shape.pmf]
        self._start_charts(n)

    def _start_charts(self, n: int) -> None:
        """Solve every threshold from ``pmf`` and start the statistics at observation ``n``."""
        self._thresholds([[self._guess(j) for j in range(len(self.kq))]] * 2)
        m = len(self.designs)
        self.s = [[0] * m, [0] * m]
        self.start = [[n] * m, [n] * m]
        self.sum = [[0.0] * m, [0.0] * m]
        self.ep = [[0, n, 0.0, False], [0, n, 0.0, False]]
        self.rec = _unarmed()

    def retarget(self, arl0: float) -> None:
        """Re-solve the thresholds at a new ARL0 per direction, keeping the statistics."""
        self.arl0 = arl0
        if self.h and len(self.pmf) == 2:
            self._thresholds([[max(1, h) for h in hs] for hs in self.h])

    def _thresholds(self, guesses: list[list[int]]) -> None:
        """Every direction's and design's threshold at ``arl0``, searched from ``guesses``:
        exact, or stand-ins while deferred solves run (then :meth:`poll` takes them)."""
        self.h, self._pending = [], []
        for side, row in enumerate(guesses):
            hs = []
            for j, guess in enumerate(row):
                h, request = self._solve(side, j, guess)
                hs.append(h)
                if request is not None:
                    self._pending.append((side, j, request))
            self.h.append(hs)
        self.bound = bool(self._pending)

    def poll(self) -> None:
        """Take the exact thresholds whose deferred solves have come back (stand-ins are
        above them: the chart only becomes as sensitive as it was designed to be)."""
        self._asked = answers()
        if not self._pending:
            self.retarget(self.arl0)  # restored on stand-ins: the requests were not kept
            return
        waiting = []
        for side, j, request in self._pending:
            h = solved(request)
            if h is None:
                waiting.append((side, j, request))
            else:
                self.h[side][j] = h
        self._pending = waiting
        self.bound = bool(waiting)

    def _guess(self, design: int) -> int:
        """Wald/Siegmund-style start for a threshold search: h ~ ln(2 k^2 arl0) / (2 k)."""
        k = self.kq[design] * self.resolution
        arl0 = self.arl0 * len(self.designs)
        return max(1, int(math.log(2 * k * k * arl0 + 1) / (2 * k) / self.resolution))

    def _solve(self, side: int, design: int, guess: int) -> tuple[int, SolveRequest | None]:
        """Threshold of one direction's CUSUM for one design, at that design's ARL0
        (:func:`detectors.arl.lattice_threshold_now`)."""
        stored = self.pmf[side]
        lo = int(stored[0]) + self.kq[0] - self.kq[design]
        pmf = np.asarray(stored[1:], dtype=np.float64)
        return lattice_threshold_now(pmf, lo, self.arl0 * len(self.designs), guess)

    @property
    def ratio(self) -> float:
        """Largest statistic / threshold over directions and designs (alarm at 1)."""
        if not self.h:
            return 0.0
        return max(
            s / h
            for ss, hs in zip(self.s, self.h, strict=True)
            for s, h in zip(ss, hs, strict=True)
        )

    def update(self, x: float, n: int) -> list[Fired]:
        """Chart value ``x`` (observation ``n``); the alarms it raised, at most one per
        direction. An alarm restarts every design of its direction: the slower designs'
        statistics hold evidence of the same change, which would otherwise raise late
        alarms of their own after it ended (a multi-chart CUSUM stops at the first chart
        that signals: Han, Tsung, Hu & Wang 2007).

        Each direction also keeps its episode: the first design's CUSUM capped at its
        threshold, which an alarm does not restart (what :meth:`excess` reads). One loop
        and no calls per design: this runs for every value of every mean chart."""
        if self.bound and self._asked != answers():
            self.poll()
        zq = round((x - self.mu) / self.sigma / self.resolution)
        kqs = self.kq
        fired: list[Fired] = []
        for side in (0, 1):
            z = zq if side == 0 else -zq
            hs = self.h[side]
            ep = self.ep[side]
            e = ep[0] + z - kqs[0]
            if e <= 0:
                ep[:] = [0, n + 1, 0.0, False]
            else:
                ep[0] = min(e, hs[0])
                ep[2] += x
            rec = self.rec[side]
            if rec[0]:
                rec[0] = max(0, min(rec[0] + z - rec[1], rec[2]))
                rec[4] = 0 if rec[0] == rec[2] else rec[4] + 1
            elif rec[3]:
                rec[4] += 1
            ss, starts, sums = self.s[side], self.start[side], self.sum[side]
            best: Fired | None = None
            for j, kq in enumerate(kqs):
                s = ss[j] + z - kq
                if s <= 0:
                    ss[j], starts[j], sums[j] = 0, n + 1, 0.0
                    continue
                ss[j], sums[j] = s, sums[j] + x
                if s >= hs[j] and (best is None or s / hs[j] > best.statistic / best.threshold):
                    best = Fired(
                        direction=_DIRECTIONS[side],
                        design_sd=self.designs[j] * self.shift,
                        statistic=s * self.resolution,
                        threshold=hs[j] * self.resolution,
                        start=starts[j],
                        observed=sums[j] / (n - starts[j] + 1),
                    )
            if best is not None:
                for j in range(len(kqs)):
                    ss[j], starts[j], sums[j] = 0, n + 1, 0.0
                ep[3] = True
                # The shift the test is matched to: the episode's mean (it spans the
                # change), not the firing design's, whose recent start overstates it.
                m = n - int(ep[1]) + 1
                self._arm(side, ep[2] / m if ep[0] > 0 and m > 0 else best.observed)
                fired.append(best)
        return fired

    def update_many(self, xs: Sequence[float], n: int) -> list[tuple[int, Fired]]:
        """:meth:`update` of each value of ``xs`` in turn (``n``: the first one's
        observation); the alarms, each with its observation. The same alarms and the same
        state as the steps, bit for bit: between alarms every statistic is a walk on
        integer grid steps (:mod:`detectors.kernels`) and the sums since each start are
        sequential float sums; the value that alarms goes through :meth:`update`.

        Step by step instead: a batch of fewer than :data:`_MANY_MIN` values, values that
        arrive while deferred solves run (a solve may land between any two), values off
        the exact grid (non-finite or huge), and the values after an alarm until
        :data:`_MANY_MIN` in a row raise none (a change in progress alarms every few
        values; each quiet run would be a few values long). A quiet run looks at the whole
        batch; after an alarm, at spans that start at :data:`_MANY_MIN` values and double
        while none alarms (no rest of the batch walked again at every alarm)."""
        if len(xs) < _MANY_MIN:
            return [nf for i, v in enumerate(xs) for nf in self._stepped(float(v), n + i)]
        x = np.asarray(xs, dtype=np.float64)
        fired: list[tuple[int, Fired]] = []
        scaled = (x - self.mu) / self.sigma / self.resolution
        stepping = not np.all(np.abs(scaled) < _GRID_MAX)  # off the exact grid (NaN too)
        zq = np.zeros(x.size, dtype=np.int64) if stepping else np.rint(scaled).astype(np.int64)
        ahead = x.size
        i = 0
        while i < x.size:
            if stepping or self.bound or self._calm < _MANY_MIN:
                fired += self._stepped(float(x[i]), n + i)
                i += 1
                continue
            end = min(x.size, i + ahead)
            i += self._quiet_run(x[i:end], zq[i:end], n + i)
            if i == end:
                ahead *= 2  # quiet to the end: look further next time
            else:
                ahead, self._calm = _MANY_MIN, 0  # the value at i alarms: step from it
        return fired

    def _stepped(self, x: float, n: int) -> list[tuple[int, Fired]]:
        """:meth:`update` of one value inside :meth:`update_many`, counting the values
        stepped since the last alarm."""
        raised = self.update(x, n)
        self._calm = 0 if raised else self._calm + 1
        return [(n, f) for f in raised]

    def _quiet_run(self, x: np.ndarray[Any, Any], zq: np.ndarray[Any, Any], n: int) -> int:
        """Take the values ``x`` (grid values ``zq``, the first at observation ``n``) up to
        the first that alarms, leaving the state :meth:`update` would; returns how many
        were taken. Every direction's designs walk as the rows of one array."""
        m = len(self.kq)
        kq = np.asarray(self.kq, dtype=np.int64)
        signs = np.repeat(np.asarray([1, -1], dtype=np.int64), m)[:, None]
        s0 = np.asarray(self.s[0] + self.s[1], dtype=np.int64)[:, None]
        walk = s0 + np.cumsum(signs * zq - np.tile(kq, 2)[:, None], axis=1)
        paths = walk - np.minimum(np.minimum.accumulate(walk, axis=1), 0)
        over = paths >= np.asarray(self.h[0] + self.h[1], dtype=np.int64)[:, None]
        hit = over.any(axis=0)
        size = int(hit.argmax()) if hit.any() else zq.size
        if not size:
            return 0
        x, zq, paths = x[:size], zq[:size], paths[:, :size]
        # Each row's start and sum: restarted after its last zero, else carried.
        zero = paths == 0
        restarted = zero.any(axis=1)
        last = size - 1 - zero[:, ::-1].argmax(axis=1)
        carry = np.asarray(self.sum[0] + self.sum[1], dtype=np.float64)
        after = np.arange(size)[None, :] > np.where(restarted, last, -1)[:, None]
        head = np.where(restarted, 0.0, carry)[:, None]
        terms = np.concatenate((head, np.where(after, x, 0.0)), axis=1)
        sums = np.cumsum(terms, axis=1)[:, -1].tolist()
        ends = paths[:, -1].tolist()
        for r in range(2 * m):
            side, j = divmod(r, m)
            self.s[side][j] = ends[r]
            self.sum[side][j] = sums[r]
            if restarted[r]:
                self.start[side][j] = n + int(last[r]) + 1
        for side, sign in ((0, 1), (1, -1)):
            self._walk_tests(side, x, sign * zq, n)
        return size

    def _walk_tests(
        self, side: int, x: np.ndarray[Any, Any], z: np.ndarray[Any, Any], n: int
    ) -> None:
        """``side``'s episode and recovery test over grid values ``z`` (values ``x``, the
        first at observation ``n``), none of which alarms."""
        ep = self.ep[side]
        walk = capped_steps(int(ep[0]), z - self.kq[0], self.h[side][0])
        kept = x[walk.last_zero + 1 :]  # the values its sum holds
        if walk.last_zero >= 0:
            ep[1], ep[2], ep[3] = n + walk.last_zero + 1, 0.0, False
        if kept.size:
            ep[2] = float(np.cumsum(np.concatenate(([ep[2]], kept)))[-1])
        ep[0] = walk.value
        rec = self.rec[side]
        rec[0], rec[4] = recovery_walk(rec[0], z - rec[1], rec[2], rec[4], bool(rec[3]))

    def _arm(self, side: int, observed: float) -> None:
        """(Re-)arm ``side``'s recovery test at an alarm, the mean being at ``observed``.

        The episode of the smallest design drains at about half that design's shift per
        value once the mean is back: ``h / k`` values, hours of a tenant's judge scores. The
        recovery test is matched to the change instead, as the rate detectors' is
        (:mod:`detectors.recovery`): a one-sided CUSUM of the Gaussian log-likelihood
        ratio of the baseline against ``d1`` = half the observed shift (at least the
        smallest design's), started and capped at :data:`~detectors.rate.EPISODE_CAP_NATS`
        (``cap / d1`` standard deviations). It stays at the cap while the change lasts
        and drains at ``d1 / 2`` per value once the mean is back below ``d1 / 2``: reads
        recovered after about ``2 cap / d1^2`` values (~18 after a 1.5 sd drop)."""
        sign = 1.0 if side == 0 else -1.0
        shift = sign * (observed - self.mu) / self.sigma
        d1 = max(self.designs[0] * self.shift, shift / 2.0)
        k = max(1, round(d1 / 2.0 / self.resolution))
        cap = episode_cap(d1 * self.resolution)  # a grid step is worth d1 x res nats
        self.rec[side] = [cap, k, cap, 1, 0]

    def signal(
        self,
        detector: str,
        kind: SignalKind,
        n: int,
        fired: Fired,
        feature: str,
        details: dict[str, float],
    ) -> Signal:
        """The signal of an alarm (``n``: its observation): ``statistic``/``threshold`` in
        standard deviations, ``baseline`` the reference mean, ``observed`` the mean since
        the change-point estimate (``first_index``), ``effect_size`` their difference in
        reference standard deviations (Cohen's d)."""
        return Signal(
            detector=detector,
            kind=kind,
            statistic=fired.statistic,
            threshold=fired.threshold,
            baseline=self.mu,
            observed=fired.observed,
            effect_size=(fired.observed - self.mu) / self.sigma,
            direction=fired.direction,
            first_index=fired.start,
            last_index=n,
            n_observations=n - fired.start + 1,
            feature=feature,
            details={"sigma": self.sigma, "design_sd": fired.design_sd, **details},
        )

    def excess(self, direction: Direction, n: int) -> Excess | None:
        """The smallest design's episode in ``direction`` (UP, else down; ``n``:
        observations so far; the baseline is the reference mean): ``excess`` = episode
        length x shift of the mean (positive in that direction), ``surprise`` = length x
        d^2 / 2 with d the shift in reference standard deviations (Gaussian
        log-likelihood ratio), ``scale`` = the reference standard deviation."""
        if not self.h:
            return None
        up = direction is Direction.UP
        ep = self.ep[0 if up else 1]
        m = n - int(ep[1])
        baseline = self.mu
        observed = float(ep[2]) / m if m else baseline
        shift = (observed - baseline) if up else (baseline - observed)
        d = shift / self.sigma
        return Excess(
            n=m,
            baseline=baseline,
            observed=observed,
            excess=m * shift,
            surprise=m * d * d / 2 if shift > 0 else 0.0,
            alarmed=bool(ep[3]),
            recovered=self.recovered(direction),
            quiet_for=self.quiet_for(direction),
            scale=self.sigma,
        )

    def recovered(self, direction: Direction) -> bool:
        """The recovery test armed by ``direction``'s last alarm reads the change as over
        (see :meth:`_arm`); False before any alarm armed it."""
        rec = self.rec[0 if direction is Direction.UP else 1]
        return bool(rec[3]) and rec[0] == 0

    def quiet_for(self, direction: Direction) -> int | None:
        """Values since ``direction``'s recovery test last stood at its cap: once
        :meth:`recovered` (or the episode has closed), its estimate of how long ago the
        change ended (None: never armed)."""
        rec = self.rec[0 if direction is Direction.UP else 1]
        return int(rec[4]) if rec[3] else None


_MANY_MIN = 64
"""Values below which :meth:`MeanChart.update_many` goes step by step (numpy's per-call
cost exceeds a step's), and the values in a row without an alarm it steps after one before
it batches again."""

_GRID_MAX = 2.0**52
"""Grid values below which rounding in numpy equals Python's ``round`` exactly."""


PRIOR_MIN_OWN = 20
"""Own values a young key needs at least before it charts on its parent's shape (its
mean and standard deviation come from them)."""


def reference_awaiting(own: int, reference_size: int, prior: PriorCharts | None, unit: str) -> str:
    """What a chart that cannot alarm yet still needs, for an operator: ``own`` of the
    ``reference_size`` values of its reference, or, with a parent's prior not started
    yet, of the ``prior.min_own`` values it charts that prior from."""
    if prior is not None and not prior.charts:
        return f"{own:,} of {prior.min_own:,} {unit} to chart on its parent's baseline"
    return f"{own:,} of {reference_size:,} reference {unit}"


def prior_min_own(strength: float, reference_size: int) -> int:
    """Own values before a young key with a prior of ``strength`` charts: ``strength``,
    at least :data:`PRIOR_MIN_OWN`; 0 (no prior) when that leaves no room before its own
    reference of ``reference_size`` is complete, or ``strength`` is 0 (priors off)."""
    own = max(PRIOR_MIN_OWN, round(strength))
    return own if strength > 0 and own < reference_size else 0


@dataclass(frozen=True)
class PriorStep:
    """What one observation did to a young key's :class:`PriorCharts`."""

    fired: list[tuple[int, Fired]]  # alarms: (feature index, alarm)
    back: int  # values referenced last to take back out of the key's reference
    hold: bool  # whether this one stays out of the reference
    restart: bool  # a reference's worth held: start the key's reference (and charts) anew

    def apply(self, reference: list[Any]) -> bool:
        """Take values back out of the key's ``reference`` (or all of them, on a restart);
        whether this observation is held out of it."""
        if self.back:
            del reference[max(0, len(reference) - self.back) :]
        if self.restart:
            reference.clear()
        return self.hold


class PriorCharts:
    """A young key's mean charts on its parent's reference shapes, one per feature: the
    shrinkage prior of score charts and numeric drift (not a detector: a part of one).

    Holds the parent's fitted charts (``shapes``, see :meth:`MeanChart.fit_shape`) and,
    for charts on normal scores, the parent's reference per feature (``spaces``: at most
    :data:`PRIOR_QUANTILES` of its order statistics; empty: values are charted as they
    are). ``start`` fits the key's own charts once it has ``min_own`` values of its own;
    ``update`` charts one row and says whether it joins the key's reference and how many
    of the values referenced last must be taken back out of it: values seen while an
    episode is alarmed join none, and a first alarm's excursion, referenced value by
    value until it alarmed, is taken back: the reference must not hold the change. At
    most ``cap`` values (the key's reference size) are held out in all: a "change" that
    lasts that long is the segment's own level, which its first values missed (a
    segment's mix can differ by the hour). The key then starts its reference anew from
    that level, and its young charts with it (after ``min_own`` values).
    """

    def __init__(
        self,
        shapes: list[MeanChart],
        spaces: Sequence[Sequence[float]],
        size: int,
        min_own: int,
        cap: int,
    ) -> None:
        self.shapes = shapes
        self.spaces = frozen(spaces)
        self.size = size  # the parent's reference size (its mean's margin)
        self.min_own = min_own
        self.cap = cap
        self.held = 0  # values held out of the key's reference so far
        self.charts: list[MeanChart] = []

    @classmethod
    def adopt(
        cls,
        charts: Sequence[MeanChart],
        references: Sequence[Sequence[float]],
        size: int,
        strength: float,
        reference_size: int,
    ) -> PriorCharts | None:
        """A young key's prior from its parent's fitted ``charts`` and sorted
        ``references`` (reference ``size``), with ``strength`` own values before it charts
        (:func:`prior_min_own`) and the key's own ``reference_size`` as the cap; None when
        that leaves no room."""
        own = prior_min_own(strength, reference_size)
        if not own:
            return None
        shapes = [chart.blank() for chart in charts]
        for shape, chart in zip(shapes, charts, strict=True):
            shape.set_state(chart.get_state())
        spaces = []
        for ref in references:
            q = min(len(ref), PRIOR_QUANTILES)
            spaces.append([float(ref[(2 * i + 1) * len(ref) // (2 * q)]) for i in range(q)])
        return cls(shapes, spaces, size, own, reference_size)

    def get_state(self) -> JsonState:
        return {
            "shapes": [c.get_state() for c in self.shapes],
            "spaces": self.spaces,
            "size": self.size,
            "min": self.min_own,
            "cap": self.cap,
            "held": self.held,
            "charts": [c.get_state() for c in self.charts],
        }

    @classmethod
    def from_state(cls, state: JsonState, template: MeanChart) -> PriorCharts:
        def chart(st: JsonState) -> MeanChart:
            c = template.blank()
            c.set_state(st)
            return c

        prior = cls(
            [chart(s) for s in state["shapes"]],
            state["spaces"],
            state["size"],
            state["min"],
            state["cap"],
        )
        prior.held = state["held"]
        prior.charts = [chart(s) for s in state["charts"]]
        return prior

    def value(self, j: int, x: float) -> float:
        """Feature ``j``'s value ``x`` in the parent's charted space."""
        return normal_score(self.spaces[j], x) if self.spaces else x

    def start(self, own: Sequence[Sequence[float]], n: int, arl0: float) -> None:
        """Fit the charts on the key's own rows so far (``n``: the next observation).

        Few own values give a wide margin on their mean: when it is wider than a design's
        reference value, that design's increments no longer drift down and no threshold
        exists (below about 87 values at the default 0.5 sd design). Then no chart starts,
        and the key tries again at 1.5x as many values."""
        charts = []
        try:
            for j, shape in enumerate(self.shapes):
                chart = shape.blank()
                sample = np.asarray([self.value(j, row[j]) for row in own], dtype=np.float64)
                chart.fit_shape(sample, shape, self.size, n, arl0)
                charts.append(chart)
        except NoThresholdError:
            self.min_own = math.ceil(1.5 * max(self.min_own, len(own)))
            return
        self.charts = charts

    def update(self, row: Sequence[float], n: int, held_out: bool = False) -> PriorStep:
        """Chart observation ``n`` (one value per feature); see :class:`PriorStep`.
        ``held_out``: the caller keeps it out of the key's reference whatever the charts
        say (a more general key alarms, see ``update_settled``): it counts toward no
        restart, which is for a level the key's own values keep showing."""
        fired: list[tuple[int, Fired]] = []
        start = n
        for j, chart in enumerate(self.charts):
            was = [ep[3] for ep in chart.ep]
            for f in chart.update(self.value(j, row[j]), n):
                fired.append((j, f))
            for ep, w in zip(chart.ep, was, strict=True):
                if ep[3] and not w:
                    start = min(start, int(ep[1]))
        back = min(n - start, self.cap - self.held)
        self.held += back
        if held_out:
            return PriorStep(fired, back, hold=True, restart=False)
        if not any(ep[3] for chart in self.charts for ep in chart.ep):
            return PriorStep(fired, back, hold=False, restart=False)
        if self.held < self.cap:
            self.held += 1
            return PriorStep(fired, back, hold=True, restart=False)
        self.charts, self.held = [], 0  # its first values missed the key's level
        return PriorStep(fired, back, hold=False, restart=True)

    def retarget(self, arl0: float) -> None:
        for chart in self.charts:
            chart.retarget(arl0)
