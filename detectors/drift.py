"""Drift of numeric, categorical and embedding inputs and of the output/label mix.

Each windowed detector here turns an input into per-feature values and tests a window of
them against a reference with a two-sample test (KS for numbers, chi-square for
categories); the windows, the test times and the calibration to ``arl0`` (Holm across
features, ``alpha = stride / arl0``) are :class:`~detectors.windowed.WindowedDrift`'s.

river's drift detectors (ADWIN, KSWIN, ...) have no setting that maps to a false-alarm
rate, so they are not used here; ``bench/detectors.py`` measures them for comparison.
With the optional alibi-detect extra, :class:`AlibiOnlineDrift` wraps its online
detectors (which are calibrated to an expected run time by simulation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from scipy.special import ndtr

from detectors.base import (
    DEFAULT_ARL0,
    Detector,
    Direction,
    Excess,
    Frozen,
    JsonState,
    Signal,
    SignalKind,
    frozen,
)
from detectors.mean_chart import (
    Fired,
    MeanChart,
    PriorCharts,
    normal_score,
    normal_scores,
    reference_awaiting,
)
from detectors.rate import BASELINE_CONFIDENCE
from detectors.twosample import chi2_homogeneity, ks_two_sample
from detectors.windowed import WindowedDrift

__all__ = [
    "AlibiOnlineDrift",
    "CategoricalDrift",
    "EmbeddingDrift",
    "LabelMixDrift",
    "NumericDrift",
]

X = TypeVar("X")

ALIBI_HINT = (
    "the alibi-detect backend needs the optional extra: "
    "pip install 'sentinel-ai-incidents[alibi]'. Note: alibi-detect >= 0.12 is under the "
    "Business Source License 1.1 (production use needs a commercial licence from Seldon)."
)


def _ks_results(
    names: Sequence[str], ref_sorted: np.ndarray[Any, Any], win: np.ndarray[Any, Any]
) -> list[tuple[str, float, float, float, float]]:
    dstat, pvals = ks_two_sample(ref_sorted, win)
    ref_mean, win_mean = ref_sorted.mean(axis=0), win.mean(axis=0)
    return [
        (name, float(pvals[j]), float(dstat[j]), float(ref_mean[j]), float(win_mean[j]))
        for j, name in enumerate(names)
    ]


class _ChartedDrift(WindowedDrift[X], Generic[X]):
    """A window test and, with ``designs``, up and down mean CUSUMs of each feature on its
    normal scores: the machinery :class:`NumericDrift` and :class:`EmbeddingDrift` share
    (the former's docstring describes the signals). A subclass says how an input becomes
    a row of per-feature values (``_row``)."""

    def __init__(
        self,
        features: tuple[str, ...] = ("x",),
        arl0: float = DEFAULT_ARL0,
        reference_size: int = 1000,
        window: int = 200,
        stride: int | None = None,
        shift: float = 0.5,
        designs: tuple[float, ...] = (),
    ) -> None:
        self.features = features
        self.shift = shift
        self.designs = tuple(float(m) for m in designs)
        super().__init__(arl0, reference_size, window, stride)

    @property
    def _window_share(self) -> float:
        return 2.0 if self.designs else 1.0

    @property
    def _charted(self) -> int:
        """How many of the features, from the first, get mean charts (with ``designs``)."""
        return len(self.features)

    @property
    def _direction_arl0(self) -> float:
        """Each mean test direction's ARL0: half the budget over ``2 x`` charted features."""
        return self.arl0 * 2.0 * 2 * self._charted

    def _reset(self) -> None:
        super()._reset()
        self._charts = [
            MeanChart(self.shift, self.designs, self.shift / 4, BASELINE_CONFIDENCE)
            for _ in self.features[: self._charted]
            if self.designs
        ]
        self._cols: Sequence[Sequence[float]] = ()
        self._prior: PriorCharts | None = None  # the parent's prior (see ``adopt_prior``)

    def get_state(self) -> JsonState:
        state = super().get_state()
        if self._charts:
            state["charts"] = [c.get_state() for c in self._charts]
        if self._prior is not None:
            state["prior"] = self._prior.get_state()
        return state

    def set_state(self, state: JsonState) -> None:
        super().set_state(state)
        for chart, st in zip(self._charts, state.get("charts", []), strict=False):
            chart.set_state(st)
        if self._cols and "charts" not in state:
            # A reference fitted before this detector had mean charts (state saved by an
            # earlier release): they start now, on that reference.
            self._fit_charts(np.asarray(self._cols, dtype=np.float64).T)
        prior = state.get("prior")
        self._prior = None if prior is None else PriorCharts.from_state(prior, self._charts[0])

    def set_arl0(self, arl0: float) -> None:
        super().set_arl0(arl0)
        for chart in self._charts:
            chart.retarget(self._direction_arl0)
        if self._prior is not None:
            self._prior.retarget(self._direction_arl0)

    def sorted_reference(self, feature: int = 0) -> Sequence[float]:
        """One feature's fitted reference, sorted (empty until fitted)."""
        return self._fitted["sorted"][feature] if self._fitted else ()

    @property
    def alarm_ready(self) -> bool:
        return bool(self._fitted) or bool(self._prior and self._prior.charts)

    def awaiting(self) -> str:
        """As :meth:`detectors.confidence.ConfidenceShift.awaiting`: its own reference, or
        the observations it needs to chart on its parent's prior."""
        if self.alarm_ready:
            return ""
        return reference_awaiting(len(self._ref), self.reference_size, self._prior, "observations")

    @property
    def prior_settled(self) -> bool:
        """Whether ``adopt_prior`` can no longer change anything (it adopts once)."""
        return self._prior is not None or bool(self._fitted)

    def adopt_prior(self, parent: _ChartedDrift[X], strength: float) -> bool:
        """A young segment key's shrinkage prior, as the score charts take it
        (:meth:`detectors.confidence.ConfidenceShift.adopt_prior`): once it has
        ``strength`` rows of its own (at least 20, fewer than its reference), each
        feature's mean charts run on the parent's reference shape, with the key's own
        location and spread of the normal scores against the parent's reference, until
        its own reference is complete. The window test waits for its own reference.
        Values seen while a young chart's episode is alarmed join no reference (up to
        a reference's worth, see :class:`detectors.mean_chart.PriorCharts`).

        The parent must be this class, with the same features and designs and its
        reference fitted. Returns whether the prior was adopted (once)."""
        if self._prior is not None or self._fitted or not parent._fitted or not parent._charts:
            return False
        grid = (parent.features, parent.shift, parent.designs)
        if type(parent) is not type(self) or grid != (self.features, self.shift, self.designs):
            return False
        size = parent.reference_size
        self._prior = PriorCharts.adopt(
            parent._charts, parent._cols, size, strength, self.reference_size
        )
        return self._prior is not None

    def update(self, x: X) -> Signal | None:
        prior = self._prior
        if self._fitted or prior is None:
            return super().update(x)
        n = self._n
        self._n = n + 1
        row = self._ref_row(x)
        signal = None
        if prior.charts:
            signal, held = self._prior_step(prior, row, n)
            if held:
                return signal
        self._reference(row)
        if self._fitted:
            self._prior = None
        elif not prior.charts and len(self._ref) >= prior.min_own:
            prior.start(self._ref, self._n, self._direction_arl0)
        return signal

    def update_settled(self, x: X) -> Signal | None:
        """Held while it learns (a more general key of its model alarms): a young key on
        its parent's prior keeps charting, so that its alarms and its recovery are read,
        and nothing joins its own reference; without prior charts it skips ``x``."""
        prior = self._prior
        if self._fitted or prior is None or not prior.charts:
            return super().update_settled(x)
        n = self._n
        self._n = n + 1
        return self._prior_step(prior, self._ref_row(x), n, held_out=True)[0]

    def _prior_step(
        self, prior: PriorCharts, row: list[Any], n: int, held_out: bool = False
    ) -> tuple[Signal | None, bool]:
        """Observation ``n`` on the prior's charts: its signal, and whether the row stays
        out of the key's reference (:meth:`detectors.mean_chart.PriorCharts.update`)."""
        charts = prior.charts  # (a restart drops them)
        step = prior.update(row, n, held_out)
        signal = None
        if step.fired:
            j, f = max(step.fired, key=lambda jf: jf[1].statistic / jf[1].threshold)
            signal = self._mean_signal(n, j, f, charts[j], prior.spaces[j])
        return signal, step.apply(self._ref)

    @property
    def statistic(self) -> float:
        """The window test's ``-log10 p``, or a mean test's statistic / threshold in the
        same units when that is higher (alarm at ``threshold`` either way)."""
        charts = self._prior.charts if self._prior is not None else self._charts
        ratio = max((c.ratio for c in charts), default=0.0)
        return max(super().statistic, ratio * self.threshold)

    def _restore(self) -> None:
        cols = self._fitted.get("sorted")
        if cols and not isinstance(cols, Frozen):  # as read back from a store
            cols = frozen(cols)
            self._fitted = {**self._fitted, "sorted": cols}
        self._ref_sorted = np.asarray(cols, dtype=np.float64).T if cols else None
        self._cols = cols if cols and self._charts else ()  # read-only, for bisect

    def _fit(self, ref: list[list[Any]]) -> JsonState:
        arr = np.sort(np.asarray(ref, dtype=np.float64), axis=0)
        self._fit_charts(arr)
        return {"sorted": frozen(arr.T.tolist())}

    def _fit_charts(self, arr: np.ndarray[Any, Any]) -> None:
        """Fit each feature's mean charts to its sorted reference column (``arr[:, j]``)."""
        for j, chart in enumerate(self._charts):
            scores = normal_scores(arr[:, j], arr[:, j])
            chart.fit(scores, self._n, self._direction_arl0)

    def push_rows(self, rows: list[list[Any]]) -> list[Signal]:
        """The window takes the rows in slices and each feature's mean chart its normal
        scores in one call (:meth:`MeanChart.update_many`), the signals merged per
        observation as ``_push`` merges them."""
        if not self._cols:
            return super().push_rows(rows)
        first = self._n
        windows = {s.last_index: s for s in self._window_rows(rows)}
        assert self._ref_sorted is not None
        best: dict[int, tuple[int, Fired]] = {}
        for j, chart in enumerate(self._charts):
            col = np.ascontiguousarray(self._ref_sorted[:, j])
            scores = normal_scores(col, np.asarray([row[j] for row in rows], dtype=np.float64))
            for n, fired in chart.update_many(scores.tolist(), first):
                best[n] = _stronger(best.get(n), j, fired)
        return [
            signal
            for n in sorted(windows.keys() | best.keys())
            if (signal := self._merged(n, windows.get(n), best.get(n))) is not None
        ]

    def _merged(
        self, n: int, window_signal: Signal | None, best: tuple[int, Fired] | None
    ) -> Signal | None:
        """Observation ``n``'s signal: the strongest mean alarm (feature ``best[0]``),
        naming a window alarm on the same observation in its details, else the window's."""
        if best is None:
            return window_signal
        signal = self._mean_signal(n, *best)
        if window_signal is not None:
            details = {**signal.details, "also:window": window_signal.effect_size}
            signal = signal.model_copy(update={"details": details})
        return signal

    def _push(self, n: int, row: list[Any]) -> Signal | None:
        window_signal = super()._push(n, row)
        if not self._cols:
            return window_signal
        best: tuple[int, Fired] | None = None
        for j, chart in enumerate(self._charts):
            for fired in chart.update(normal_score(self._cols[j], row[j]), n):
                best = _stronger(best, j, fired)
        return self._merged(n, window_signal, best)

    def excess(
        self, feature: str | None = None, direction: Direction = Direction.UP
    ) -> Excess | None:
        """The mean shift of ``feature``'s current episode in ``direction`` (UP, else
        down), in normal scores (:meth:`MeanChart.excess`); None without mean tests. A
        window test's signal has no direction: localization reads it as a drop."""
        if feature not in self.features[: len(self._charts)]:
            return None
        charts = self._prior.charts if self._prior is not None else self._charts
        j = self.features.index(feature)
        return charts[j].excess(direction, self._n) if charts else None

    def _mean_signal(
        self,
        n: int,
        j: int,
        fired: Fired,
        young: MeanChart | None = None,
        space: list[float] | None = None,
    ) -> Signal:
        """The chart's signal (``effect_size`` in standard deviations of the normal
        scores), with ``baseline``/``observed`` in the feature's own units: the reference
        median, and the reference quantile at the mean normal score since the change-point
        (what a reader can compare with the raw values). With a ``young`` key's chart on
        its parent's shape, against the parent's reference ``space``, from its own level."""
        prior = {"prior": 1.0} if young else {}
        details = {"test": 1.0, "arl0": float(self.arl0)} | prior
        name, feature = type(self).__name__, self.features[j]
        chart = young or self._charts[j]
        signal = chart.signal(name, self.kind, n, fired, feature, details)
        col = space if young and space is not None else self._cols[j]
        centre = float(ndtr(chart.mu)) if young else 0.5  # a young key's own location
        raw = np.quantile(col, [centre, float(ndtr(fired.observed))])
        return signal.model_copy(update={"baseline": float(raw[0]), "observed": float(raw[1])})

    def _test(self, rows: list[list[Any]]) -> list[tuple[str, float, float, float, float]]:
        assert self._ref_sorted is not None
        width = len(self.features)
        # one pass over the rows, flattened (np.asarray would walk the nested lists)
        flat = chain.from_iterable(rows)
        window = np.fromiter(flat, dtype=np.float64, count=len(rows) * width)
        return _ks_results(self.features, self._ref_sorted, window.reshape(len(rows), width))


class NumericDrift(_ChartedDrift[Mapping[str, float]]):
    """Distribution drift of numeric input features (two-sample KS per feature, Holm), and
    with ``designs`` mean shifts of each feature (CUSUMs, far sooner than a window test).

    ``update(x)`` takes a mapping feature -> value with every name in ``features``.
    Signal of the window test: ``feature`` = most significant feature, ``effect_size`` = its
    KS distance ``D`` (0..1), ``baseline``/``observed`` = its reference/window means,
    ``p_value`` Bonferroni-adjusted, ``details`` = p-values of every feature Holm rejects.

    ``designs`` (multiples of ``shift``, in reference standard deviations; none by
    default): each feature also gets up and down mean CUSUMs on its *normal scores*
    against the reference (:class:`detectors.mean_chart.MeanChart`, as the score charts
    of :mod:`detectors.score_shift`): a KS window needs a good part of its 200 values
    past a shift before it rejects at a strict alpha, a CUSUM designed near the shift a
    few dozen. The window test then spends half of ``arl0`` and the ``2 x features``
    directions the other half. Signal of a mean test: ``direction`` UP or DOWN, ``feature``
    the feature, ``effect_size`` the shift of the mean normal score since the change-point
    estimate in standard deviations, ``baseline``/``observed`` in the feature's units (see
    ``_mean_signal``), ``details["test"]`` = 1 (a mean test).
    """

    def _row(self, x: Mapping[str, float]) -> list[Any]:
        return [float(x[f]) for f in self.features]

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        base = {"features": ("a", "b"), "arl0": 500.0, "reference_size": 200, "window": 50,
                "stride": 10}  # fmt: skip
        return [base, base | {"designs": (1.0, 2.0, 4.0)}]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        a = rng.normal(np.where(np.arange(n) < n // 2, 0.0, 1.0))
        b = rng.exponential(size=n)
        return [{"a": float(u), "b": float(v)} for u, v in zip(a, b, strict=True)]


def _fit_categories(values: list[str], window: int) -> tuple[list[str], list[float]]:
    """Reference categories kept as their own cell, and reference counts (+ 'other').

    Categories expected fewer than 5 times in a window are pooled into 'other' so the
    chi-square approximation holds at small alpha.
    """
    uniq, counts = np.unique(np.asarray(values, dtype=object), return_counts=True)
    n = len(values)
    keep = [(str(c), int(k)) for c, k in zip(uniq, counts, strict=True) if k * window / n >= 5]
    kept = [c for c, _ in keep]
    ref_counts = [float(k) for _, k in keep]
    ref_counts.append(float(n - sum(k for _, k in keep)))
    return kept, ref_counts


def _chi2_result(
    name: str, cats: list[str], ref_counts: list[float], codes: list[int]
) -> tuple[str, float, float, float, float]:
    ref = np.asarray(ref_counts)
    win = np.bincount(np.asarray(codes, dtype=np.int64), minlength=ref.size).astype(float)
    _, p = chi2_homogeneity(ref, win)
    ref_f, win_f = ref / ref.sum(), win / win.sum()
    diff = win_f - ref_f
    top = int(np.argmax(np.abs(diff)))
    tvd = 0.5 * float(np.abs(diff).sum())
    label = cats[top] if top < len(cats) else "<other>"
    return (f"{name}={label}", p, tvd, float(ref_f[top]), float(win_f[top]))


def _stronger(held: tuple[int, Fired] | None, j: int, fired: Fired) -> tuple[int, Fired]:
    """The stronger of a held mean alarm and feature ``j``'s ``fired`` (statistic over
    threshold; on a tie the one held, which came first)."""
    if held is None or fired.statistic / fired.threshold > held[1].statistic / held[1].threshold:
        return (j, fired)
    return held


class CategoricalDrift(WindowedDrift[Mapping[str, str]]):
    """Drift of categorical input features: chi-square vs reference frequencies, Holm.

    ``update(x)`` takes a mapping feature -> category. Categories rare in the reference
    and categories never seen there share an 'other' cell. Signal: ``feature`` =
    ``"<feature>=<category>"`` for the category whose share moved most, ``baseline`` /
    ``observed`` = that share in reference / window, ``effect_size`` = total variation
    distance between the two distributions of that feature (0..1).
    """

    def __init__(
        self,
        features: tuple[str, ...] = ("x",),
        arl0: float = DEFAULT_ARL0,
        reference_size: int = 1000,
        window: int = 200,
        stride: int | None = None,
    ) -> None:
        self.features = features
        super().__init__(arl0, reference_size, window, stride)

    def _restore(self) -> None:
        cats = self._fitted.get("cats", [])
        self._codes = [{c: i for i, c in enumerate(cs)} for cs in cats]

    def _ref_row(self, x: Mapping[str, str]) -> list[Any]:
        return [str(x[f]) for f in self.features]

    def _row(self, x: Mapping[str, str]) -> list[Any]:
        return [
            codes.get(str(x[f]), len(codes))
            for f, codes in zip(self.features, self._codes, strict=True)
        ]

    def _fit(self, ref: list[list[Any]]) -> JsonState:
        fitted = [
            _fit_categories([r[j] for r in ref], self.window) for j in range(len(self.features))
        ]
        return {"cats": [c for c, _ in fitted], "counts": [k for _, k in fitted]}

    def _test(self, rows: list[list[Any]]) -> list[tuple[str, float, float, float, float]]:
        return [
            _chi2_result(
                f, self._fitted["cats"][j], self._fitted["counts"][j], [r[j] for r in rows]
            )
            for j, f in enumerate(self.features)
        ]

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        return [
            {"features": ("locale",), "arl0": 500.0, "reference_size": 200, "window": 50,
             "stride": 10}
        ]  # fmt: skip

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        cats = np.array(["en", "de", "fr", "ja"])
        first = rng.choice(cats, size=n // 2, p=[0.6, 0.2, 0.15, 0.05])
        second = rng.choice(cats, size=n - n // 2, p=[0.3, 0.2, 0.15, 0.35])
        return [{"locale": str(c)} for c in np.concatenate((first, second))]


class LabelMixDrift(WindowedDrift[str]):
    """Drift of the output/label mix (e.g. predicted class, refusal vs answer).

    ``update(label)`` takes the label as a string; the test and Signal fields are those of
    :class:`CategoricalDrift` with the single feature ``"label"``.
    """

    kind: ClassVar[SignalKind] = SignalKind.OUTPUT_DRIFT

    def _restore(self) -> None:
        cats = self._fitted.get("cats", [])
        self._codes = {c: i for i, c in enumerate(cats)}

    def _ref_row(self, x: str) -> list[Any]:
        return [str(x)]

    def _row(self, x: str) -> list[Any]:
        return [self._codes.get(str(x), len(self._codes))]

    def _fit(self, ref: list[list[Any]]) -> JsonState:
        cats, counts = _fit_categories([r[0] for r in ref], self.window)
        return {"cats": cats, "counts": counts}

    def _test(self, rows: list[list[Any]]) -> list[tuple[str, float, float, float, float]]:
        codes = [r[0] for r in rows]
        return [_chi2_result("label", self._fitted["cats"], self._fitted["counts"], codes)]

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        return [{"arl0": 500.0, "reference_size": 200, "window": 50, "stride": 10}]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        labels = np.array(["answer", "refusal", "clarify"])
        first = rng.choice(labels, size=n // 2, p=[0.8, 0.1, 0.1])
        second = rng.choice(labels, size=n - n // 2, p=[0.5, 0.4, 0.1])
        return [str(c) for c in np.concatenate((first, second))]


class EmbeddingDrift(_ChartedDrift[Sequence[float]]):
    """Drift of embedding inputs, kept cheap: a few derived numbers per embedding, tested
    as :class:`NumericDrift` tests its features.

    The first half of the reference learns the reference mean embedding; after that each
    embedding becomes ``n_projections + 1`` numbers: its distance to the reference mean
    (any mean shift or spread change moves it, in whatever direction and whatever the
    dimension) and its projections on ``n_projections`` random unit directions drawn from
    ``seed`` (regenerated, not stored, so the state stays small). Signal fields as in
    :class:`NumericDrift`, with features ``"distance"`` and ``"proj<i>"``.

    With ``designs`` the distance also gets up and down mean CUSUMs, as a numeric feature
    does: a KS window over 200 embeddings misses a shift that moves the distance by a
    third of its spread, which the charts find within a few hundred (docs/detection.md,
    "Input drift in embeddings"). The projections keep the window test alone: a random
    direction takes about ``1 / dimension`` of a shift's square, and their charts would
    cost four times the distance's. A young segment key learns its own reference: its
    embeddings sit around a mean of their own, so a parent's distances say nothing about
    them.
    """

    def __init__(
        self,
        n_projections: int = 4,
        seed: int = 0,
        arl0: float = DEFAULT_ARL0,
        reference_size: int = 1000,
        window: int = 200,
        stride: int | None = None,
        shift: float = 0.5,
        designs: tuple[float, ...] = (),
    ) -> None:
        self.n_projections = n_projections
        self.seed = seed
        names = ("distance", *(f"proj{i}" for i in range(n_projections)))
        super().__init__(names, arl0, reference_size, window, stride, shift, designs)

    def _reset(self) -> None:
        super()._reset()
        self._sum: list[float] = []
        self._mean: np.ndarray[Any, Any] | None = None
        self._dirs: np.ndarray[Any, Any] | None = None
        # Embeddings seen since the last window test, not yet made rows (see ``update``).
        self._pending: list[Sequence[float]] = []

    def get_state(self) -> JsonState:
        self._drain()
        state = super().get_state()
        state["sum"] = list(self._sum)
        return state

    def set_state(self, state: JsonState) -> None:
        self._sum = list(state["sum"])
        self._pending = []
        super().set_state(state)

    def params(self) -> dict[str, Any]:
        params = super().params()
        del params["features"]  # named after n_projections
        return params

    @property
    def _charted(self) -> int:
        return 1  # the distance: the projections' mean charts cost more than they add

    @property
    def prior_settled(self) -> bool:
        return True  # nothing to adopt (see the class docstring)

    def adopt_prior(self, parent: _ChartedDrift[Sequence[float]], strength: float) -> bool:
        return False

    def update(self, x: Sequence[float]) -> Signal | None:
        """Once the reference is fitted, an embedding becomes a row only when the window
        test is due (or the state is read), all rows since the last test in one
        vectorised call: the rows are those of one-at-a-time updates, bit for bit (see
        ``_rows``), and no row between two tests can raise anything. The distance's
        charts take each distance as it comes (the same number as its row's).

        An embedding of another size than the first one the detector saw is skipped: its
        distance to the reference mean means nothing (a new encoder needs a new key or a
        reset)."""
        if self._sum and len(x) != len(self._sum):
            return None
        if not self._fitted:
            return super().update(x)
        n = self._n
        self._n = n + 1
        self._pending.append(x)
        best: tuple[int, Fired] | None = None
        if self._charts:
            z = normal_score(self._cols[0], self._distance(x))
            for fired in self._charts[0].update(z, n):
                best = _stronger(best, 0, fired)
        k = len(self._pending)
        due = len(self._win) + k >= self.window and self._since + k >= self._stride
        return self._merged(n, self._drain() if due else None, best)

    def update_many(self, xs: Iterable[Sequence[float]]) -> list[Signal]:
        batch = list(xs)
        if any(len(x) != len(batch[0]) for x in batch) or (
            batch and self._sum and len(batch[0]) != len(self._sum)
        ):
            return [s for x in batch if (s := self.update(x)) is not None]  # skips some
        self._drain()
        return super().update_many(batch)

    def _drain(self) -> Signal | None:
        """Push the pending embeddings' rows; the last push's signal (only it can test)."""
        if not self._pending:
            return None
        rows, first = self._rows(self._pending), self._n - len(self._pending)
        self._pending = []
        signal = None
        for i, row in enumerate(rows):
            signal = WindowedDrift._push(self, first + i, row)  # the charts had them
        return signal

    def _restore(self) -> None:
        half = self.reference_size // 2
        if self._sum and self._n >= half:
            self._mean = np.asarray(self._sum) / half
            rng = np.random.default_rng(self.seed)
            dirs = rng.standard_normal((self._mean.size, self.n_projections))
            self._dirs = dirs / np.linalg.norm(dirs, axis=0)
        super()._restore()

    def _ref_row(self, x: Sequence[float]) -> list[Any]:
        half = self.reference_size // 2
        if self._n <= half:
            v = np.asarray(x, dtype=np.float64)
            self._sum = v.tolist() if not self._sum else (np.asarray(self._sum) + v).tolist()
            if self._n == half:
                self._restore()
            return []
        return self._row(x)

    def _row(self, x: Sequence[float]) -> list[Any]:
        return self._rows([x])[0]

    def _rows(self, xs: list[Sequence[float]]) -> list[list[Any]]:
        # einsum without BLAS sums in the same order for any batch size, so a batch gives
        # bit-for-bit the rows of one-at-a-time updates.
        if not xs:
            return []
        assert self._mean is not None
        assert self._dirs is not None
        c = np.asarray(xs, dtype=np.float64) - self._mean
        dist = np.sqrt(np.einsum("ij,ij->i", c, c))
        proj = np.einsum("ij,jk->ik", c, self._dirs)
        out: list[list[Any]] = np.column_stack((dist, proj)).tolist()
        return out

    def _distance(self, x: Sequence[float]) -> float:
        """The distance of ``x`` to the reference mean, the same float as its row's
        (``_rows``: the same einsum over a batch of one). Up to 8,192 numbers: beyond
        numpy's einsum buffer a batch may sum in another order (the event contract allows
        4,096)."""
        assert self._mean is not None
        c = np.asarray([x], dtype=np.float64) - self._mean
        return float(np.sqrt(np.einsum("ij,ij->i", c, c))[0])

    def _fit(self, ref: list[list[Any]]) -> JsonState:
        return super()._fit([r for r in ref if r])  # the first half learned the mean

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        base = {"arl0": 500.0, "reference_size": 200, "window": 50, "stride": 10}
        return [base, base | {"designs": (1.0, 2.0, 4.0)}]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        emb = rng.standard_normal((n, 16))
        emb[n // 2 :, :4] += 0.8
        return [list(map(float, e)) for e in emb]


class AlibiOnlineDrift(Detector[Sequence[float]]):
    """Optional backend: alibi-detect's CVMDriftOnline (numeric) or FETDriftOnline (binary).

    Needs the ``alibi`` extra (alibi-detect >= 0.12, Business Source License 1.1: production
    use needs a commercial licence from Seldon); imported lazily so the default install
    does not need it. alibi-detect calibrates its thresholds to ``ert`` (expected run time)
    by simulation, which matches our ``arl0``. The first ``reference_size`` inputs form the
    reference. State: the reference and the last ``max(window_sizes)`` inputs; restoring
    rebuilds the alibi detector and replays them (its statistic depends only on them).
    """

    kind: ClassVar[SignalKind] = SignalKind.INPUT_DRIFT

    def __init__(
        self,
        backend: str = "cvm",
        arl0: float = DEFAULT_ARL0,
        reference_size: int = 1000,
        window_sizes: tuple[int, ...] = (50, 200),
        n_bootstraps: int = 10000,
    ) -> None:
        self.backend = backend
        self.arl0 = arl0
        self.reference_size = reference_size
        self.window_sizes = window_sizes
        self.n_bootstraps = n_bootstraps
        if backend not in ("cvm", "fet"):
            raise ValueError("backend must be 'cvm' or 'fet'")
        self._module = _import_alibi()
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._ref: list[list[float]] = []
        self._recent: list[list[float]] = []
        self._impl: Any = None
        self._stat = 0.0
        self._thr = math.inf

    def _build(self) -> None:
        cls = self._module.CVMDriftOnline if self.backend == "cvm" else self._module.FETDriftOnline
        self._impl = cls(
            np.asarray(self._ref),
            ert=self.arl0,
            window_sizes=list(self.window_sizes),
            n_bootstraps=self.n_bootstraps,
            verbose=False,
        )

    @property
    def statistic(self) -> float:
        return self._stat

    @property
    def threshold(self) -> float:
        return self._thr

    def get_state(self) -> JsonState:
        return {"n": self._n, "ref": self._ref, "recent": self._recent}

    def set_state(self, state: JsonState) -> None:
        self._reset()
        self._ref = [list(r) for r in state["ref"]]
        n, recent = state["n"], [list(r) for r in state["recent"]]
        self._n = min(n, self.reference_size)
        if self._n >= self.reference_size:
            self._build()
            for r in recent:
                self.update(r)
            self._n = n

    def update(self, x: Sequence[float]) -> Signal | None:
        n = self._n
        self._n = n + 1
        row = [float(v) for v in x]
        if n < self.reference_size:
            self._ref.append(row)
            if self._n == self.reference_size:
                self._build()
            return None
        self._recent = [*self._recent, row][-max(self.window_sizes) :]
        pred = self._impl.predict(np.asarray(row))["data"]
        self._stat = float(np.max(pred.get("test_stat", 0.0)))
        self._thr = float(np.min(pred.get("threshold", math.inf)))
        if not pred["is_drift"]:
            return None
        self._impl.reset_state()
        return Signal(
            detector=type(self).__name__,
            kind=self.kind,
            statistic=self._stat,
            threshold=self._thr,
            baseline=0.0,
            observed=self._stat,
            effect_size=self._stat,
            direction=Direction.BOTH,
            first_index=max(self.reference_size, n - max(self.window_sizes) + 1),
            last_index=n,
            n_observations=min(max(self.window_sizes), n - self.reference_size + 1),
        )


def _import_alibi() -> Any:
    """Import ``alibi_detect.cd`` or fail with an error naming the extra and its licence."""
    try:
        import alibi_detect.cd as cd
    except ImportError as exc:
        raise ImportError(ALIBI_HINT) from exc
    return cd
