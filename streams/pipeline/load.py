"""Where the detect stage's time goes, per model, and when a worker's detection is saturated.

One model's detection runs on one worker (it is partitioned by model), and a worker
detects on a bounded number of events a second (README, "Capacity"). A model busier than
that builds lag without bound, and every page comes later than the last; the remedy is
``detection.sample_fractions`` (docs/operations.md, "A model busier than one worker").
The consumer lag says *that* a worker is behind, not *which* model to sample nor by how
much. :class:`DetectLoad` counts, per model, the seconds the detect stage spent on its
observations and how many it took (exported as ``sentinel_detect_model_seconds_total`` and
``sentinel_detect_model_observations_total``), and :class:`LoadWatch` turns them into one
warning per interval when the stage was busy for most of it: each busy model's share of the
wall time, its observations per second, what it costs per observation, and the sample
fractions that would bring the stage back under :data:`TARGET_BUSY`.

Times are wall time of the detect code (an injected timer), not CPU time: a stage that
holds the event loop is what makes the lag, whoever else shares the core.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

WARN_BUSY: Final = 0.6
"""Share of the wall time the detect stage may be busy over an interval before it warns.
The stage shares its event loop with ingress, the join and faust: a worker behind a backlog
measured its detection at about 70 % of the loop (docs/validation.md, stop 70)."""
TARGET_BUSY: Final = 0.5
"""The share the suggested sample fractions aim at: the loop's other work, and headroom
for bursts and catch-up."""
WATCH_INTERVAL_S: Final = 300.0
"""Wall seconds between two looks at the load (and at most one warning per interval)."""
SHOWN_MODELS: Final = 3
"""Models named in a warning: the busiest."""


@dataclass
class DetectLoad:
    """Per model: seconds the detect stage spent on its observations, and how many."""

    seconds: dict[str, float] = field(default_factory=dict)
    observations: dict[str, int] = field(default_factory=dict)

    def add(self, model: str, seconds: float, observations: int = 1) -> None:
        self.seconds[model] = self.seconds.get(model, 0.0) + seconds
        self.observations[model] = self.observations.get(model, 0) + observations

    def spread(self, seconds: float, counts: Mapping[str, int]) -> None:
        """Work done for several models at once (writing a batch's states back), shared by
        their observations in it (``counts``); no observation is counted again."""
        total = sum(counts.values())
        for model, n in counts.items():
            self.add(model, seconds * n / total if total else 0.0, 0)


@dataclass(frozen=True)
class ModelShare:
    """One model's part of an interval: share of the wall time, observations per second,
    seconds per observation, and the sample fraction it runs at."""

    model: str
    busy: float
    rate: float
    cost_s: float
    fraction: float


@dataclass(frozen=True)
class LoadReport:
    """An interval in which the detect stage was busy for ``busy`` of ``window_s`` seconds."""

    busy: float
    window_s: float
    models: tuple[ModelShare, ...]
    warn_at: float = WARN_BUSY

    def suggested(self, target: float = TARGET_BUSY) -> dict[str, float]:
        """Sample fractions for the models shown that bring the stage's busy share to
        ``target`` if the others stay as they were: each shown model scaled alike, rounded
        down to 0.01, at least 0.01. Measured while saturated (busy near 1), the stage was
        behind by an unknown amount, so these are upper bounds: the lag says whether they
        suffice."""
        shown = sum(m.busy for m in self.models)
        rest = self.busy - shown
        scale = (target - rest) / shown if shown > 0 else 1.0
        scale = min(max(scale, 0.0), 1.0)
        return {
            m.model: max(0.01, math.floor(m.fraction * scale * 100.0) / 100.0) for m in self.models
        }

    def message(self) -> str:
        parts = ", ".join(
            f"{m.model} {m.busy:.0%} ({m.rate:,.0f} observations/s at "
            f"{m.cost_s * 1e6:,.0f} us each"
            + (f", sampled at {m.fraction:.3g}" if m.fraction < 1.0 else "")
            + ")"
            for m in self.models
        )
        fractions = ", ".join(f'"{k}" = {v:.2f}' for k, v in self.suggested().items())
        return (
            f"detection was busy {self.busy:.0%} of the last {self.window_s:,.0f} s "
            f"(warns at {self.warn_at:.0%}): {parts}. If sentinel_consumer_lag grows, this "
            f"worker cannot keep up; sample the busiest models, at most "
            f"detection.sample_fractions = {{ {fractions} }} (aimed at "
            f"{TARGET_BUSY:.0%} busy; lower them while the lag still grows)"
        )


class LoadWatch:
    """Looks at a :class:`DetectLoad` every ``interval_s`` of wall time (``clock``) and
    reports the interval when the stage was busy at least ``warn_at`` of it. ``fraction``
    gives a model's current sample fraction (:func:`streams.pipeline.sampling.sample_fraction`)."""

    def __init__(
        self,
        load: DetectLoad,
        fraction: Callable[[str], float],
        *,
        interval_s: float = WATCH_INTERVAL_S,
        warn_at: float = WARN_BUSY,
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

    def check(self) -> LoadReport | None:
        """None until an interval has passed since the last look; then the interval's
        report if the stage was busy at least ``warn_at`` of it, else None."""
        now = self.clock()
        window = now - self._since
        if window < self.interval_s:
            return None
        spent = {m: s - self._seconds.get(m, 0.0) for m, s in self.load.seconds.items()}
        taken = {m: n - self._observations.get(m, 0) for m, n in self.load.observations.items()}
        self._since = now
        self._seconds = dict(self.load.seconds)
        self._observations = dict(self.load.observations)
        busy = sum(spent.values()) / window
        if busy < self.warn_at:
            return None
        busiest = sorted((m for m in spent if spent[m] > 0), key=lambda m: -spent[m])
        models = tuple(
            ModelShare(
                model=m,
                busy=spent[m] / window,
                rate=taken.get(m, 0) / window,
                cost_s=spent[m] / taken[m] if taken.get(m) else 0.0,
                fraction=self.fraction(m),
            )
            for m in busiest[:SHOWN_MODELS]
        )
        return LoadReport(busy=busy, window_s=window, models=models, warn_at=self.warn_at)
