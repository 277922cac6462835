"""Rate detectors for the failure modes beyond toxicity and downvotes: every harm category,
hallucination flags, evaluator fail and guardrail block results, finish reasons.

A rate (a flag per observation) is watched with Bernoulli CUSUMs (:mod:`detectors.rate`,
:mod:`detectors.adaptive_rate`): optimal for a rate increase at a given ARL0, no new
statistic. The score detectors of the same failure modes (groundedness, an LLM judge's
score, latency, token counts) are in :mod:`detectors.score_shift`.

:class:`CategoryRates` watches a *dynamic* set of categories (moderation categories a
producer sends, finish reasons): a category is watched from the first observation that
carries it, up to ``max_categories``; the false-alarm budget is split over that bound (not
over the categories seen so far), so adding a category never raises the false-alarm rate.

Detectors that watch one (evaluator, metric) carry it as ``metric``; their signals name it
in ``feature`` so that the incident identity includes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from detectors.adaptive_rate import AdaptiveBernoulliCusum
from detectors.base import (
    DEFAULT_ARL0,
    Detector,
    Direction,
    Excess,
    JsonState,
    Quantity,
    Signal,
    SignalKind,
    merge_categories,
)
from detectors.rate import BASELINE_CONFIDENCE, BernoulliCusum

__all__ = [
    "POOLED",
    "CategoryRates",
    "EvaluationFailRate",
    "FinishReasonRate",
    "GuardrailBlockRate",
    "HallucinationRate",
    "HarmRate",
]

POOLED = "any"
"""Pseudo-category of the pooled test: the observation is flagged in any category."""


class CategoryRates(Detector[Mapping[str, bool]]):
    """Rate increase per category, for categories discovered in the stream, plus pooled.

    ``update(flags)`` takes category -> flagged. A category is watched from the first
    observation whose mapping has it (flagged or not); later observations without it count
    as not flagged. At most ``max_categories`` are watched (first seen first); flags of
    further categories still count in the pooled test and in ``dropped``. Each category (and
    the pooled test) is a :class:`BernoulliCusum` at ``arl0 * tests``, ``tests =
    max_categories + pooled``: false-alarm rates add, so the whole detector keeps
    ARL0 >= ``arl0`` however many categories appear.

    Signals are those of :class:`BernoulliCusum`, with ``feature`` = the category (or
    :data:`POOLED`); when several alarm at once, a named category wins over the pooled
    test, then the one furthest over its threshold; the others are listed in ``details``
    as ``also:<category>``. Each test is an :class:`AdaptiveBernoulliCusum` (parallel
    CUSUMs for half, once and three times the design shift): harm spikes come in every
    size, and one CUSUM designed for a doubling lost ~2x in delay on a 4-5x spike of a
    rare category against the oracle (bench/quality.py).
    """

    kind: ClassVar[SignalKind] = SignalKind.TOXICITY_RATE
    quantity: ClassVar[Quantity] = Quantity.RATE

    def __init__(
        self,
        max_categories: int = 12,
        pooled: bool = True,
        relative_shifts: tuple[float, ...] = (0.5, 1.0, 3.0),
        arl0: float = DEFAULT_ARL0,
        warmup: int = 1000,
        min_rate: float = 1e-3,
        baseline_confidence: float = BASELINE_CONFIDENCE,
    ) -> None:
        self.max_categories = max_categories
        self.pooled = pooled
        self.relative_shifts = relative_shifts
        self.arl0 = arl0
        self.warmup = warmup
        self.min_rate = min_rate
        self.baseline_confidence = baseline_confidence
        if max_categories < 1:
            raise ValueError("max_categories must be >= 1")
        self._reset()

    @property
    def tests(self) -> int:
        """Alarm-raising tests the budget is split over (the bound, not the count seen)."""
        return self.max_categories + (1 if self.pooled else 0)

    def set_arl0(self, arl0: float) -> None:
        """Retarget every test to ``arl0 * tests``, keeping its evidence."""
        self.arl0 = arl0
        for d in self._all():
            d.set_arl0(arl0 * self.tests)

    def _part(self) -> AdaptiveBernoulliCusum:
        return AdaptiveBernoulliCusum(
            relative_shifts=self.relative_shifts,
            arl0=self.arl0 * self.tests,
            warmup=self.warmup,
            min_rate=self.min_rate,
            baseline_confidence=self.baseline_confidence,
        )

    def _reset(self) -> None:
        self._parts: dict[str, AdaptiveBernoulliCusum] = {}
        self._any: AdaptiveBernoulliCusum | None = self._part() if self.pooled else None
        self._dropped = 0
        self._n = 0  # observations taken: the index space of this detector's signals

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories watched so far, in the order they appeared."""
        return tuple(self._parts)

    @property
    def dropped(self) -> int:
        """Observations that carried a category beyond ``max_categories``."""
        return self._dropped

    def _all(self) -> list[AdaptiveBernoulliCusum]:
        return [*self._parts.values(), *([self._any] if self._any is not None else [])]

    @property
    def learning(self) -> bool:
        parts = self._all()
        return not parts or any(d.learning for d in parts)

    @property
    def alarm_ready(self) -> bool:
        """True once one test has learned its baseline (a category that never occurs
        keeps ``learning`` true, yet the others can alarm)."""
        return any(d.alarm_ready for d in self._all())

    def awaiting(self) -> str:
        """The warm-up of the test nearest its baseline (the first to be able to alarm);
        none can alarm yet."""
        if self.alarm_ready:
            return ""
        parts = self._all()
        if not parts:
            return "a first observation with a category"
        return max(parts, key=lambda d: d.warmup_progress).awaiting()

    def adopt_prior(self, parent: CategoryRates, strength: float) -> bool:
        """Each test starts from (or, while floored, follows) the parent key's baseline of
        the same category, the pooled test the parent's pooled one; see
        :meth:`detectors.rate.BernoulliCusum.adopt_prior`."""
        adopted = False
        for cat, part in self._parts.items():
            theirs = parent._parts.get(cat)
            if theirs is not None and theirs.alarm_ready:
                adopted = part.adopt_prior(theirs, strength) or adopted
        mine, theirs_any = self._any, parent._any
        if mine is not None and theirs_any is not None and theirs_any.alarm_ready:
            adopted = mine.adopt_prior(theirs_any, strength) or adopted
        return adopted

    @property
    def statistic(self) -> float:
        """Largest ratio statistic / threshold over the tests (alarm at 1)."""
        return max((d.statistic / d.threshold for d in self._all()), default=0.0)

    @property
    def threshold(self) -> float:
        return 1.0

    def excess(
        self, feature: str | None = None, direction: Direction = Direction.UP
    ) -> Excess | None:
        """The episode of the category ``feature`` (:data:`POOLED` for the pooled test); None
        for a category not watched. The localizer compares it across keys and the incident's
        probes read whether it is still alarmed."""
        part = self._any if feature == POOLED else self._parts.get(feature or "")
        return part.excess() if part is not None else None

    def get_state(self) -> JsonState:
        return {
            "cats": {c: d.get_state() for c, d in self._parts.items()},
            "any": self._any.get_state() if self._any is not None else None,
            "dropped": self._dropped,
            "n": self._n,
        }

    def set_state(self, state: JsonState) -> None:
        self._parts = {}
        for cat, st in state["cats"].items():
            part = self._part()
            part.set_state(st)
            self._parts[cat] = part
        if self._any is not None:
            self._any.set_state(state["any"])
        self._dropped = state["dropped"]
        # Absent in state of older releases, whose pooled test saw every observation.
        self._n = state.get("n", max((d.seen for d in self._all()), default=0))

    def _admit(self, cats: Iterable[str]) -> bool:
        """Give each new category its test while there is room (``max_categories``);
        whether any had to be dropped."""
        over = False
        for cat in cats:
            if cat not in self._parts:
                if len(self._parts) >= self.max_categories:
                    over = True
                    continue
                self._parts[cat] = self._part()
        return over

    def update(self, x: Mapping[str, bool]) -> Signal | None:
        self._dropped += int(self._admit(x))
        return self._step(x, settled=False)

    def update_settled(self, x: Mapping[str, bool]) -> Signal | None:
        """:meth:`update` for the tests that have their baseline; tests still learning, and
        categories not watched yet, skip the observation (see
        :meth:`detectors.base.Detector.update_settled`)."""
        return self._step(x, settled=True)

    def _step(self, x: Mapping[str, bool], settled: bool) -> Signal | None:
        """One observation for every test (``settled``: those with a baseline only)."""
        self._n += 1
        fired: list[tuple[str, Signal]] = []
        for cat, det in self._parts.items():
            if not (settled and det.learning):
                signal = det.update(bool(x.get(cat, False)))
                if signal is not None:
                    fired.append((cat, self._placed(signal, det, self._n)))
        if self._any is not None and not (settled and self._any.learning):
            signal = self._any.update(any(x.values()))
            if signal is not None:
                fired.append((POOLED, self._placed(signal, self._any, self._n)))
        return self._merge(fired) if fired else None

    @staticmethod
    def _placed(signal: Signal, det: AdaptiveBernoulliCusum, n: int) -> Signal:
        """``signal`` of test ``det`` with its indices in this detector's observations
        (``n`` taken so far, ``det.seen`` by the test): a category watched from its first
        appearance, or a test that skipped observations while held from learning, counts
        fewer. Since a test learned its baseline it has taken every observation, and its
        signals' indices lie after that, so one offset places them. (A warm-up scan's
        window lies before that point: if the test was held inside the window, its start
        is placed up to those skipped observations late, never its alarm.)"""
        offset = n - det.seen
        if not offset:
            return signal
        return signal.model_copy(
            update={
                "first_index": signal.first_index + offset,
                "last_index": signal.last_index + offset,
            }
        )

    def update_columns(self, columns: Mapping[str, NDArray[np.bool_]]) -> list[Signal]:
        """Vectorised updates for a block of observations given as one boolean array per
        category (all of one length; every category present in every observation).

        The same signals and final state as ``update`` per observation for such a block:
        each test sees its column through :meth:`AdaptiveBernoulliCusum.update_many`, the
        pooled test the OR of all columns. Built for long calibration runs
        (bench/calibration.py), where a mapping per event would dominate the time.
        """
        sizes = {arr.size for arr in columns.values()}
        if len(sizes) > 1:
            raise ValueError("every column needs the same length")
        over = self._admit(columns)
        n = sizes.pop() if sizes else 0
        if over:
            self._dropped += n
        self._n += n
        by_index: dict[int, list[tuple[str, Signal]]] = {}
        for cat, det in self._parts.items():
            col = columns.get(cat)
            flags = col if col is not None else np.zeros(n, dtype=bool)
            for signal in det.update_many(flags):
                placed = self._placed(signal, det, self._n)
                by_index.setdefault(placed.last_index, []).append((cat, placed))
        if self._any is not None and n:
            pooled = np.logical_or.reduce([np.asarray(c, dtype=bool) for c in columns.values()])
            for signal in self._any.update_many(pooled):
                placed = self._placed(signal, self._any, self._n)
                by_index.setdefault(placed.last_index, []).append((POOLED, placed))
        return [self._merge(by_index[i]) for i in sorted(by_index)]

    def update_many(self, xs: Iterable[Mapping[str, bool]]) -> list[Signal]:
        """Batch updates: each category's flags from the observation that brought it
        (as :meth:`update` creates it there) through one vectorised CUSUM call per test;
        simultaneous alarms merged per observation, in :meth:`update`'s order."""
        batch = list(xs)
        since: dict[str, int] = {cat: 0 for cat in self._parts}
        for i, x in enumerate(batch):
            new = [cat for cat in x if cat not in self._parts]
            self._dropped += int(self._admit(new))
            since.update({cat: i for cat in new if cat in self._parts})
        self._n += len(batch)
        fired: dict[int, list[tuple[str, Signal]]] = {}
        tests = [(cat, det, since[cat]) for cat, det in self._parts.items()]
        if self._any is not None:
            tests.append((POOLED, self._any, 0))
        for cat, det, first in tests:
            if cat == POOLED:
                flags = np.fromiter((any(x.values()) for x in batch), dtype=bool, count=len(batch))
            else:
                rest = batch[first:]
                flags = np.fromiter(
                    (bool(x.get(cat, False)) for x in rest), dtype=bool, count=len(rest)
                )
            for signal in det.update_many(flags):
                placed = self._placed(signal, det, self._n)
                fired.setdefault(placed.last_index, []).append((cat, placed))
        return [self._merge(fired[i]) for i in sorted(fired)]

    def _merge(self, fired: list[tuple[str, Signal]]) -> Signal:
        """A named category wins over the pooled test on the same event, then the one
        furthest past its threshold."""
        return merge_categories(
            type(self).__name__,
            self.kind,
            fired,
            lambda cs: (cs[0] != POOLED, cs[1].statistic / cs[1].threshold),
        )

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        return [
            {"max_categories": 2, "warmup": 200, "arl0": 300.0},
            {"max_categories": 3, "pooled": False, "warmup": 200, "arl0": 300.0},
        ]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        i = np.arange(n)
        out: list[Any] = []
        a = rng.random(n) < np.where(i < n // 2, 0.1, 0.3)
        b = rng.random(n) < 0.08
        c = rng.random(n) < 0.1
        for k in range(n):
            flags = {"a": bool(a[k]), "b": bool(b[k])}
            if k >= 50:  # a category that appears later, and one beyond a small bound
                flags["c"] = bool(c[k])
            out.append(flags)
        return out


class HarmRate(CategoryRates):
    """Toxic-output rate per moderation category a producer sends, and pooled.

    The pipeline's rule (:func:`streams.pipeline.rules.harm_flags`) turns moderation
    scores into flags (score >= cutoff, excluded categories left out).
    """

    kind: ClassVar[SignalKind] = SignalKind.TOXICITY_RATE


class FinishReasonRate(CategoryRates):
    """Rate of each watched finish reason (``content_filter``, ``length``, refusals)."""

    kind: ClassVar[SignalKind] = SignalKind.FINISH_REASON_RATE

    def __init__(
        self,
        max_categories: int = 3,
        pooled: bool = False,
        relative_shifts: tuple[float, ...] = (0.5, 1.0, 3.0),
        arl0: float = DEFAULT_ARL0,
        warmup: int = 1000,
        min_rate: float = 1e-3,
        baseline_confidence: float = BASELINE_CONFIDENCE,
    ) -> None:
        super().__init__(
            max_categories=max_categories,
            pooled=pooled,
            relative_shifts=relative_shifts,
            arl0=arl0,
            warmup=warmup,
            min_rate=min_rate,
            baseline_confidence=baseline_confidence,
        )


class _MetricRate(AdaptiveBernoulliCusum):
    """:class:`AdaptiveBernoulliCusum` whose signals name ``metric`` in ``feature``."""

    def __init__(
        self,
        metric: str = "",
        p0: float | None = None,
        relative_shifts: tuple[float, ...] = (0.5, 1.0, 3.0),
        arl0: float = DEFAULT_ARL0,
        warmup: int = 1000,
        max_reference: int = 50_000,
        min_rate: float = 1e-3,
        baseline_confidence: float = BASELINE_CONFIDENCE,
        merge_at_rest: bool = True,
    ) -> None:
        self.metric = metric
        super().__init__(
            p0=p0,
            relative_shifts=relative_shifts,
            arl0=arl0,
            warmup=warmup,
            max_reference=max_reference,
            min_rate=min_rate,
            baseline_confidence=baseline_confidence,
            merge_at_rest=merge_at_rest,
        )

    def _merge(self, fired: list[Signal]) -> Signal:
        signal = super()._merge(fired)
        return signal.model_copy(update={"feature": self.metric}) if self.metric else signal

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        return [{"metric": "judge/faithful", "warmup": 100, "arl0": 200.0, "max_reference": 800}]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        return BernoulliCusum._conformance_stream(seed, n)


class HallucinationRate(_MetricRate):
    """Rate of outputs whose groundedness is below the cutoff (the pipeline's rule)."""

    kind: ClassVar[SignalKind] = SignalKind.HALLUCINATION_RATE


class EvaluationFailRate(_MetricRate):
    """Rate of ``passed = false`` verdicts of one (evaluator, metric)."""

    kind: ClassVar[SignalKind] = SignalKind.EVALUATION_FAIL_RATE


class GuardrailBlockRate(_MetricRate):
    """Rate of blocks by one guardrail (``kind = guardrail`` evaluations)."""

    kind: ClassVar[SignalKind] = SignalKind.GUARDRAIL_BLOCK_RATE
