"""Exact run lengths of CUSUM charts whose increments live on an integer lattice.

A one-sided CUSUM ``S_n = max(0, S_{n-1} + Z_n)`` that alarms when ``S_n >= h`` is a Markov
chain when the increments ``Z_n`` are i.i.d. If the increments are integers (in some unit),
the chain has the finitely many states ``0 .. h-1`` and its average run length (ARL) is the
solution of one linear system, with no approximation at all (Brook & Evans 1972). We make
the *detectors* use integer increments too, so that the figure computed here is the exact
ARL of the detector that runs, not of an idealised one:

* Bernoulli CUSUM: the log-likelihood-ratio increments are ``a = ln(p1/p0)`` (event) and
  ``b = ln((1-p1)/(1-p0))`` (no event). We choose integers ``up``, ``down`` with
  ``up/down ~ a/|b|`` to 1 % and the unit ``|b|/down`` nats, i.e. the detector is the
  exact CUSUM for a ``p1`` within about a percent of the design value (a design choice,
  not an estimate: the ARL stays exact for the detector that runs).
* General increments (confidence scores): the detector rounds each standardised increment
  to a grid; the ARL is then exact for the distribution of the rounded increments, which
  we take from the reference window.

The threshold for a target ARL0 (expected number of events between false alarms) is the
smallest lattice threshold whose exact ARL0 reaches the target, found by bracketing and
bisection; results are cached so building many detectors is cheap.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.linalg import solve_banded
from scipy.sparse.linalg import splu

__all__ = [
    "BernoulliLattice",
    "NoThresholdError",
    "SolveRequest",
    "add_thresholds",
    "answers",
    "bernoulli_arl",
    "bernoulli_cusum_delay",
    "bernoulli_kl",
    "bernoulli_lattice",
    "bernoulli_threshold",
    "bernoulli_threshold_now",
    "calibration_rate",
    "clear_thresholds",
    "defer_solves",
    "deferring",
    "drift_bound",
    "grid_rate",
    "known_thresholds",
    "lattice_arl",
    "lattice_arls",
    "lattice_threshold",
    "lattice_threshold_now",
    "record_solved",
    "solved",
    "zero_drift_rate",
]

_RATIO_TOL = 1e-2
_MAX_DOWN = 64


class NoThresholdError(ValueError):
    """No threshold reaches the ARL0: the CUSUM's increments do not drift down under the
    reference distribution (a design at or below the rate, or the mean, it is fed)."""


@dataclass(frozen=True)
class BernoulliLattice:
    """Integer increments of a Bernoulli CUSUM designed for ``p0 -> p1``.

    ``unit`` is the size of one lattice step in nats: an event adds ``up`` steps, a
    non-event subtracts ``down`` steps.
    """

    p0: float
    p1: float
    up: int
    down: int
    unit: float


@functools.lru_cache(maxsize=4096)
def bernoulli_lattice(p0: float, p1: float) -> BernoulliLattice:
    """Integer log-likelihood-ratio increments for a rate increase ``p0 -> p1``.

    The smallest ``down`` (at most 64) is used for which ``up/down`` matches ``a/|b|``
    within 1 %; a finer lattice only adds states (and solve time) for a ``p1`` closer to
    the design value, which is itself a choice. For rare rates (``a/|b|`` >= 50) this
    gives ``down == 1``, whose thresholds come from one cached pass
    (:func:`_down1_threshold`) instead of sparse solves of 10^5-10^6 states.
    """
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")
    a = math.log(p1 / p0)
    b = -math.log((1.0 - p1) / (1.0 - p0))
    ratio = a / b
    best = (math.inf, 1, max(1, round(ratio)))
    for down in range(1, _MAX_DOWN + 1):
        up = max(1, round(ratio * down))
        err = abs(up / (down * ratio) - 1.0)
        if err < best[0]:
            best = (err, down, up)
        if err <= _RATIO_TOL:
            break
    _, down, up = best
    return BernoulliLattice(p0=p0, p1=p1, up=up, down=down, unit=b / down)


def bernoulli_arl(up: int, down: int, h: int, p: float) -> float:
    """Exact zero-state ARL of the integer CUSUM ``S = max(0, S + step)``, alarm at ``S >= h``.

    ``step`` is ``+up`` with probability ``p`` and ``-down`` otherwise. The ARL counts the
    observations up to and including the alarm. Solved as a banded linear system
    ``(I - P) L = 1`` over the transient states ``0 .. h-1``, or, when ``down == 1``, by
    the O(up)-memory recursion of :func:`_down1_arls`.
    """
    if h <= 0:
        return 1.0
    if up <= 0 or down <= 0 or not 0.0 <= p <= 1.0:
        raise ValueError("need up, down >= 1 and 0 <= p <= 1")
    if down == 1 and 0.0 < p < 1.0:
        return next(itertools.islice(_down1_arls(up, p), h - 1, None))
    if h * up > SPARSE_ABOVE:
        return _sparse_arl(up, down, h, p)
    return _banded_arl(up, down, h, p)


SPARSE_ABOVE = 800_000
"""``h * up`` above which a sparse LU beats LAPACK's banded solve (2-4x at 1.5M-2.5M,
measured; a banded solve is faster below). The matrix has three entries per row."""


def _sparse_arl(up: int, down: int, h: int, p: float) -> float:
    """:func:`bernoulli_arl` by a sparse LU (COLAMD ordering) of ``I - P``."""
    rows = np.arange(h)
    far = rows[rows + up < h]
    i = np.concatenate([rows, rows, far])
    j = np.concatenate([rows, np.maximum(rows - down, 0), far + up])
    v = np.concatenate([np.ones(h), np.full(h, -(1.0 - p)), np.full(far.size, -p)])
    matrix = sparse.csc_matrix((v, (i, j)), shape=(h, h))  # duplicates (i=j=0) are summed
    arl = splu(matrix, permc_spec="COLAMD").solve(np.ones(h))
    return float(arl[0])


def _banded_arl(up: int, down: int, h: int, p: float) -> float:
    """:func:`bernoulli_arl` by one banded solve (memory ``O(h * (up + down))``)."""
    q = 1.0 - p
    n = h
    lower, upper = down, up
    ab = np.zeros((lower + upper + 1, n))
    # Banded storage: A[i, j] is at ab[upper + i - j, j].
    ab[upper, :] = 1.0
    rows = np.arange(n)
    # Non-event: i -> max(i - down, 0).
    cols = np.maximum(rows - down, 0)
    np.subtract.at(ab, (upper + rows - cols, cols), q)
    # Event: i -> i + up, absorbing when >= h.
    keep = rows + up < n
    r_up = rows[keep]
    ab[upper + r_up - (r_up + up), r_up + up] -= p
    arl = solve_banded((lower, upper), ab, np.ones(n), check_finite=False)
    return float(arl[0])


def _down1_arls(up: int, p: float) -> Iterator[float]:
    """Exact zero-state ARLs for thresholds ``h = 1, 2, ...`` of the CUSUM with steps
    ``+up`` (probability ``p``) and ``-1``, in one pass, O(up) memory, O(1) per threshold.

    The banded solve needs ``O(h * up)`` memory: for a rare rate (``up`` ~ 800, ``h`` ~
    70,000) that was 1.4 GB and 5 s per calibration, inside the worker's event loop. With
    ``down == 1`` the system has a structure that avoids it: counting states from the
    top, ``m = h - 1 - i``, the equation of state ``i`` is
    ``L(i) = 1 + q L(i-1) + p L(i+up)``, and ``L(i+up)`` is an affine function of ``L(i)``
    (the composition of the ``up`` maps above it, which depend on ``m`` only, not on
    ``h``). So ``L(i) = a_m + b_m L(i-1)`` with ``(a_m, b_m)`` from a sliding-window
    composition of affine maps (two stacks, amortised O(1)); the bottom state, which
    reflects (``L(0) = 1 + q L(0) + p L(up)``), then gives the ARL of threshold ``m + 1``.
    All terms are positive: no cancellation except in ``1 - B``, whose relative error
    stays ~1e-16 / (1 - B) (checked against the banded solve in the tests).
    """
    # A map x -> a + b x is kept as (a, ln b): b tends to 1 as m grows and the ARL lives in
    # 1 - B, which ``-expm1(ln B)`` keeps exact where ``1.0 - B`` would cancel.
    # Window of the last ``up`` maps, oldest outermost: ``front`` holds (map, composition
    # of it and every newer map in front), ``back`` the newer maps and their composition.
    front: list[tuple[float, float, float, float]] = []
    back: list[tuple[float, float]] = []
    back_a, back_lb = 0.0, 0.0  # identity when empty
    first = (1.0, math.log1p(-p))  # an event from the top ``up`` states alarms
    m = 0
    while True:
        if m < up:
            g = first
            yield 1.0 / p
        else:
            if front:
                fa, flb = front[-1][2], front[-1][3]
                big_a, big_lb = fa + math.exp(flb) * back_a, flb + back_lb
            else:
                big_a, big_lb = back_a, back_lb
            escape = -math.expm1(big_lb)  # 1 - B
            denominator = 1.0 - p + p * escape  # 1 - p B
            g = ((1.0 + p * big_a) / denominator, math.log1p(-p * escape / denominator))
            rate_out = p * escape  # alarms per step from the bottom state, in the long run
            yield (1.0 + p * big_a) / rate_out if rate_out > 0.0 else math.inf
            # Drop the oldest map (index m - up) from the window.
            if not front:
                agg_a, agg_lb = 0.0, 0.0
                for a, lb in reversed(back):
                    agg_a, agg_lb = a + math.exp(lb) * agg_a, lb + agg_lb
                    front.append((a, lb, agg_a, agg_lb))
                back, back_a, back_lb = [], 0.0, 0.0
            front.pop()
        back.append(g)
        back_a, back_lb = back_a + math.exp(back_lb) * g[0], back_lb + g[1]
        m += 1


def _search(
    arl_of: functools.partial[float],
    target: float,
    start: int,
    slope: float = 0.0,
    known: dict[int, float] | None = None,
) -> int:
    """Smallest integer ``h >= 1`` with ``arl_of(h) >= target`` (the ARL increases with h).

    ``ln ARL(h)`` is close to linear in ``h`` (the ARL grows like ``e^{r h}``), so a secant
    search on it from ``start`` (a Wald-style guess) lands within a step or two of the
    answer; a bracket ``lo < answer <= hi`` is kept throughout and bisection takes over
    whenever the secant step would leave it. ``slope`` (d ln ARL / dh, if known) makes
    the first step a Newton step. Typically 3-6 linear solves.

    ``known``: the ARLs already solved for this chain (:func:`_chain_arls`), read and
    extended. A key's run length moves between a few targets as its traffic follows the
    daily cycle; with them the bracket often closes with no solve, and otherwise the
    secant starts from the two known points nearest the target (one or two solves).
    """
    log_target = math.log(target)
    known = {} if known is None else known

    def f_of(h: int) -> float:
        arl = known.get(h)
        if arl is None:
            arl = arl_of(h)
            if not arl > 0.0:
                # A linear solve for an ARL beyond ~1e16 (a threshold far above any
                # target: a step of the search overshot) loses every digit and can come
                # out negative or NaN. It is above the target: say so, and the search
                # steps back down.
                arl = math.inf
            known[h] = arl
        return math.log(arl) - log_target

    lo, hi = 0, 0  # ARL(0) = 1 < target; hi = 0 means "no upper bracket yet"
    for h_known, arl in known.items():
        if arl >= target:
            hi = h_known if not hi else min(hi, h_known)
        else:
            lo = max(lo, h_known)
    if hi and hi - lo <= 1:
        return hi
    points: list[tuple[int, float]] = []
    h = max(1, start)
    if len(known) >= 2:
        near = sorted(known, key=lambda k: abs(math.log(known[k]) - log_target))[:2]
        points = [(k, math.log(known[k]) - log_target) for k in reversed(near)]
        (h0, f0), (h1, f1) = points
        if math.isfinite(f0) and math.isfinite(f1) and f1 != f0:
            h = round(h1 - f1 * (h1 - h0) / (f1 - f0))
        h = max(h, lo + 1) if not hi else min(max(h, lo + 1), hi - 1)
    while True:
        f = f_of(h)
        if f >= 0:
            hi = h if not hi else min(hi, h)
        else:
            lo = max(lo, h)
        if hi and hi - lo <= 1:
            return hi
        points.append((h, f))
        x = math.nan
        if len(points) >= 2:
            (h0, f0), (h1, f1) = points[-2], points[-1]
            if math.isfinite(f0) and math.isfinite(f1) and f1 != f0:
                x = h1 - f1 * (h1 - h0) / (f1 - f0)
        if math.isnan(x) and slope > 0 and math.isfinite(f):
            x = h - f / slope
        if math.isnan(x):
            x = h * 1.25 + 1 if f < 0 else h * 0.8
        cand = round(x)
        if not hi:
            # No upper bracket yet: step up, at least by one and at most 4x.
            cand = min(max(cand, lo + 1), 4 * lo + 4)
            if cand <= h and f < 0:
                cand = 2 * h
        elif len(points) > 8:
            cand = (lo + hi) // 2  # the secant is not converging: plain bisection
        else:
            cand = min(max(cand, lo + 1), hi - 1)
        h = cand


MAX_CHAINS = 4096
"""Chains whose solved ARLs are kept (least recently used dropped): up to about 2 KB each
(a score chart's key holds its increment distribution), under 10 MB in all."""

_CHAINS: OrderedDict[Hashable, dict[int, float]] = OrderedDict()


def _chain_arls(key: Hashable) -> dict[int, float]:
    """The ARLs solved so far (threshold -> ARL) for the chain ``key`` (a lattice and rate,
    or an increment distribution), kept for later searches on the same chain."""
    arls = _CHAINS.get(key)
    if arls is None:
        arls = _CHAINS[key] = {}
        if len(_CHAINS) > MAX_CHAINS:
            _CHAINS.popitem(last=False)
    else:
        _CHAINS.move_to_end(key)
    return arls


def _wald_h(arl0: float, kl: float) -> float:
    """Wald's threshold approximation: solve ``(e^h - h - 1) / kl = arl0`` for ``h``."""
    h = math.log(max(arl0 * kl, 1.0) + 1.0)
    for _ in range(50):
        h = math.log(arl0 * kl + h + 1.0)
    return h


ThresholdKey = tuple[float, float, float, float | None]
"""``(p0, p1, arl0, rate)`` of a Bernoulli CUSUM calibration."""

_THRESHOLDS: dict[ThresholdKey, int] = {}


def bernoulli_threshold(p0: float, p1: float, arl0: float, rate: float | None = None) -> int:
    """Smallest lattice threshold (in ``bernoulli_lattice(p0, p1).unit``) with ARL0 >= arl0.

    The ARL0 is computed at the true rate ``rate`` (default ``p0``): a detector whose
    baseline was estimated can be calibrated at an upper confidence bound of the rate.
    ``rate`` must be below the zero-drift rate ``down / (up + down)`` of the lattice.

    Each ``(p0, p1, arl0, rate)`` is solved once per process and kept in a table that
    :func:`known_thresholds` exports and :func:`add_thresholds` preloads (the service
    keeps it on disk between runs, so a baseline seen before costs no solve).
    """
    key = (p0, p1, arl0, rate)
    h = _THRESHOLDS.get(key)
    if h is None:
        h = _THRESHOLDS[key] = _bernoulli_threshold(p0, p1, arl0, rate)
        _answered()
    return h


def known_thresholds() -> dict[ThresholdKey, int]:
    """Every Bernoulli threshold solved (or preloaded) in this process."""
    return dict(_THRESHOLDS)


def add_thresholds(entries: dict[ThresholdKey, int]) -> None:
    """Preload solved thresholds (from :func:`known_thresholds` of an earlier run)."""
    for (p0, p1, arl0, rate), h in entries.items():
        if not (0.0 < p0 < p1 < 1.0 and arl0 >= 1.0 and h >= 1):
            raise ValueError(f"not a threshold entry: {(p0, p1, arl0, rate)} -> {h}")
        if rate is not None and not 0.0 < rate < 1.0:
            raise ValueError(f"not a threshold entry: rate {rate}")
    _THRESHOLDS.update(entries)
    _answered()


def clear_thresholds() -> None:
    """Forget every solved threshold and ARL (tests, benchmarks of the solve itself)."""
    _answered()
    _THRESHOLDS.clear()
    _SEQUENCES.clear()
    _CHAINS.clear()
    _LATTICE_SOLVED.clear()
    _IN_FLIGHT.clear()


RATE_GRID_STEPS = 32
"""Rates (a learned baseline, the rate a threshold is calibrated at) live on the geometric
grid ``2^(k / 32)``: steps of 2.2 %, below the sampling error of any baseline learned from
fewer than ~2,000 events, and coarse enough that keys with similar rates share one
threshold solve."""


def grid_rate(rate: float) -> float:
    """``rate`` rounded to the nearest point of the rate grid (within 1.1 %)."""
    return float(2.0 ** (round(math.log2(rate) * RATE_GRID_STEPS) / RATE_GRID_STEPS))


def calibration_rate(rate: float, p0: float, p1: float) -> float:
    """``rate`` rounded *up* onto the rate grid, so that learned baselines near each other
    share one calibration: a threshold calibrated at a higher rate has an ARL0 at least as
    long at the true one (conservative, by at most 2.2 % of the rate). Left as it is when
    the grid point would not drift down for ``p0 -> p1``."""
    k = math.ceil(math.log2(rate) * RATE_GRID_STEPS - 1e-9)
    for kk in (k, k + 1):
        grid = float(2.0 ** (kk / RATE_GRID_STEPS))
        if grid >= rate:
            return grid if grid < zero_drift_rate(p0, p1) else rate
    return rate


def bernoulli_kl(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q)) in nats (0 < q < 1)."""
    out = p * math.log(p / q) if p > 0 else 0.0
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


def _bernoulli_threshold(p0: float, p1: float, arl0: float, rate: float | None) -> int:
    if arl0 < 1.0:
        raise ValueError("arl0 must be >= 1")
    lat = bernoulli_lattice(p0, p1)
    rate = p0 if rate is None else rate
    if rate >= zero_drift_rate(p0, p1):
        raise ValueError(f"rate {rate} does not drift down for the CUSUM {p0} -> {p1}")
    kl = bernoulli_kl(p0, p1)
    start = max(1, int(_wald_h(arl0, kl) / lat.unit))
    if lat.down == 1:
        # One pass over the thresholds: rare rates have lattices of ~10^5 states, where
        # the banded solves of the search took seconds and gigabytes (see _down1_arls).
        return _down1_threshold(lat.up, rate, arl0)
    arl_of = functools.partial(_bern_arl_h, lat.up, lat.down, rate)
    known = _chain_arls(("bernoulli", lat.up, lat.down, rate))
    # At the design rate the LLR CUSUM's ARL grows like e^h (h in nats).
    return _search(arl_of, arl0, start, slope=lat.unit, known=known)


class _Down1Arls:
    """The ARLs of thresholds ``1, 2, ...`` of one ``down == 1`` lattice at one rate,
    computed as far as asked and kept: every ARL0 target of a key (its run length moves
    with its traffic, see :mod:`streams.pipeline.budget`) is then a binary search."""

    def __init__(self, up: int, p: float) -> None:
        self._more = _down1_arls(up, p)
        self.arls = array("d")

    def threshold(self, arl0: float) -> int:
        arls = self.arls
        if not arls or arls[-1] < arl0:
            for arl in self._more:
                arls.append(arl)
                if arl >= arl0:
                    break
        return bisect.bisect_left(arls, arl0) + 1


SEQUENCE_DOUBLES: Final = 8 << 20
"""ARLs kept over all ``down == 1`` sequences (64 MiB of doubles), least recently used
dropped first: a sequence dropped and asked for again is computed again from its first
threshold. Bounded by size, not count: a 36-hour replay asked for 2,033 sequences whose
longest ran to 4.2 M ARLs in all (docs/validation.md, stop 31)."""


class _Sequences:
    """The kept ARL sequences, least recently used first, and how many ARLs they hold in
    all (a running count, not a sum over the sequences at each new one)."""

    def __init__(self) -> None:
        self.kept: OrderedDict[tuple[int, float], _Down1Arls] = OrderedDict()
        self.total = 0

    def threshold(self, up: int, p: float, arl0: float) -> int:
        key = (up, p)
        seq = self.kept.get(key)
        if seq is not None:
            self.kept.move_to_end(key)
        else:
            seq = self.kept[key] = _Down1Arls(up, p)
            while self.total > SEQUENCE_DOUBLES and len(self.kept) > 1:
                _, dropped = self.kept.popitem(last=False)
                self.total -= len(dropped.arls)
        before = len(seq.arls)
        try:
            return seq.threshold(arl0)
        finally:
            self.total += len(seq.arls) - before

    def clear(self) -> None:
        self.kept.clear()
        self.total = 0


_SEQUENCES: Final = _Sequences()


def _down1_threshold(up: int, p: float, arl0: float) -> int:
    """Smallest ``h`` whose ARL (steps ``+up`` with probability ``p``, else ``-1``) reaches
    ``arl0``; the ARL increases with ``h`` (its sequence kept, :data:`SEQUENCE_DOUBLES`)."""
    return _SEQUENCES.threshold(up, p, arl0)


def zero_drift_rate(p0: float, p1: float) -> float:
    """The rate at which the lattice CUSUM for ``p0 -> p1`` has zero mean increment."""
    lat = bernoulli_lattice(p0, p1)
    return lat.down / (lat.up + lat.down)


def _bern_arl_h(up: int, down: int, p: float, h: int) -> float:
    return bernoulli_arl(up, down, h, p)


def bernoulli_cusum_delay(p0: float, p1: float, arl0: float) -> float:
    """Exact expected delay (zero-state ARL1 at rate ``p1``) of the CUSUM for ``p0 -> p1``.

    The threshold is the one that gives ARL0 >= ``arl0`` at rate ``p0``. By Lorden (1971)
    and Moustakides (1986) no detector with the same ARL0 has a smaller worst-case delay.

    >>> round(bernoulli_cusum_delay(0.05, 0.10, 1e4))  # DESIGN.md: 202 events
    202
    """
    lat = bernoulli_lattice(p0, p1)
    h = bernoulli_threshold(p0, p1, arl0)
    return bernoulli_arl(lat.up, lat.down, h, p1)


def lattice_arl(pmf: NDArray[np.float64], offset: int, h: int) -> float:
    """Exact zero-state ARL of ``S = max(0, S + Z)``, alarm at ``S >= h``, integer ``Z``.

    ``pmf[j]`` is ``P(Z = offset + j)``. A banded solve over the ``h`` transient states,
    built straight into band storage: O(h * bandwidth^2) time, O(h * bandwidth) memory.
    """
    if h <= 0:
        return 1.0
    return float(lattice_arls(pmf, offset, h)[0])


def lattice_arls(pmf: NDArray[np.float64], offset: int, h: int) -> NDArray[np.float64]:
    """The ARL from every transient state ``0 .. h-1`` of the chart of :func:`lattice_arl`
    (``h >= 1``): what a chart that is already up still needs, e.g. once a change that
    reached it gradually is complete (bench/oracle.py)."""
    size = pmf.size
    if offset + size - 1 <= 0 or pmf[max(0, 1 - offset) :].sum() == 0:
        return np.full(h, math.inf)  # no upward step: the chart never alarms
    # Row i of I - P reaches columns i + offset .. i + max step (column 0 only for
    # i <= -offset): a banded system, built straight into LAPACK's band storage
    # (ab[upper + i - j, j] = (I - P)[i, j]) and solved in O(h * bandwidth^2).
    lower = min(h - 1, max(0, -offset))
    upper = min(h - 1, max(0, offset + size - 1))
    ab = np.zeros((lower + upper + 1, h))
    # Diagonal d = j - i: -P(Z = d) for the moves to states j >= 1 (a Toeplitz band).
    for d in range(-lower, upper + 1):
        k = d - offset
        ab[upper - d, max(d, 0) : h + min(d, 0)] = -pmf[k] if 0 <= k < size else 0.0
    ab[upper] += 1.0
    # Column 0 collects every step that would go to or below zero: P(Z <= -i).
    rows = np.arange(lower + 1)
    below = -rows - offset
    cdf = np.cumsum(pmf)
    ab[upper + rows, 0] = (rows == 0) - np.where(below >= 0, cdf[np.clip(below, 0, size - 1)], 0.0)
    return np.asarray(solve_banded((lower, upper), ab, np.ones(h), check_finite=False))


def lattice_threshold(pmf: NDArray[np.float64], offset: int, arl0: float, start: int) -> int:
    """Smallest integer threshold with ``lattice_arl(pmf, offset, h) >= arl0``.

    The increments must have a negative mean (else no threshold reaches the target).
    """
    mean = float(np.dot(pmf, offset + np.arange(pmf.size)))
    if mean >= 0:
        raise NoThresholdError("the increments must drift downwards under the reference")
    arl_of = functools.partial(_lattice_arl_h, pmf, offset)
    return _search(arl_of, arl0, start, known=_chain_arls(("lattice", offset, pmf.tobytes())))


def _lattice_arl_h(pmf: NDArray[np.float64], offset: int, h: int) -> float:
    return lattice_arl(pmf, offset, h)


# -- thresholds without waiting for a solve ---------------------------------------------


def drift_bound(steps: Sequence[int], probs: Sequence[float], arl0: float) -> int:
    """A threshold whose ARL0 is at least ``arl0`` for *every* CUSUM of the i.i.d. integer
    increments ``steps`` (probabilities ``probs``, negative mean), with no linear solve.

    Let ``theta > 0`` solve ``E[exp(theta Z)] = 1`` (the adjustment coefficient). From
    zero, ``exp(theta W)`` of the unreflected walk is a martingale, so an excursion
    reaches ``h`` before returning to zero or below with probability at most
    ``exp(-theta h)`` (optional stopping). Each excursion takes at least one observation,
    so ARL0 >= ``exp(theta h)``, and ``h = ceil(ln(arl0) / theta)`` suffices. It is above
    the exact threshold (1.1-3x): a stand-in while the exact one is solved elsewhere
    (:func:`defer_solves`), never a replacement for it. A few Newton steps in plain
    Python (tens of microseconds: the arrays are short).
    """
    pairs = [(float(zi), math.log(pi)) for zi, pi in zip(steps, probs, strict=True) if pi > 0.0]
    if arl0 <= 1.0:
        return 1
    if sum(zi * math.exp(lp) for zi, lp in pairs) >= 0.0 or max(pairs)[0] <= 0.0:
        raise NoThresholdError("the increments must drift downwards and reach above zero")

    def excess(theta: float) -> tuple[float, float]:
        """ln E[exp(theta Z)] (convex, < 0 between 0 and the root) and its derivative."""
        top = max(lp + theta * zi for zi, lp in pairs)
        total = moment = 0.0
        for zi, lp in pairs:
            w = math.exp(lp + theta * zi - top)
            total += w
            moment += w * zi
        return top + math.log(total), moment / total

    # Newton from the right of the root: on a convex function it stays there and
    # descends to it. Then step just below: the threshold from a theta under the root
    # is the larger one, on the safe side.
    z_top, lp_top = max(pairs)
    theta = -lp_top / z_top * (1.0 + 1e-9) + 1e-12  # excess >= lp_top + theta z_top > 0
    for _ in range(100):
        f, slope = excess(theta)
        step = f / slope
        theta -= step
        if step <= 1e-10 * theta:
            break
    lower = theta * (1.0 - 1e-8)
    while excess(lower)[0] >= 0.0:
        lower *= 0.5
    return max(1, math.ceil(math.log(arl0) / lower))


SolveKey = tuple[Any, ...]
"""``("bernoulli", p0, p1, arl0, rate)`` or ``("lattice", offset, pmf bytes, arl0)``."""


@dataclass(frozen=True)
class SolveRequest:
    """An exact threshold solve to run away from the event loop (:func:`defer_solves`).

    ``key`` is where the answer is kept (:func:`record_solved`); ``bound`` the stand-in
    the detector uses meanwhile, and the answer kept if the solve fails."""

    key: SolveKey
    bound: int
    start: int = 1

    def solve(self) -> int:
        """The exact threshold (in whichever process runs it)."""
        if self.key[0] == "bernoulli":
            _, p0, p1, arl0, rate = self.key
            return _bernoulli_threshold(p0, p1, arl0, rate)
        _, offset, pmf_bytes, arl0 = self.key
        pmf = np.frombuffer(pmf_bytes, dtype=np.float64)
        return lattice_threshold(pmf, offset, arl0, self.start)


_DEFER: list[Callable[[SolveRequest], None]] = []
_IN_FLIGHT: weakref.WeakValueDictionary[SolveKey, SolveRequest] = weakref.WeakValueDictionary()
"""Deferred requests by key, while some detector (or the solver) still holds them: a
request that every detector has replaced by a newer one (its baseline or ARL0 moved
meanwhile) drops out, and is not solved if it has not been sent yet."""
MAX_LATTICE_SOLVED = 65_536
"""Mean-chart thresholds solved away from the loop and kept until their charts read them
(least recently added dropped: a chart that finds its answer gone asks again)."""
_LATTICE_SOLVED: OrderedDict[SolveKey, int] = OrderedDict()
_ANSWERS = 0
"""Moves whenever the answer to a deferred request may have come or gone (:func:`answers`)."""


def _answered() -> None:
    global _ANSWERS
    _ANSWERS += 1


def answers() -> int:
    """A count that moves whenever an answer to a deferred request may have come or gone:
    an answer recorded or dropped (:func:`record_solved`), thresholds preloaded or
    cleared, deferral switched. Between two moves :func:`solved` gives every request
    the same answer, so a detector charting on a stand-in asks it again only when the
    count has moved (one comparison per update instead of a lookup per pending solve)."""
    return _ANSWERS


def defer_solves(submit: Callable[[SolveRequest], None] | None) -> None:
    """Send the exact solves that :func:`bernoulli_threshold_now` and
    :func:`lattice_threshold_now` miss to ``submit`` (None: solve at once, in the caller).

    The live worker defers (streams.runtime.solves): its event loop never waits for a
    solve, and a detector charts on :func:`drift_bound` until :func:`record_solved` has
    the exact threshold. Replay, backtests and the benchmarks solve at once, so that
    their incidents do not depend on how fast a solve came back.
    """
    _DEFER[:] = [] if submit is None else [submit]
    _IN_FLIGHT.clear()
    _answered()


def deferring() -> bool:
    """Whether threshold solves are deferred (:func:`defer_solves`)."""
    return bool(_DEFER)


def record_solved(request: SolveRequest, h: int) -> None:
    """Keep the answer to a deferred ``request`` where its detectors look for it."""
    _answered()
    _IN_FLIGHT.pop(request.key, None)
    if request.key[0] == "bernoulli":
        _, p0, p1, arl0, rate = request.key
        _THRESHOLDS[(p0, p1, arl0, rate)] = h
        return
    _LATTICE_SOLVED[request.key] = h
    while len(_LATTICE_SOLVED) > MAX_LATTICE_SOLVED:
        _LATTICE_SOLVED.popitem(last=False)


def _deferred(key: SolveKey, bound: Callable[[], int], start: int = 1) -> SolveRequest:
    """The request for ``key`` with its stand-in threshold, sent once while in flight."""
    request = _IN_FLIGHT.get(key)
    if request is None:
        request = _IN_FLIGHT[key] = SolveRequest(key, bound(), start)
        _DEFER[0](request)
    return request


def solved(request: SolveRequest) -> int | None:
    """The exact threshold of a deferred ``request`` once known; None while in flight.

    What a detector charting on a stand-in asks on each update (a table lookup). A request
    neither known nor in flight (its answer was dropped, or deferral was switched off
    meanwhile) is sent again, or solved here when solves are no longer deferred."""
    key = request.key
    if key[0] == "bernoulli":
        h = _THRESHOLDS.get((key[1], key[2], key[3], key[4]))
    else:
        h = _LATTICE_SOLVED.get(key)
    if h is None and key not in _IN_FLIGHT:
        if _DEFER:
            _IN_FLIGHT[key] = request
            _DEFER[0](request)
        else:
            h = request.solve()
            record_solved(request, h)
    return h


def bernoulli_threshold_now(
    p0: float, p1: float, arl0: float, rate: float | None = None
) -> tuple[int, SolveRequest | None]:
    """:func:`bernoulli_threshold` without waiting: ``(h, None)`` when ``h`` is exact.
    When solves are deferred (:func:`defer_solves`) and this one is not known yet, ``h``
    is the conservative :func:`drift_bound`, and the request comes back with it: ask
    :func:`solved` for the exact threshold later."""
    key = (p0, p1, arl0, rate)
    h = _THRESHOLDS.get(key)
    if h is not None:
        return h, None
    if not _DEFER:
        return bernoulli_threshold(p0, p1, arl0, rate), None

    def bound() -> int:
        lat = bernoulli_lattice(p0, p1)
        r = p0 if rate is None else rate
        return drift_bound((lat.up, -lat.down), (r, 1.0 - r), arl0)

    request = _deferred(("bernoulli", *key), bound)
    return request.bound, request


def lattice_threshold_now(
    pmf: NDArray[np.float64], offset: int, arl0: float, start: int
) -> tuple[int, SolveRequest | None]:
    """:func:`lattice_threshold` without waiting, as :func:`bernoulli_threshold_now`."""
    if not _DEFER:
        return lattice_threshold(pmf, offset, arl0, start), None
    key = ("lattice", offset, pmf.tobytes(), arl0)
    h = _LATTICE_SOLVED.get(key)
    if h is not None:
        return h, None

    def bound() -> int:
        return drift_bound(range(offset, offset + pmf.size), pmf.tolist(), arl0)

    request = _deferred(key, bound, start)
    return request.bound, request
