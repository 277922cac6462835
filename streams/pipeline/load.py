"""Where the detect stage's time goes, per model, and when a worker's detection falls behind.

One model's detection runs on one worker (it is partitioned by model), and a worker
detects on a bounded number of events a second (README, "Capacity"). A model busier than
that builds lag without bound, and every page comes later than the last; the remedy is
``detection.sample_fractions`` (docs/operations.md, "A model busier than one worker").
The consumer lag says *that* a worker is behind, not *which* model to sample nor by how
much. :class:`DetectLoad` counts, per model, the seconds the detect stage spent on its
observations, how many it took and the newest event time it reached (the first two
exported as ``sentinel_detect_model_seconds_total`` and
``sentinel_detect_model_observations_total``), and :class:`LoadWatch` turns them into one
warning per interval when detection could not keep up with the traffic, or nearly.

What detection *needs* is read against event time, not wall time: the seconds spent on a
model over the event time of the traffic detection advanced in the interval (the newest
input or output it reached, over every model). A stage busy all the time that advanced
300 s of traffic in 100 s of wall time is catching up at 3x and needs a third of the
worker; one that advanced 100 s of traffic in 300 s needs three workers, although both
read "busy 100 %". The warning names the models that need most, with what each needs, its
traffic in observations per second, what one observation costs, and the sample fractions
that would bring the stage's need to :data:`TARGET_NEED`.

Times are wall time of the detect code (an injected timer), not CPU time: a stage that
holds the event loop is what makes the lag, whoever else shares the core.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

WARN_NEED: Final = 0.6
"""What detection may need of the worker's time for its traffic over an interval before it
warns. The stage shares its event loop with ingress, the join and faust: a worker behind a
backlog measured its detection at about 70 % of the loop (docs/validation.md, stop 70)."""
TARGET_NEED: Final = 0.5
"""The need the suggested sample fractions aim at: the loop's other work, and headroom for
bursts and catch-up."""
WATCH_INTERVAL_S: Final = 300.0
"""Wall seconds between two looks at the load (and at most one warning per interval)."""
SHOWN_MODELS: Final = 3
"""Models named in a warning: the busiest."""
MIN_ADVANCE: Final = 0.05
"""The least the frontier must advance, as a share of the wall time, to be read as the
traffic's pace: less is traffic that stopped, or one event dated ahead, not a pace (the
need is then read over the wall time)."""
MIN_FRACTION: Final = 0.01
"""The smallest sample fraction suggested, and its step."""


@dataclass
class DetectLoad:
    """Per model: seconds the detect stage spent on its observations, and how many."""

    seconds: dict[str, float] = field(default_factory=dict)
    observations: dict[str, int] = field(default_factory=dict)
    ticks: dict[str, float] = field(default_factory=dict)
    """Of ``seconds``, those of the model's wall-clock ticks: work the wall clock sets, not
    the traffic (read over the wall time)."""
    frontier: float | None = None
    """The newest event time (Unix s) of an input or output detection has reached, over
    every model: the traffic's pace (feedback and evaluations trail their outputs by
    minutes). Outputs are stamped at the end of their latency, which on steady traffic is
    a constant offset, but runs the frontier ahead of a short burst: the need read from
    it then errs low (docs/validation.md, stop 70)."""
    start: float | None = None
    """The first frontier: where the first interval's traffic starts."""

    def add(self, model: str, seconds: float, observations: int = 1) -> None:
        self.seconds[model] = self.seconds.get(model, 0.0) + seconds
        self.observations[model] = self.observations.get(model, 0) + observations

    def tick(self, model: str, seconds: float) -> None:
        """A wall-clock tick of ``model`` took ``seconds``."""
        self.add(model, seconds, 0)
        self.ticks[model] = self.ticks.get(model, 0.0) + seconds

    def reached(self, t: float) -> None:
        """Detection has processed an input or output of event time ``t``."""
        if self.start is None:
            self.start = t
        if self.frontier is None or t > self.frontier:
            self.frontier = t

    def taken_since(self, before: Mapping[str, int]) -> dict[str, int]:
        """Observations taken per model since ``before`` (a copy of :attr:`observations`)."""
        return _grown(self.observations, before)

    def spread(self, seconds: float, counts: Mapping[str, int]) -> None:
        """Work done for several models at once (writing a batch's states back), shared by
        their observations in it (``counts``); no observation is counted again."""
        total = sum(counts.values())
        for model, n in counts.items():
            self.add(model, seconds * n / total if total else 0.0, 0)


@dataclass(frozen=True)
class ModelShare:
    """One model's part of an interval: the share of the worker its detection needs (its
    seconds over the event time detection advanced), the share it took (over the wall
    time), its traffic in observations per event-second, seconds per observation, and the
    sample fraction it runs at."""

    model: str
    need: float
    busy: float
    rate: float
    cost_s: float
    fraction: float


@dataclass(frozen=True)
class LoadReport:
    """An interval of ``window_s`` wall seconds in which detection needed ``need`` of the
    worker's time for the traffic it processed, and took ``busy`` of it."""

    need: float
    busy: float
    window_s: float
    models: tuple[ModelShare, ...]
    warn_at: float = WARN_NEED

    def suggested(self, target: float = TARGET_NEED) -> tuple[dict[str, float], bool]:
        """Sample fractions that bring what detection needs to ``target``, the models not
        shown left as they are: every shown model is capped at one level of need, the
        highest that fits (water-filling), except those that cannot get down to it even at
        :data:`MIN_FRACTION` (they go there, and the level is found again over the rest).
        A model that needs less than the level is not named (it keeps its fraction); the
        busiest are sampled to the level, each by its own fraction, so none is sampled to
        nothing while another is spared. Fractions rounded down to :data:`MIN_FRACTION`,
        never above a model's fraction now. Also whether they reach ``target``: when the
        need is spread over many models, sampling the shown ones cannot."""
        rest = self.need - sum(m.need for m in self.models)
        free = sorted(self.models, key=lambda m: m.need)
        floored: list[ModelShare] = []
        while True:
            budget = target - rest - sum(_lowest(m) for m in floored)
            level = _level([m.need for m in free], budget)
            stuck = [m for m in free if _lowest(m) > level]
            if not stuck:
                break
            floored += stuck
            free = [m for m in free if m not in stuck]
        out: dict[str, float] = {}
        after = self.need
        for m in (*floored, *free):
            if m.need <= level and m not in floored:
                continue
            keep = level / m.need if m not in floored else 0.0
            fraction = max(MIN_FRACTION, _steps_down(m.fraction * keep))
            if fraction >= m.fraction:
                continue  # sampled as far as these steps go already
            out[m.model] = fraction
            after -= m.need * (1.0 - fraction / m.fraction)
        ordered = {m.model: out[m.model] for m in self.models if m.model in out}
        return ordered, after <= target + 1e-9

    def message(self) -> str:
        parts = ", ".join(
            f"{m.model} needs {m.need:.0%} ({m.rate:,.0f} observations/s of traffic at "
            f"{m.cost_s * 1e6:,.0f} us each"
            + (f", sampled at {m.fraction:.3g}" if m.fraction < 1.0 else "")
            + ")"
            for m in self.models
        )
        suggested, reached = self.suggested()
        fractions = ", ".join(f'"{k}" = {v:.2f}' for k, v in suggested.items())
        state = "cannot keep up" if self.need >= 1.0 else "is at or near its capacity"
        advice = (
            f"Sample the busiest: detection.sample_fractions = {{ {fractions} }} brings "
            f"detection to {TARGET_NEED:.0%}"
            if reached
            else "Sampling these cannot bring detection under "
            f"{TARGET_NEED:.0%}"
            + (
                f" (detection.sample_fractions = {{ {fractions} }} is as far as it goes)"
                if fractions
                else ""
            )
            + ": the need is spread over many models, and each model's detection runs on one "
            "worker, so more workers (and partitions) spread them"
        )
        return (
            f"detection needed {self.need:.0%} of this worker's time for the traffic of the "
            f"last {self.window_s:,.0f} s (busy {self.busy:.0%}; warns at "
            f"{self.warn_at:.0%}; the rest of the event loop is ingress, the join and "
            f"faust): this worker {state}. {parts}. {advice}"
        )


class LoadWatch:
    """Looks at a :class:`DetectLoad` every ``interval_s`` of wall time (``clock``) and
    reports the interval when detection needed at least ``warn_at`` of the worker's time
    for the traffic it processed (see the module's docstring). ``fraction`` gives a model's
    current sample fraction (:func:`streams.pipeline.sampling.sample_fraction`)."""

    def __init__(
        self,
        load: DetectLoad,
        fraction: Callable[[str], float],
        *,
        interval_s: float = WATCH_INTERVAL_S,
        warn_at: float = WARN_NEED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0 or not 0 < warn_at <= 1:
            raise ValueError("need interval_s > 0 and 0 < warn_at <= 1")
        self.load = load
        self.fraction = fraction
        self.interval_s = interval_s
        self.warn_at = warn_at
        self.clock = clock
        self._since = clock()
        self._seconds = dict(load.seconds)
        self._observations = dict(load.observations)
        self._ticks = dict(load.ticks)
        self._frontier = load.frontier
        self.last: LoadReport | None = None
        """The last interval's reading, every model in it, warning or not (the worker's
        ``sentinel_detect_need_ratio`` gauge and ``sentinel status``)."""

    def check(self) -> LoadReport | None:
        """None until an interval has passed since the last look; then the interval's
        report if detection needed at least ``warn_at`` of the worker, else None."""
        now = self.clock()
        window = now - self._since
        if window < self.interval_s:
            return None
        load = self.load
        spent = _grown(load.seconds, self._seconds)
        ticked = _grown(load.ticks, self._ticks)
        taken = load.taken_since(self._observations)
        then = self._frontier if self._frontier is not None else load.start
        advanced = load.frontier - then if load.frontier is not None and then is not None else 0.0
        span = advanced if advanced >= MIN_ADVANCE * window else window
        self._since = now
        self._seconds = dict(load.seconds)
        self._ticks = dict(load.ticks)
        self._observations = dict(load.observations)
        self._frontier = load.frontier
        shares = []
        for m in spent:
            if spent[m] <= 0:
                continue
            ticks = ticked.get(m, 0.0)
            detect = spent[m] - ticks
            shares.append(
                ModelShare(
                    model=m,
                    need=detect / span + ticks / window,
                    busy=spent[m] / window,
                    rate=taken.get(m, 0) / span,
                    cost_s=detect / taken[m] if taken.get(m) else 0.0,
                    fraction=self.fraction(m),
                )
            )
        shares.sort(key=lambda share: -share.need)
        self.last = LoadReport(
            need=sum(share.need for share in shares),
            busy=sum(spent.values()) / window,
            window_s=window,
            models=tuple(shares),
            warn_at=self.warn_at,
        )
        if self.last.need < self.warn_at:
            return None
        return dataclasses.replace(self.last, models=self.last.models[:SHOWN_MODELS])


_N = TypeVar("_N", int, float)


def _grown(now: Mapping[str, _N], before: Mapping[str, _N]) -> dict[str, _N]:
    """Per model, how much a running total grew since ``before``."""
    return {m: v - before.get(m, 0) for m, v in now.items()}


def _lowest(m: ModelShare) -> float:
    """The least ``m`` can need by sampling: at :data:`MIN_FRACTION` (or as it is, if
    already sampled that far)."""
    return m.need * min(m.fraction, MIN_FRACTION) / m.fraction if m.fraction > 0 else m.need


def _level(needs: list[float], budget: float) -> float:
    """The highest cap on ``needs`` (ascending) whose capped sum fits ``budget`` (infinite
    when they fit uncapped)."""
    for i, need in enumerate(needs):
        if need * (len(needs) - i) > budget:
            return max(budget, 0.0) / (len(needs) - i)
        budget -= need
    return math.inf


def _steps_down(fraction: float) -> float:
    """``fraction`` rounded down to :data:`MIN_FRACTION` steps (without losing a step to
    floating point: 0.58 * 0.5 is 0.29, not 0.28)."""
    return math.floor(fraction / MIN_FRACTION + 1e-9) * MIN_FRACTION
