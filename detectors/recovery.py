"""Has the rate change that alarmed ended? A recovery test matched to the change's size.

An alarmed episode of :class:`~detectors.rate.BernoulliCusum` closes once its shadow
CUSUM, designed for the smallest shift worth catching (1.5x), has drained
:data:`~detectors.rate.EPISODE_CAP_NATS` at the baseline. Its drift there is
``KL(p0 || 1.5 p0) ~ 0.095 p0`` nats per observation, so the episode of an 8x spike in a
tenant's 4 % toxicity rate stays up for ~1,300 of the tenant's outputs after the spike has
ended, whatever the spike's size: hours of an open incident at a small tenant's traffic.

:class:`RateRecovery` is a second one-sided CUSUM, armed at each alarm and matched to the
change that alarmed: the log-likelihood ratio of the baseline ``f0`` against
``f1 = sqrt(f0 x observed)`` (the geometric mean of the baseline and the rate the alarm
observed; never below the smallest design's rate), started at the same cap and capped
there. While the change persists it stays near the cap; once the rate falls below the
logarithmic mean of ``f0`` and ``f1`` (about ``f0 (r - 1) / ln r`` with ``r = f1 / f0``:
1.76x the baseline after an 8x spike) it drifts down at ``KL(f0 || f1)``, ~0.79 p0 nats
per observation after an 8x spike, and reads *recovered* when it reaches zero. Recovery
latches until the next alarm re-arms it: a CUSUM at zero would otherwise leave it on
every event and restart the incident's quiet period.

The baseline ``f0`` is the rate at which the alarming chart holds its false-alarm budget
(:attr:`~detectors.rate.BernoulliCusum.calibration_rate`): for a baseline estimated from a
few dozen events, its upper confidence bound. A rate back within the estimate's
uncertainty is one the chart would not alarm on; judged against the estimate itself, a
key whose estimate came out low read its own baseline as a change still going on, and
its incident stayed open for many hours after the cause had ended.

Partial relief does not end the change: at 3x after an 8x spike the test keeps climbing,
and a rate still above the smallest design's is alarmed again, which re-arms the test.

Where the test last stood at its cap is its estimate of when the change ended (the
last observation the change still explained at full strength); :attr:`RateRecovery.quiet_for`
counts the observations since, so an incident's quiet period can run from the end of its
cause rather than from the moment the test could tell (``alerting.incident.resolve_due``).

Integer lattice steps (:func:`detectors.arl.bernoulli_lattice`) keep batched updates
(:meth:`RateRecovery.walk`, :meth:`RateRecovery.rest`) exactly equal to per-observation
ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from detectors.arl import bernoulli_lattice
from detectors.base import JsonState
from detectors.kernels import recovery_walk
from detectors.rate import REST_UNBOUNDED, episode_cap

__all__ = ["RateRecovery", "recovery_rate"]


def recovery_rate(baseline: float, observed: float, min_shift: float) -> float:
    """The alternative rate ``f1`` a recovery is judged against: the geometric mean of the
    baseline and the rate the alarm observed, at least ``baseline x (1 + min_shift)`` (the
    smallest design's rate) and below the midpoint between the baseline and 1."""
    floor = baseline * (1.0 + min_shift)
    rate = math.sqrt(baseline * observed) if observed > baseline else floor
    return min(max(rate, floor), (1.0 + baseline) / 2.0)


class RateRecovery:
    """The recovery CUSUM of one rate detector (see the module docstring).

    ``arm`` at each alarm; ``step`` for each observation after it (or ``walk``/``rest`` for
    a batch); ``recovered`` once it has read the change as over. Never armed (no alarm
    yet, or state saved by a release without it), it reads not recovered: the caller
    judges recovery by the episode alone.
    """

    __slots__ = ("_armed", "_cap", "_down", "_r", "_since", "_up")

    def __init__(self) -> None:
        self._armed = False  # an alarm has armed the test
        self._r = 0  # height in lattice units; 0 once recovered
        self._up, self._down, self._cap = 0, 1, 0
        self._since = 0  # observations since the test last stood at its cap

    @property
    def recovered(self) -> bool:
        """Armed by an alarm, and read back below the change since."""
        return self._armed and self._r == 0

    @property
    def quiet_for(self) -> int | None:
        """Observations since the test last stood at its cap (where it was armed, or where
        the change last explained the data at full strength): once :attr:`recovered` (or
        the episode has closed), the test's estimate of how long ago the change ended.
        None when never armed."""
        return self._since if self._armed else None

    def arm(self, baseline: float, observed: float, min_shift: float) -> None:
        """Start (or restart) the test at its cap for a change from ``baseline`` to the
        ``observed`` rate of an alarm."""
        lattice = bernoulli_lattice(baseline, recovery_rate(baseline, observed, min_shift))
        self._up, self._down = lattice.up, lattice.down
        self._cap = episode_cap(lattice.unit)
        self._r, self._armed, self._since = self._cap, True, 0

    def step(self, x: bool) -> None:
        """One observation (a no-op unless the test is running, but for its count)."""
        if self._r:
            r = self._r + (self._up if x else -self._down)
            self._r = max(0, min(r, self._cap))
            self._since = 0 if self._r == self._cap else self._since + 1
        elif self._armed:
            self._since += 1

    def room(self) -> int:
        """How many non-events :meth:`rest` may take now without reaching zero."""
        return (self._r - 1) // self._down if self._r else REST_UNBOUNDED

    def rest(self, m: int) -> None:
        """``m`` non-events at once, within :meth:`room`: what ``m`` steps would leave."""
        if m > 0 and self._armed:
            if self._r:
                self._r -= m * self._down
            self._since += m

    def walk(self, flags: np.ndarray[Any, np.dtype[np.bool_]]) -> None:
        """:meth:`step` over a batch (vectorised, exact)."""
        steps = np.where(flags, self._up, -self._down).astype(np.int64)
        self._r, self._since = recovery_walk(self._r, steps, self._cap, self._since, self._armed)

    def get_state(self) -> JsonState | None:
        if not self._armed:
            return None
        return {
            "r": self._r,
            "up": self._up,
            "down": self._down,
            "cap": self._cap,
            "since": self._since,
        }

    def set_state(self, state: JsonState | None) -> None:
        if state is None:
            self._armed, self._r, self._up, self._down, self._cap = False, 0, 0, 1, 0
            self._since = 0
            return
        self._armed = True
        self._r, self._up, self._down = state["r"], state["up"], state["down"]
        self._cap = state["cap"]
        # Absent in state of older releases: counted from the restore (a later estimate
        # of the end, so a quiet period no shorter than before).
        self._since = int(state.get("since", 0))
