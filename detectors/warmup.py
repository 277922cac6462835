"""A rate test that needs no baseline: changes while a learned-rate chart is warming up.

A learned-rate CUSUM (:class:`~detectors.rate.BernoulliCusum`) cannot alarm before it has
its baseline, and a rare flag's baseline waits for ``min_events`` events: 4,000 outputs at
0.5 %, hours or days for a quiet model with no parent key to lend it a prior. A change in
that time went unseen, and its traffic became part of the baseline.

:class:`WarmupScan` is a permutation test. Given ``K`` events in ``N`` observations, if the
rate has not changed (whatever it is), every placement of the events is equally likely,
so the count in the last ``m`` observations is hypergeometric: the test is exact without
knowing the rate. It runs at each event, on the windows of the last 16, 32, ..., 32,768
observations (:data:`WINDOWS`). The event that triggers a test is conditioned on: a
window's p-value counts the window's *other* events among the other observations, so
testing at events only does not favour alarms. Each window's level is ``1 / (arl0 *
WINDOWS)``: by the union bound, a clean stream raises at most one false alarm per
``arl0`` observations in expectation, the budget of the chart it stands in for (which
cannot alarm while it learns).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from detectors.base import JsonState

__all__ = ["MIN_REFERENCE", "WINDOWS", "ScanFinding", "WarmupScan", "log_tail"]

WINDOWS = 12
"""Window lengths tested at each event: 16 * 2**j observations for j < WINDOWS."""

FIRST_WINDOW = 16
MIN_REFERENCE = 64
"""Observations a window must leave before it (the sample the window is compared to)."""

_RESCALE = 1e280
_LOG_RESCALE = math.log(_RESCALE)


def log_tail(x: int, total: int, events: int, draws: int) -> float:
    """Natural log of P(X >= x) for X hypergeometric: ``draws`` of ``total`` observations
    holding ``events`` events. Exact (a sum of pmf terms from ``x`` up, stopped once the
    rest cannot change it, rescaled where terms below the mode grow);
    ``scipy.stats.hypergeom.logsf`` gives the same to 1e-9 at about 30x the cost."""
    hi = min(events, draws)
    if x <= max(0, draws - (total - events)):
        return 0.0
    if x > hi:
        return -math.inf
    lg = math.lgamma
    log_pmf = (
        lg(events + 1)
        - lg(x + 1)
        - lg(events - x + 1)
        + lg(total - events + 1)
        - lg(draws - x + 1)
        - lg(total - events - draws + x + 1)
        + lg(draws + 1)
        + lg(total - draws + 1)
        - lg(total + 1)
    )
    term, acc, log_scale, i = 1.0, 1.0, 0.0, x
    while i < hi:
        term *= (events - i) * (draws - i) / ((i + 1) * (total - events - draws + i + 1))
        acc += term
        i += 1
        if acc > _RESCALE:
            term, acc, log_scale = term / _RESCALE, acc / _RESCALE, log_scale + _LOG_RESCALE
        if term < 1e-17 * acc:
            break
    return min(0.0, log_pmf + log_scale + math.log(acc))


@dataclass(frozen=True)
class ScanFinding:
    """A window whose events are too many for an unchanged rate: observations
    ``first_index .. last_index`` holding ``events``, after ``reference_n`` observations
    holding ``reference_k``; ``log_p`` its p-value's natural log."""

    first_index: int
    last_index: int
    events: int
    reference_n: int
    reference_k: int
    log_p: float


class WarmupScan:
    """The permutation scan of the module docstring. Indices are the owning detector's;
    from ``origin`` on the scan knows where the events fell, before it only how many
    (``base_n`` observations holding ``base_k`` events: a warm-up restored from state
    saved without a scan). The test needs no more: its windows lie after ``origin``,
    and the rest of the stream enters it as counts."""

    def __init__(self, arl0: float, origin: int = 0, base_n: int = 0, base_k: int = 0) -> None:
        if not 0 <= base_k <= base_n:
            raise ValueError("need 0 <= base_k <= base_n")
        self.origin = origin
        self.base_n = base_n
        self.base_k = base_k
        self.until: int | None = None
        """Set by the owner once its charts have their baseline: the first index the
        scan no longer tests (it ends a while after the warm-up, see the owner)."""
        self._events: list[int] = []
        self.set_arl0(arl0)

    def set_arl0(self, arl0: float) -> None:
        if arl0 < 1.0:
            raise ValueError("arl0 must be >= 1")
        self.arl0 = arl0
        self._log_level = -math.log(arl0 * WINDOWS)

    @property
    def threshold(self) -> float:
        """The alarm level in nats: an alarm when -log p reaches it."""
        return -self._log_level

    def active(self, index: int) -> bool:
        """Whether observation ``index`` is still tested."""
        return self.until is None or index < self.until

    def event(self, index: int) -> ScanFinding | None:
        """Observation ``index`` (the latest) is an event: record it and test the windows
        ending at it; the most significant window that passes, if any."""
        events = self._events
        events.append(index)
        own = index + 1 - self.origin
        total = self.base_n + own
        k = self.base_k + len(events)
        best: ScanFinding | None = None
        for j in range(WINDOWS):
            m = FIRST_WINDOW << j
            if m > own or total - m < MIN_REFERENCE:
                break
            start = index + 1 - m
            x = len(events) - bisect.bisect_left(events, start)
            # Only windows above the stream's own rate, with an event besides the latest.
            if x < 2 or x * total <= k * m:
                continue
            log_p = log_tail(x - 1, total - 1, k - 1, m - 1)
            if log_p <= self._log_level and (best is None or log_p < best.log_p):
                best = ScanFinding(start, index, x, total - m, k - x, log_p)
        return best

    def get_state(self) -> JsonState:
        return {
            "origin": self.origin,
            "base_n": self.base_n,
            "base_k": self.base_k,
            "until": self.until,
            "events": list(self._events),
        }

    @classmethod
    def from_state(cls, state: JsonState, arl0: float) -> WarmupScan:
        scan = cls(arl0, int(state["origin"]), int(state["base_n"]), int(state["base_k"]))
        scan.until = state["until"]
        scan._events = [int(i) for i in state["events"]]
        return scan
