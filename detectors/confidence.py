"""Confidence deviation: shifts of the mean and of the distribution of confidence scores.

A drop in confidence is the usual failure (new inputs the model does not know); an
unexplained rise matters too (a degenerate model that is sure of everything). Three
tests share the false-alarm budget equally (false-alarm rates add, so each runs at
``3 * arl0`` and the detector keeps ARL0 >= ``arl0``):

* mean up / mean down: one-sided CUSUMs on the standardised score, one per design shift
  (``shift`` times each of ``designs``), exact for the empirical reference distribution
  and allowing for its estimated mean (:class:`detectors.mean_chart.MeanChart`).
* distribution: a windowed two-sample KS test against the reference, calibrated as the
  drift detectors are (``alpha = stride / (3 * arl0)``, see :mod:`detectors.windowed`); it
  catches changes of shape (bimodality, spread) that leave the mean alone.

A reference of the first few hundred values can be unlike the traffic that follows (the
night's requests, or plain chance beyond the estimated-parameter guard), and then every
test alarms again hours after each resolve. With ``reference_growth`` > 1 the reference
keeps learning after it is fitted: each further ``reference_size`` values seen at rest
(every statistic under half its threshold, none in an alarm's excursion or charted while
a change lasts, and older than the newest :data:`RECENT_BLOCKS` blocks) are merged into
it, until it stands for ``reference_growth`` times ``reference_size`` values. The merged reference
is kept as ``reference_size`` quantiles of all the values it stands for, so state and
memory do not grow, and the estimated-parameter guard narrows with the values it stands
for. A refit keeps the mean charts' statistics (they are at rest) and restarts the
distribution test's window on the new reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from detectors.base import (
    AT_REST,
    DEFAULT_ARL0,
    GROWTH_CHUNK,
    RECENT_BLOCKS,
    Detector,
    Direction,
    Excess,
    Frozen,
    JsonState,
    Quantity,
    Signal,
    SignalKind,
    frozen,
)
from detectors.drift import NumericDrift
from detectors.mean_chart import Fired, MeanChart, PriorCharts, reference_awaiting
from detectors.rate import BASELINE_CONFIDENCE

__all__ = ["ConfidenceShift"]

_N_TESTS = 3


class _Kept:
    """The values a growing reference keeps until they are merged (see the module's
    docstring): full blocks of :data:`GROWTH_CHUNK`, which never change (the detector
    store writes each once), the newer values, and the runs of observation indices they
    came from (an alarm drops them from its change-point estimate on)."""

    def __init__(self) -> None:
        self.blocks: list[Frozen] = []
        self.tail: list[float] = []
        self.runs: list[list[int]] = []  # [first observation index, values], oldest first

    def __len__(self) -> int:
        return len(self.blocks) * GROWTH_CHUNK + len(self.tail)

    def add(self, value: float, n: int) -> None:
        """Keep ``value``, observation ``n``."""
        self.tail.append(value)
        if len(self.tail) == GROWTH_CHUNK:
            self.blocks.append(frozen(self.tail))
            self.tail = []
        last = self.runs[-1] if self.runs else None
        if last is not None and last[0] + last[1] == n:
            last[1] += 1
        else:
            self.runs.append([n, 1])

    def drop_from(self, first: int) -> None:
        """Drop the kept values of observation ``first`` and after."""
        count = 0
        while self.runs and self.runs[-1][0] + self.runs[-1][1] > first:
            run = self.runs[-1]
            cut = min(run[1], run[0] + run[1] - first)
            count += cut
            run[1] -= cut
            if run[1] == 0:
                self.runs.pop()
        while count > 0:
            if not self.tail:
                self.tail = list(self.blocks.pop())
            cut = min(count, len(self.tail))
            del self.tail[len(self.tail) - cut :]
            count -= cut

    def take(self, blocks: int) -> list[float]:
        """Remove and return the ``blocks`` oldest full blocks' values."""
        taken = [v for b in self.blocks[:blocks] for v in b]
        del self.blocks[:blocks]
        count = len(taken)
        while count > 0:
            run = self.runs[0]
            cut = min(count, run[1])
            run[0] += cut
            run[1] -= cut
            count -= cut
            if run[1] == 0:
                self.runs.pop(0)
        return taken

    def get_state(self) -> JsonState:
        return {
            "ext": [{"v": b} for b in self.blocks],
            "tail": list(self.tail),
            "runs": [list(r) for r in self.runs],
        }

    def set_state(self, state: JsonState) -> None:
        self.blocks = [frozen(b["v"]) for b in state.get("ext", [])]
        self.tail = [float(v) for v in state.get("tail", [])]
        self.runs = [[int(a), int(b)] for a, b in state.get("runs", [])]


class ConfidenceShift(Detector[float]):
    """Two-sided mean CUSUM plus a windowed KS test on confidence scores.

    Parameters
    ----------
    arl0
        Target expected number of events between false alarms (all three tests).
    shift
        Smallest mean shift worth catching, in reference standard deviations.
    designs
        The design shifts of each direction's parallel CUSUMs, as multiples of ``shift``
        (ascending, the first 1). Each runs at ``len(designs)`` times its direction's
        ARL0, so the direction keeps its share of the budget (false-alarm rates add).
    reference_size
        The first ``reference_size`` scores form the reference (no alarms meanwhile).
    window, stride
        Window length and test spacing of the distribution test (stride default
        ``window // 4``).
    baseline_confidence
        The thresholds are solved as if the reference mean were its one-sided bound at
        this confidence towards each alarm (the estimated-parameter guard, see
        :mod:`detectors.mean_chart`).
    reference_growth
        The reference keeps learning at rest until it stands for this many times
        ``reference_size`` values (1: fixed once fitted; see the module's docstring).
    resolution
        Grid of the CUSUM increments, in standard deviations (default ``shift / 4``:
        the reference value ``shift / 2`` is two steps, rounding adds a variance of
        ``resolution^2 / 12``, under 0.2 % of the score's, and the exact calibration
        has about 150 states; a calibration or retarget is one banded solve of that
        size per search step, which a worker does for every key).

    ``update(score)`` takes one confidence score. Signals: for a mean shift, ``direction``
    UP or DOWN, ``statistic``/``threshold`` in standard deviations, ``baseline`` = the
    reference mean, ``observed`` = the mean since the change-point estimate
    (``first_index``), ``effect_size`` = their difference in reference standard deviations
    (Cohen's d). For a distribution change, ``direction`` BOTH, ``feature`` =
    ``"distribution"``, ``effect_size`` = the KS distance, ``p_value`` the test's p-value.
    """

    kind: ClassVar[SignalKind] = SignalKind.CONFIDENCE_SHIFT
    quantity: ClassVar[Quantity] = Quantity.MEAN

    def __init__(
        self,
        arl0: float = DEFAULT_ARL0,
        shift: float = 0.5,
        designs: tuple[float, ...] = (1.0,),
        reference_size: int = 1000,
        window: int = 200,
        stride: int | None = None,
        resolution: float | None = None,
        baseline_confidence: float = BASELINE_CONFIDENCE,
        reference_growth: int = 1,
    ) -> None:
        if not 0.5 <= baseline_confidence < 1.0:
            raise ValueError("baseline_confidence must be in [0.5, 1)")
        if reference_growth < 1:
            raise ValueError("reference_growth must be >= 1")
        self.baseline_confidence = baseline_confidence
        self.reference_growth = reference_growth
        self.arl0 = arl0
        self.shift = shift
        self.designs = tuple(float(m) for m in designs)
        self.reference_size = reference_size
        self.window = window
        self.stride = stride
        self.resolution = resolution
        if shift <= 0 or not 0 < self._res <= shift / 2:
            raise ValueError("need shift > 0 and 0 < resolution <= shift / 2")
        self._reset()  # MeanChart checks the designs

    @property
    def _res(self) -> float:
        return self.resolution if self.resolution is not None else self.shift / 4

    def _new_dist(self) -> NumericDrift:
        """The distribution test, to take a fitted reference of ``reference_size`` values."""
        return NumericDrift(
            features=("confidence",),
            arl0=self.arl0 * _N_TESTS,
            reference_size=self.reference_size,
            window=self.window,
            stride=self.stride,
        )

    def _reset(self) -> None:
        self._dist = self._new_dist()
        self._n = 0
        self._ref: list[float] = []
        self._chart = MeanChart(self.shift, self.designs, self._res, self.baseline_confidence)
        # Observations before the distribution test's first (``_n`` at the own fit minus
        # ``reference_size``): values a prior chart alarmed on joined no reference.
        self._dist_offset = 0
        self._prior: PriorCharts | None = None  # the parent's prior (see ``adopt_prior``)
        # The values the fitted reference stands for (more than its size once it has
        # grown), and the values kept since it was last fitted (see ``_grow``).
        self._stands_for = 0
        self._kept = _Kept()

    def get_state(self) -> JsonState:
        state: JsonState = {
            "n": self._n,
            "ref": list(self._ref),
            "dist": self._dist.get_state(),
            "dist_offset": self._dist_offset,
            **self._chart.get_state(),
        }
        if self._stands_for > self.reference_size or len(self._kept):
            state["grown"] = self._stands_for
            state |= self._kept.get_state()
        if self._prior is not None:
            state["prior"] = self._prior.get_state()
        return state

    def set_state(self, state: JsonState) -> None:
        self._n = state["n"]
        self._ref = list(state["ref"])
        # Absent in state saved before references grew, and until one has.
        self._stands_for = int(state.get("grown", self.reference_size))
        self._kept = _Kept()
        self._kept.set_state(state)
        self._dist.set_state(state["dist"])
        self._dist_offset = state.get("dist_offset", 0)
        if "dist_offset" not in state and self._ref:
            # Saved before priors, while learning: the distribution test then took its
            # reference value by value; it now takes it whole, with the mean chart's.
            self._dist = self._new_dist()
        self._chart.set_state(_one_design_layout(state) if "h_up" in state else state)
        prior = state.get("prior")
        self._prior = None if prior is None else PriorCharts.from_state(prior, self._chart)

    def set_arl0(self, arl0: float) -> None:
        """Retarget to a new ARL0 keeping the evidence (statistics and reference): the
        mean thresholds are re-solved from the stored reference increments, the
        distribution test runs at the new alpha."""
        self.arl0 = arl0
        self._dist.set_arl0(arl0 * _N_TESTS)
        self._chart.retarget(arl0 * _N_TESTS)
        if self._prior is not None:
            self._prior.retarget(arl0 * _N_TESTS)

    @property
    def learning(self) -> bool:
        """Until the key's own reference is complete (charting on a parent's prior is
        still learning: the pipeline holds it while a parent key alarms)."""
        return not self._chart.ready

    @property
    def alarm_ready(self) -> bool:
        return self._chart.ready or bool(self._prior and self._prior.charts)

    def awaiting(self) -> str:
        """The values its reference still lacks, or, for a young segment with its
        parent's prior, the values of its own it needs to chart on that prior."""
        if self.alarm_ready:
            return ""
        return reference_awaiting(len(self._ref), self.reference_size, self._prior, "values")

    @property
    def prior_settled(self) -> bool:
        """Whether ``adopt_prior`` can no longer change anything (it adopts once)."""
        return self._prior is not None or self._chart.ready

    def adopt_prior(self, parent: ConfidenceShift, strength: float) -> bool:
        """A young segment key's shrinkage prior: once it has ``strength`` values of its
        own (at least 20, fewer than its reference), chart its mean against the parent
        key's reference *shape*, standardised by its own mean and standard deviation
        (:meth:`detectors.mean_chart.MeanChart.fit_shape`), until its own reference is
        complete. Values seen while that chart's episode is alarmed join no reference: a
        reference must not learn the change it is alarming on (up to a reference's worth
        of values, see :class:`detectors.mean_chart.PriorCharts`).

        The parent must be this class with its own reference fitted and the same design
        grid. Returns whether the prior was adopted (once: a parent's reference does not
        change)."""
        if self._prior is not None or self._chart.ready or not parent._chart.ready:
            return False
        grid = (parent.shift, parent.designs, parent._res)
        if type(parent) is not type(self) or grid != (self.shift, self.designs, self._res):
            return False
        reference = parent._sorted_reference()
        spaces = [reference] if reference else []
        size = parent._stands_for  # its guard is that of the values it stands for
        self._prior = PriorCharts.adopt(
            [parent._chart], spaces, size, strength, self.reference_size
        )
        return self._prior is not None

    def _sorted_reference(self) -> Sequence[float]:
        """The sorted reference its values are charted against (none: charted raw)."""
        return ()

    def _charted(self, value: float) -> float:
        """``value`` in this key's charted space (raw values here)."""
        return value

    def _value(self, x: float) -> float:
        """The observation as it is referenced and charted (a transform, in subclasses)."""
        return float(x)

    @property
    def statistic(self) -> float:
        """Largest of the statistics, each divided by its threshold (alarm at 1)."""
        if not self._chart.ready:
            return max((c.ratio for c in self._prior.charts), default=0.0) if self._prior else 0.0
        return max(self._chart.ratio, self._dist.statistic / self._dist.threshold)

    @property
    def threshold(self) -> float:
        return 1.0

    def _learn(self, value: float, n: int) -> Signal | None:
        """Observation ``n`` while the own reference fills: charted on the parent's prior
        if there is one, then (unless that chart holds it out) referenced."""
        signal = None
        prior = self._prior
        if prior is not None and prior.charts:
            signal, held = self._prior_step(prior, value, n)
            if held:
                return signal
        self._ref.append(value)
        if len(self._ref) == self.reference_size:
            self._fit_reference(np.asarray(self._ref))
            self._ref = []
            self._prior = None
        elif prior is not None and not prior.charts and len(self._ref) >= prior.min_own:
            prior.start([[v] for v in self._ref], self._n, self._arl0_test)
        return signal

    def update_settled(self, x: float) -> Signal | None:
        """Held while it learns (a more general key of its model alarms): a young key on
        its parent's prior keeps charting, so that its alarms and its recovery are read,
        and nothing joins its own reference; without prior charts it skips ``x``."""
        prior = self._prior
        if self._chart.ready:
            return self._update(x, grow=False)  # a growing reference takes none of it
        if prior is None or not prior.charts:
            return super().update_settled(x)
        n = self._n
        self._n = n + 1
        return self._finish(self._prior_step(prior, self._value(x), n, held_out=True)[0])

    def _prior_step(
        self, prior: PriorCharts, value: float, n: int, held_out: bool = False
    ) -> tuple[Signal | None, bool]:
        """Observation ``n`` on the prior's chart: its signal, and whether the value stays
        out of the key's reference (:meth:`detectors.mean_chart.PriorCharts.update`)."""
        chart = prior.charts[0]  # (a restart drops it)
        step = prior.update([value], n, held_out)
        signal = self._merge(
            [self._mean_signal(n, f, chart, {"prior": 1.0}) for _, f in step.fired]
        )
        return signal, step.apply(self._ref)

    @property
    def _arl0_test(self) -> float:
        return self.arl0 * _N_TESTS

    def _fit_reference(self, ref: np.ndarray[Any, Any]) -> None:
        """Fit the mean chart on the complete reference and give it to the distribution
        test (which charts from the next observation on)."""
        self._keep_reference(sorted(ref.tolist()))
        self._stands_for = ref.size
        charted = np.asarray(self._charted_many(ref.tolist()))
        self._chart.fit(charted, self._n, self._arl0_test)
        self._give_dist(charted)

    def _keep_reference(self, values: list[float]) -> None:
        """Keep the sorted reference where :meth:`_reference` reads it (here: nowhere
        else than the distribution test, which holds the same values)."""

    def _reference(self) -> Sequence[float]:
        """The fitted reference, sorted, as :meth:`_value` gives them: the distribution
        test's, since values are charted raw."""
        return self._dist.sorted_reference()

    def _give_dist(self, charted: np.ndarray[Any, Any]) -> None:
        """A fitted reference (charted) for the distribution test, which charts from the
        next observation on."""
        self._dist_offset = self._n - charted.size
        for v in charted.tolist():
            self._dist.update({"confidence": v})

    @property
    def _growing(self) -> bool:
        """Whether the fitted reference still learns (see the module's docstring)."""
        return (
            self.reference_growth > 1
            and self._chart.ready
            and self._stands_for < self.reference_growth * self.reference_size
            and bool(self._reference())
        )

    @property
    def learns(self) -> bool:
        """Learning, or a fitted reference still growing: the pipeline holds it while a
        more general key alarms (:meth:`update_settled` then keeps no value)."""
        return self.learning or self._growing

    def _grow(self, value: float, n: int, signal: Signal | None) -> None:
        """Observation ``n`` (``value``) was charted on the fitted reference and raised
        ``signal`` (any test's, before :meth:`_finish`). An alarm drops the kept values from
        its change-point estimate on (they may hold the change; those before it were at
        rest), and no value joins while a change lasts (:attr:`MeanChart.alarmed`: until
        its recovery test reads it as over). Else the value is kept, and
        once a reference's worth of kept values is older than the newest
        :data:`RECENT_BLOCKS` blocks and the charts are at rest, they join the reference.
        At most ``reference_growth`` references' worth is kept, the oldest dropped."""
        kept = self._kept
        if signal is not None:
            kept.drop_from(signal.first_index)
            return
        if self._chart.alarmed:
            return
        kept.add(value, n)
        if len(kept.blocks) * GROWTH_CHUNK > self.reference_growth * self.reference_size:
            kept.take(1)
        ripe = len(kept.blocks) - RECENT_BLOCKS
        if ripe * GROWTH_CHUNK >= self.reference_size and self._at_rest():
            self._refit(kept.take(ripe))

    def _at_rest(self) -> bool:
        dist = self._dist
        return self._chart.ratio < AT_REST and (
            dist.learning or dist.statistic < AT_REST * dist.threshold
        )

    def _refit(self, kept: list[float]) -> None:
        """Merge ``kept`` values into the reference: ``reference_size`` quantiles of the
        values both stand for, the reference's each weighted by what it stood for. The mean
        chart keeps its statistics; the distribution test starts afresh on the new
        reference. Once grown in full, the values still kept are let go."""
        ref = np.asarray(self._reference(), dtype=np.float64)
        size = ref.size
        weights = np.concatenate([np.full(size, self._stands_for / size), np.ones(len(kept))])
        values = np.concatenate([ref, np.asarray(kept, dtype=np.float64)])
        order = np.argsort(values, kind="stable")
        cum = np.cumsum(weights[order])
        at = np.searchsorted(cum, (np.arange(size) + 0.5) / size * cum[-1])
        merged = values[order][np.minimum(at, values.size - 1)].tolist()
        self._stands_for += len(kept)
        if not self._growing:
            self._kept = _Kept()
        self._keep_reference(merged)
        charted = np.asarray(self._charted_many(merged))
        self._chart.refit(charted, self._stands_for, self._arl0_test)
        self._dist = self._new_dist()
        self._give_dist(charted)

    def update(self, x: float) -> Signal | None:
        return self._update(x, grow=True)

    def _update(self, x: float, grow: bool) -> Signal | None:
        """:meth:`update`; ``grow``: a growing reference may keep the value."""
        n = self._n
        self._n = n + 1
        value = self._value(x)
        if not self._chart.ready:
            return self._finish(self._learn(value, n))
        charted = self._charted(value)
        signal = self._step(n, charted, self._chart.update(charted, n))
        if grow and self._growing:
            self._grow(value, n, signal)
        return self._finish(signal)

    def update_many(self, xs: Iterable[float]) -> list[Signal]:
        """As :meth:`update` of each in turn; once the own reference is fitted (and has
        grown), the mean chart takes the batch in one call (:meth:`MeanChart.update_many`,
        bit for bit the steps) and the distribution test, independent of it, takes the
        rows between two of its tests as slices (:meth:`WindowedDrift.push_rows`)."""
        batch = list(xs)
        out: list[Signal] = []
        i = 0
        while i < len(batch) and (not self._chart.ready or self._growing):
            signal = self.update(batch[i])
            if signal is not None:
                out.append(signal)
            i += 1
        if i == len(batch):
            return out
        values = [self._value(x) for x in batch[i:]]
        if not np.all(np.isfinite(values)):  # (an update raises on NaN: where a step would)
            return out + [s for x in batch[i:] if (s := self.update(x)) is not None]
        charted = self._charted_many(values)
        first = self._n
        self._n += len(charted)
        fired: dict[int, list[Fired]] = {}
        for n, f in self._chart.update_many(charted, first):
            fired.setdefault(n, []).append(f)
        if self._dist.learning:
            steps = [self._step(n, v, fired.get(n, [])) for n, v in enumerate(charted, first)]
        else:
            off = self._dist_offset
            windows = {s.last_index + off: s for s in self._dist.push_rows([[v] for v in charted])}
            steps = [
                self._combined(n, fired.get(n, []), windows.get(n))
                for n in sorted(fired.keys() | windows.keys())
            ]
        out += [s for step in steps if (s := self._finish(step)) is not None]
        return out

    def _step(self, n: int, charted: float, fired: list[Fired]) -> Signal | None:
        """Observation ``n`` (charted as ``charted``) after the mean chart raised
        ``fired`` on it: the distribution test takes it too."""
        dist = self._dist
        dist_signal = (
            dist.update({"confidence": charted}) if dist.learning else dist.push_row([charted])
        )
        return self._combined(n, fired, dist_signal)

    def _combined(self, n: int, fired: list[Fired], window: Signal | None) -> Signal | None:
        """Observation ``n``'s signal: the mean chart's alarms and the distribution
        test's, merged."""
        signals = [self._mean_signal(n, f) for f in fired]
        if window is not None:
            off = self._dist_offset
            signals.append(
                window.model_copy(
                    update={
                        "detector": type(self).__name__,
                        "kind": self.kind,
                        "feature": "distribution",
                        "first_index": window.first_index + off,
                        "last_index": window.last_index + off,
                    }
                )
            )
        return self._merge(signals)

    def _charted_many(self, values: list[float]) -> list[float]:
        """:meth:`_charted` of each value (vectorised in subclasses, the same floats)."""
        return [self._charted(v) for v in values]

    def _finish(self, signal: Signal | None) -> Signal | None:
        """The signal as this detector reports it (subclasses drop or rename)."""
        return signal

    @staticmethod
    def _merge(signals: list[Signal]) -> Signal | None:
        """The first signal, naming the others in its details."""
        if not signals:
            return None
        first = signals[0]
        if len(signals) == 1:
            return first
        details = dict(first.details)
        for other in signals[1:]:
            details[f"also:{other.direction.value}:{other.feature or 'mean'}"] = other.effect_size
        return first.model_copy(update={"details": details})

    def excess(
        self, feature: str | None = None, direction: Direction = Direction.DOWN
    ) -> Excess | None:
        """The mean shift of the current episode in ``direction`` (UP, else down: a change
        of the distribution's shape is read as its usual failure, a drop); see
        :meth:`MeanChart.excess`. While a parent's prior charts, its episode."""
        young = self._prior.charts if self._prior is not None else []
        return (young[0] if young else self._chart).excess(direction, self._n)

    def _mean_signal(
        self,
        n: int,
        fired: Fired,
        chart: MeanChart | None = None,
        extra: dict[str, float] | None = None,
    ) -> Signal:
        name, details = type(self).__name__, {"arl0": float(self.arl0), **(extra or {})}
        return (chart or self._chart).signal(name, self.kind, n, fired, "mean", details)

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        base = {"arl0": 500.0, "reference_size": 200, "window": 50, "stride": 10}
        grown = base | {"reference_size": 100, "reference_growth": 4}
        return [base, base | {"designs": (1.0, 2.0, 4.0)}, grown]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        a = np.where(np.arange(n) < n // 2, 8.0, 4.0)
        return [float(v) for v in rng.beta(a, 2.0)]


def _one_design_layout(state: JsonState) -> JsonState:
    """State saved before the charts had several designs (scalars per direction), in the
    layout of :class:`MeanChart`."""
    h = [[state["h_up"]], [state["h_down"]]] if state["h_up"] else []
    n = state["n"]
    return {
        "mu": state["mu"],
        "sigma": state["sigma"],
        "kq": [state["kq"]],
        "h": h,
        **{key: [[state[f"{key}_up"]], [state[f"{key}_down"]]] for key in ("s", "start", "sum")},
        # absent: saved before episodes existed, which then start now
        "ep": [
            list(state.get("ep_up", [0, n, 0.0, False])),
            list(state.get("ep_down", [0, n, 0.0, False])),
        ],
        "pmf": [list(p) for p in state.get("pmf", [])],  # absent: saved before retargets
    }
