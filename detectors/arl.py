"""Exact run lengths of CUSUM charts whose increments live on an integer lattice.

A one-sided CUSUM ``S_n = max(0, S_{n-1} + Z_n)`` that alarms when ``S_n >= h`` is a Markov
chain when the increments ``Z_n`` are i.i.d. If the increments are integers (in some unit),
the chain has the finitely many states ``0 .. h-1`` and its average run length (ARL) is the
solution of one linear system, with no approximation at all (Brook & Evans 1972). We make
the *detectors* use integer increments too, so that the figure computed here is the exact
ARL of the detector that runs, not of an idealised one:

* Bernoulli CUSUM: the log-likelihood-ratio increments are ``a = ln(p1/p0)`` (event) and
  ``b = ln((1-p1)/(1-p0))`` (no event). We choose integers ``up``, ``down`` with
  ``up/down ~ a/|b|`` to 0.25 % and the unit ``|b|/down`` nats, i.e. the detector is the
  exact CUSUM for a ``p1`` within a fraction of a percent of the design value.
* General increments (confidence scores): the detector rounds each standardised increment
  to a grid; the ARL is then exact for the distribution of the rounded increments, which
  we take from the reference window.

The threshold for a target ARL0 (expected number of events between false alarms) is the
smallest lattice threshold whose exact ARL0 reaches the target, found by bracketing and
bisection; results are cached so building many detectors is cheap.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import solve_banded

__all__ = [
    "BernoulliLattice",
    "bernoulli_arl",
    "bernoulli_cusum_delay",
    "bernoulli_lattice",
    "bernoulli_threshold",
    "lattice_arl",
    "lattice_threshold",
]

_RATIO_TOL = 2.5e-3
_MAX_DOWN = 64


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
    within 0.25 %; a finer lattice only adds states without changing the detector.
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
    ``(I - P) L = 1`` over the transient states ``0 .. h-1``.
    """
    if h <= 0:
        return 1.0
    if up <= 0 or down <= 0 or not 0.0 <= p <= 1.0:
        raise ValueError("need up, down >= 1 and 0 <= p <= 1")
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
    arl = solve_banded((lower, upper), ab, np.ones(n))
    return float(arl[0])


def _search(arl_of: functools.partial[float], target: float, start: int) -> int:
    """Smallest integer ``h >= 1`` with ``arl_of(h) >= target`` (the ARL increases with h).

    Brackets around ``start`` (a Wald-style guess) with doubling steps, then bisects, so
    a good guess costs only a handful of linear solves.
    """
    hi = max(1, start)
    step = max(1, hi // 16)
    if arl_of(hi) < target:
        lo = hi
        hi = lo + step
        while arl_of(hi) < target:
            lo, step = hi, step * 2
            hi = lo + step
    else:
        lo = max(0, hi - step)
        while lo > 0 and arl_of(lo) >= target:
            hi, step = lo, step * 2
            lo = max(0, hi - step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if arl_of(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def _wald_h(arl0: float, kl: float) -> float:
    """Wald's threshold approximation: solve ``(e^h - h - 1) / kl = arl0`` for ``h``."""
    h = math.log(max(arl0 * kl, 1.0) + 1.0)
    for _ in range(50):
        h = math.log(arl0 * kl + h + 1.0)
    return h


@functools.lru_cache(maxsize=4096)
def bernoulli_threshold(p0: float, p1: float, arl0: float) -> int:
    """Smallest lattice threshold (in ``bernoulli_lattice(p0, p1).unit``) with ARL0 >= arl0."""
    if arl0 < 1.0:
        raise ValueError("arl0 must be >= 1")
    lat = bernoulli_lattice(p0, p1)
    kl = p0 * math.log(p0 / p1) + (1 - p0) * math.log((1 - p0) / (1 - p1))
    start = max(1, int(_wald_h(arl0, kl) / lat.unit))
    arl_of = functools.partial(_bern_arl_h, lat.up, lat.down, p0)
    return _search(arl_of, arl0, start)


def _bern_arl_h(up: int, down: int, p: float, h: int) -> float:
    return bernoulli_arl(up, down, h, p)


def bernoulli_cusum_delay(p0: float, p1: float, arl0: float) -> float:
    """Exact expected delay (zero-state ARL1 at rate ``p1``) of the CUSUM for ``p0 -> p1``.

    The threshold is the one that gives ARL0 >= ``arl0`` at rate ``p0``. By Lorden (1971)
    and Moustakides (1986) no detector with the same ARL0 has a smaller worst-case delay.
    """
    lat = bernoulli_lattice(p0, p1)
    h = bernoulli_threshold(p0, p1, arl0)
    return bernoulli_arl(lat.up, lat.down, h, p1)


def lattice_arl(pmf: NDArray[np.float64], offset: int, h: int) -> float:
    """Exact zero-state ARL of ``S = max(0, S + Z)``, alarm at ``S >= h``, integer ``Z``.

    ``pmf[j]`` is ``P(Z = offset + j)``. Dense solve over the ``h`` transient states, meant
    for thresholds up to a few thousand lattice steps.
    """
    if h <= 0:
        return 1.0
    steps = offset + np.arange(pmf.size)
    trans = np.zeros((h, h))
    for i in range(h):
        dest = i + steps
        np.add.at(trans[i], np.clip(dest[dest < h], 0, None), pmf[dest < h])
    arl = np.linalg.solve(np.eye(h) - trans, np.ones(h))
    return float(arl[0])


def lattice_threshold(pmf: NDArray[np.float64], offset: int, arl0: float, start: int) -> int:
    """Smallest integer threshold with ``lattice_arl(pmf, offset, h) >= arl0``.

    The increments must have a negative mean (else no threshold reaches the target).
    """
    mean = float(np.dot(pmf, offset + np.arange(pmf.size)))
    if mean >= 0:
        raise ValueError("the increments must drift downwards under the reference")
    arl_of = functools.partial(_lattice_arl_h, pmf, offset)
    return _search(arl_of, arl0, start)


def _lattice_arl_h(pmf: NDArray[np.float64], offset: int, h: int) -> float:
    return lattice_arl(pmf, offset, h)
