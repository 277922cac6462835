"""The false-alarm budget: false pages per week for the whole service, turned into the run
length (ARL0, in its own observations) of every detector test of every key.

The rule, in one place:

1. ``detection.false_pages_per_week`` (``B``) is shared by the workers in proportion to the
   detection partitions each owns, and within a worker evenly by its live detector keys
   (``K``, every level, rounded up to a power of two: :func:`keys_on_grid`) and, within a
   key, by the alarm-raising tests an observation can feed (``T``,
   :func:`streams.pipeline.detectorset.tests_per_level`). One test's ARL0 in
   *time* is therefore ``WEEK * K * T / B`` seconds: false pages add up over keys and
   tests (each contributes ``1 / ARL0`` per second), so their sum is at most ``B``.
2. A key's ARL0 in *events* is that time times the key's event rate, an EWMA of events per
   second in event time (:meth:`DetectorSet.see_traffic`, one-hour half-life). A quiet key
   gets a short run length in events, a busy one a long one: the pages per week stay the
   same whatever the traffic.
3. The run length is rounded *up* onto a geometric grid (ratio 2^(1/4)) and moved only when
   the target is two grid steps away, so a detector is retargeted (a threshold from the
   cache in :mod:`detectors.arl`, no solve for a known target) a few times a day as
   traffic follows its daily cycle, never per event, and never resets its evidence.
4. A detector with several tests (harm categories, confidence up/down/shape) gets
   ``per-test ARL0 / tests`` as its whole ARL0 and splits it over its tests itself, so
   each test runs at exactly the per-test ARL0 (:meth:`_Factory.make`).

``false_alarms_per_million_events``, when set, is a second budget in events (the old
rule: ``1e6 * levels * T / budget`` per test); a key's ARL0 is then the longer of the two,
so both budgets hold (the stricter wins).
"""

from __future__ import annotations

import math
from typing import Final, Protocol, runtime_checkable

WEEK_S: Final = 7 * 86400.0
"""Seconds in a week."""

GRID: Final = 0.25
"""ARL0 grid step in log2 units (ratio 2^(1/4) ~ 1.19)."""

HYSTERESIS: Final = 2 * GRID
"""A key's ARL0 moves when its target is this far away (log2 units): two grid steps."""

MIN_ARL0: Final = 1e4
"""Floor of a per-test ARL0 in events: a key's first events give no usable rate yet, and
a run length shorter than this would page on noise (the drift tests also need it far
above their stride)."""


@runtime_checkable
class Retargetable(Protocol):
    """A detector whose ARL0 can change without losing its evidence."""

    arl0: float

    def set_arl0(self, arl0: float) -> None: ...


def keys_on_grid(keys: int) -> int:
    """The live key count rounded up to a power of two: the budget is shared as if that
    many keys were live. Every key's run length depends on the count, and each change of
    it is a threshold solve per detector of every key, so the count moves the run lengths
    only when it doubles (a run length at most twice as long as needed: fewer false pages,
    a detection delay longer by about ln 2 nats of evidence)."""
    return 1 << max(0, math.ceil(math.log2(max(1, keys)) - 1e-9))


def seconds_per_test(pages_per_week: float, keys: int, tests: int, share: float = 1.0) -> float:
    """One test's ARL0 in seconds of event time:
    ``WEEK * keys_on_grid(keys) * tests / (pages_per_week * share)``.

    ``share``: this worker's part of the service's budget, the fraction of the detection
    partitions it owns (:meth:`streams.pipeline.live_sets.LiveSets.set_share`). Each
    worker counts only its own keys, so without it N workers would spend N budgets."""
    if pages_per_week <= 0:
        raise ValueError("pages_per_week must be > 0")
    if not 0.0 < share <= 1.0:
        raise ValueError("share must be in (0, 1]")
    return WEEK_S * keys_on_grid(keys) * max(1, tests) / (pages_per_week * share)


def on_grid(arl0: float) -> float:
    """``arl0`` rounded up onto the geometric grid (so calibrations share cache entries)."""
    return float(2.0 ** (math.ceil(math.log2(arl0) / GRID - 1e-9) * GRID))


def key_arl0(rate: float, seconds: float, floor_events: float = MIN_ARL0) -> float:
    """Per-test ARL0 in events of a key seeing ``rate`` events per second, on the grid."""
    return on_grid(max(rate * seconds, floor_events, MIN_ARL0))


def moved(current: float, target: float) -> bool:
    """Whether ``target`` is far enough from ``current`` to retarget (hysteresis)."""
    return abs(math.log2(target / current)) >= HYSTERESIS - 1e-9


def retarget(detector: object, arl0: float) -> bool:
    """Give ``detector`` a new ARL0 if it supports it (keeps its evidence); whether it did."""
    if isinstance(detector, Retargetable):
        if detector.arl0 != arl0:
            detector.set_arl0(arl0)
        return True
    return False
