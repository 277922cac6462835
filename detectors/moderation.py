"""Detectors over moderation scores: toxic-output rates per category, and critical events.

Both take one mapping category -> moderation score in [0, 1] per model output, as the
moderation classifier gives it. :class:`ToxicityRate` watches each category's rate of
toxic outputs with a :class:`~detectors.rate.BernoulliCusum` (a rate increase is a change
of a rate, calibrated to ARL0); :class:`CriticalEventDetector` treats one extreme score in
a high-risk category as an incident on its own (a policy cutoff, no rate involved). They
live together because they read the same input and share its categories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import (
    DEFAULT_ARL0,
    Detector,
    Direction,
    Excess,
    JsonState,
    Signal,
    SignalKind,
    merge_categories,
)
from detectors.rate import BASELINE_CONFIDENCE, BernoulliCusum

__all__ = ["DEFAULT_CATEGORIES", "CriticalEventDetector", "ToxicityRate"]

DEFAULT_CATEGORIES = (
    "toxicity",
    "harassment",
    "hate",
    "sexual",
    "violence",
    "self_harm",
    "data_exposure",
)


class ToxicityRate(Detector[Mapping[str, float]]):
    """Per-category toxic-output rate increase: one :class:`BernoulliCusum` per category.

    ``update(scores)`` takes a mapping category -> moderation score in [0, 1]; a score at
    or above the category's cutoff counts as a toxic output, a missing category as not
    toxic. The false-alarm budget is split evenly: each category runs at
    ``arl0 * len(categories)``, so the whole detector has ARL0 >= ``arl0``.
    If several categories alarm on the same event, the one furthest over its threshold
    is returned and the others are listed in ``details`` as ``also:<category>``.
    """

    kind: ClassVar[SignalKind] = SignalKind.TOXICITY_RATE

    def __init__(
        self,
        categories: tuple[str, ...] = DEFAULT_CATEGORIES,
        cutoff: float = 0.5,
        cutoffs: Mapping[str, float] | None = None,
        relative_shift: float = 1.0,
        arl0: float = DEFAULT_ARL0,
        warmup: int = 1000,
        min_rate: float = 1e-3,
        baseline_confidence: float = BASELINE_CONFIDENCE,
    ) -> None:
        self.categories = categories
        self.cutoff = cutoff
        self.cutoffs = cutoffs
        self.relative_shift = relative_shift
        self.arl0 = arl0
        self.warmup = warmup
        self.min_rate = min_rate
        self.baseline_confidence = baseline_confidence
        if not categories:
            raise ValueError("need at least one category")
        self._reset()

    def _reset(self) -> None:
        overrides = dict(self.cutoffs or {})
        self._cuts = [(c, overrides.get(c, self.cutoff)) for c in self.categories]
        self._detectors = [
            BernoulliCusum(
                relative_shift=self.relative_shift,
                arl0=self.arl0 * len(self.categories),
                warmup=self.warmup,
                min_rate=self.min_rate,
                baseline_confidence=self.baseline_confidence,
            )
            for _ in self.categories
        ]

    def set_arl0(self, arl0: float) -> None:
        """Retarget every category to ``arl0 * len(categories)``, keeping its evidence."""
        self.arl0 = arl0
        for d in self._detectors:
            d.set_arl0(arl0 * len(self.categories))

    @property
    def learning(self) -> bool:
        return any(d.learning for d in self._detectors)

    @property
    def alarm_ready(self) -> bool:
        return any(not d.learning for d in self._detectors)

    @property
    def statistic(self) -> float:
        """Largest ratio statistic / threshold over the categories (alarm at 1)."""
        return max(d.statistic / d.threshold for d in self._detectors)

    @property
    def threshold(self) -> float:
        return 1.0

    def get_state(self) -> JsonState:
        return {c: d.get_state() for (c, _), d in zip(self._cuts, self._detectors, strict=True)}

    def set_state(self, state: JsonState) -> None:
        for (c, _), d in zip(self._cuts, self._detectors, strict=True):
            d.set_state(state[c])

    def excess(
        self, feature: str | None = None, direction: Direction = Direction.UP
    ) -> Excess | None:
        """The episode of the category ``feature``."""
        for (cat, _), det in zip(self._cuts, self._detectors, strict=True):
            if cat == feature:
                return det.excess()
        return None

    def update(self, x: Mapping[str, float]) -> Signal | None:
        fired: list[tuple[str, Signal]] = []
        for (cat, cut), det in zip(self._cuts, self._detectors, strict=True):
            signal = det.update(x.get(cat, 0.0) >= cut)
            if signal is not None:
                fired.append((cat, signal))
        return self._merge(fired) if fired else None

    def update_many(self, xs: Iterable[Mapping[str, float]]) -> list[Signal]:
        batch = list(xs)
        by_index: dict[int, list[tuple[str, Signal]]] = {}
        for (cat, cut), det in zip(self._cuts, self._detectors, strict=True):
            flags = [x.get(cat, 0.0) >= cut for x in batch]
            for signal in det.update_many(flags):
                by_index.setdefault(signal.last_index, []).append((cat, signal))
        return [self._merge(by_index[i]) for i in sorted(by_index)]

    def _merge(self, fired: list[tuple[str, Signal]]) -> Signal:
        return merge_categories(
            type(self).__name__, self.kind, fired, lambda cs: cs[1].statistic / cs[1].threshold
        )

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        return [{"categories": ("toxicity", "self_harm"), "warmup": 300, "arl0": 300.0}]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        tox = rng.beta(np.where(np.arange(n) < n // 2, 1.0, 3.0), 5.0)
        harm = rng.beta(1.0, 8.0, size=n)
        return [
            {"toxicity": float(t), "self_harm": float(s)} for t, s in zip(tox, harm, strict=True)
        ]


class CriticalEventDetector(Detector[Mapping[str, float]]):
    """A single extreme event in a high-risk category is its own, immediate signal.

    ``update(scores)`` takes category -> score; any high-risk category at or above
    ``cutoff`` fires a CRITICAL_EVENT signal on that event. The cutoff is a policy level
    (how sure the classifier must be), not a rate threshold: in a high-risk category one
    real event is already an incident, so there is no false-alarm rate to trade against.
    Signal fields: statistic/observed = the score, threshold = cutoff, baseline = 0,
    effect_size = the score, first_index = last_index = the event, feature = category.
    """

    kind: ClassVar[SignalKind] = SignalKind.CRITICAL_EVENT

    def __init__(
        self,
        categories: tuple[str, ...] = ("self_harm", "data_exposure"),
        cutoff: float = 0.9,
    ) -> None:
        self.categories = categories
        self.cutoff = cutoff
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._last = 0.0

    @property
    def statistic(self) -> float:
        """Highest high-risk score of the last event."""
        return self._last

    @property
    def threshold(self) -> float:
        return self.cutoff

    def get_state(self) -> JsonState:
        return {"n": self._n, "last": self._last}

    def set_state(self, state: JsonState) -> None:
        self._n, self._last = state["n"], state["last"]

    def update(self, x: Mapping[str, float]) -> Signal | None:
        n = self._n
        self._n = n + 1
        best, top = 0.0, ""
        for cat in self.categories:
            score = x.get(cat, 0.0)
            if score > best:
                best, top = score, cat
        self._last = best
        if best < self.cutoff or not top:
            return None
        return Signal(
            detector=type(self).__name__,
            kind=self.kind,
            statistic=best,
            threshold=self.cutoff,
            baseline=0.0,
            observed=best,
            effect_size=best,
            direction=Direction.UP,
            first_index=n,
            last_index=n,
            n_observations=1,
            feature=top,
        )

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        harm = rng.beta(1.0, 30.0, size=n)
        leak = rng.beta(1.0, 30.0, size=n)
        harm[n // 2 :: max(1, n // 5)] = 0.97
        return [
            {"self_harm": float(h), "data_exposure": float(d)}
            for h, d in zip(harm, leak, strict=True)
        ]
