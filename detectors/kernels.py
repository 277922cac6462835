"""Vectorised kernels for batch updates of the CUSUM-type detectors.

A CUSUM ``S_t = max(0, S_{t-1} + z_t)`` over a batch is a running sum and a running
minimum: with ``W_t = S_0 + z_1 + ... + z_t``, ``S_t = W_t - min(0, W_1, ..., W_t)``
(DESIGN.md, "Kafka and faust facts"). The kernels here give exactly what the sequential
recursion gives (integer lattice steps, no rounding), so a detector's ``update_many`` can
use them and still equal its ``update`` step by step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CappedWalk",
    "as_flags",
    "bounded_path",
    "capped_steps",
    "capped_walk",
    "recovery_walk",
    "reflected_walk",
]

_PIECES_MAX = 16
"""Cap hits handled piecewise with numpy; beyond that the rest goes step by step, still
exact. A walk pinned at its cap is a change in progress: an episode for a few batches, a
recovery test for the whole change (its per-step cost then, as before batching)."""


def as_flags(xs: Iterable[bool]) -> NDArray[np.bool_]:
    """A batch of outcomes as a boolean array (an array is converted without a Python loop,
    and not copied when it already is one)."""
    if isinstance(xs, np.ndarray):
        return xs.astype(bool, copy=False)
    return np.fromiter((bool(x) for x in xs), dtype=bool)


def reflected_walk(s0: int, steps: NDArray[np.int64]) -> NDArray[np.int64]:
    """``S_t = max(0, S_{t-1} + steps_t)`` from ``S_0 = s0``, for every t of the batch."""
    walk = s0 + np.cumsum(steps)
    return walk - np.minimum(np.minimum.accumulate(walk), 0)


@dataclass(frozen=True, slots=True)
class CappedWalk:
    """Where a walk reflected at 0 and capped at ``cap`` ended after a batch.

    ``value`` is the final statistic; ``last_zero`` the batch position of its last
    return to zero (-1: none in the batch); ``hits`` the flagged observations after it
    (after the batch start when there was no zero); ``last_cap`` the batch position of
    the last step that left the walk at its cap (-1: none).
    """

    value: int
    last_zero: int
    hits: int
    last_cap: int = -1


def bounded_path(e0: int, steps: NDArray[np.int64], cap: int) -> NDArray[np.int64]:
    """Every value of the walk ``e = e + step``; ``e <= 0`` -> 0; ``e >= cap`` -> ``cap``,
    from ``e0``: vectorised piece by piece between cap hits (a reflected walk is exact up
    to the first step past the cap, which ends at the cap and starts the next piece)."""
    n = steps.size
    path = np.empty(n, dtype=np.int64)
    i, e, pieces = 0, e0, 0
    while i < n:
        if pieces >= _PIECES_MAX:
            for t in range(i, n):
                e = min(max(e + int(steps[t]), 0), cap)
                path[t] = e
            break
        pieces += 1
        stat = reflected_walk(e, steps[i:])
        over = np.flatnonzero(stat > cap)
        if not over.size:
            path[i:] = stat
            break
        end = int(over[0])
        path[i : i + end] = stat[:end]
        path[i + end] = e = cap
        i += end + 1
    return path


def capped_steps(e0: int, steps: NDArray[np.int64], cap: int) -> CappedWalk:
    """Where :func:`bounded_path` from ``e0`` over ``steps`` ended: its value, last zero
    and last cap (``hits`` 0: steps carry no outcome)."""
    path = bounded_path(e0, steps, cap)
    if not path.size:
        return CappedWalk(value=e0, last_zero=-1, hits=0, last_cap=-1)
    zeros = np.flatnonzero(path == 0)
    caps = np.flatnonzero(path == cap)
    return CappedWalk(
        value=int(path[-1]),
        last_zero=int(zeros[-1]) if zeros.size else -1,
        hits=0,
        last_cap=int(caps[-1]) if caps.size else -1,
    )


def capped_walk(e0: int, flags: NDArray[np.bool_], up: int, down: int, cap: int) -> CappedWalk:
    """The recursion ``e = e + (up if x else -down)``; ``e <= 0`` -> 0 (a zero);
    else ``e = min(e, cap)``, over ``flags`` from ``e0``: the episode statistic of
    :class:`detectors.rate.BernoulliCusum` (:func:`capped_steps`, with the flagged
    observations after the last zero)."""
    walk = capped_steps(e0, np.where(flags, up, -down).astype(np.int64), cap)
    return replace(walk, hits=int(np.count_nonzero(flags[walk.last_zero + 1 :])))


def recovery_walk(
    r0: int, steps: NDArray[np.int64], cap: int, since: int, armed: bool
) -> tuple[int, int]:
    """A recovery test over a batch (:class:`detectors.recovery.RecoveryTest`, the mean
    charts' tests): ``r = min(max(r + step, 0), cap)`` while ``r > 0``, and 0 holds once
    reached (the change reads as over); ``since`` counts the steps since ``r`` last stood
    at ``cap`` (each step while it runs; once at 0, each step while ``armed``). Returns
    ``(r, since)`` after the batch, as the steps leave them."""
    n = steps.size
    if not r0 or not n:
        return r0, since + (n if armed else 0)
    path = bounded_path(r0, steps, cap)
    zeros = np.flatnonzero(path == 0)
    end = int(zeros[0]) + 1 if zeros.size else n
    caps = np.flatnonzero(path[:end] == cap)
    count = end - 1 - int(caps[-1]) if caps.size else since + end
    return int(path[end - 1]), count + (n - end if armed else 0)
