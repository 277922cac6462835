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
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from detectors.base import DEFAULT_ARL0, Detector, Direction, Excess, JsonState, Signal, SignalKind
from detectors.drift import NumericDrift
from detectors.mean_chart import Fired, MeanChart
from detectors.rate import BASELINE_CONFIDENCE

__all__ = ["ConfidenceShift"]

_N_TESTS = 3


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
    ) -> None:
        if not 0.5 <= baseline_confidence < 1.0:
            raise ValueError("baseline_confidence must be in [0.5, 1)")
        self.baseline_confidence = baseline_confidence
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

    def _reset(self) -> None:
        self._dist = NumericDrift(
            features=("confidence",),
            arl0=self.arl0 * _N_TESTS,
            reference_size=self.reference_size,
            window=self.window,
            stride=self.stride,
        )
        self._n = 0
        self._ref: list[float] = []
        self._chart = MeanChart(self.shift, self.designs, self._res, self.baseline_confidence)

    def get_state(self) -> JsonState:
        return {
            "n": self._n,
            "ref": list(self._ref),
            "dist": self._dist.get_state(),
            **self._chart.get_state(),
        }

    def set_state(self, state: JsonState) -> None:
        self._n = state["n"]
        self._ref = list(state["ref"])
        self._dist.set_state(state["dist"])
        self._chart.set_state(_one_design_layout(state) if "h_up" in state else state)

    def set_arl0(self, arl0: float) -> None:
        """Retarget to a new ARL0 keeping the evidence (statistics and reference): the
        mean thresholds are re-solved from the stored reference increments, the
        distribution test runs at the new alpha."""
        self.arl0 = arl0
        self._dist.set_arl0(arl0 * _N_TESTS)
        self._chart.retarget(arl0 * _N_TESTS)

    @property
    def learning(self) -> bool:
        return self._n < self.reference_size

    @property
    def statistic(self) -> float:
        """Largest of the statistics, each divided by its threshold (alarm at 1)."""
        if not self._chart.ready:
            return 0.0
        return max(self._chart.ratio, self._dist.statistic / self._dist.threshold)

    @property
    def threshold(self) -> float:
        return 1.0

    def update(self, x: float) -> Signal | None:
        n = self._n
        self._n = n + 1
        dist_signal = self._dist.update({"confidence": x})
        if not self._chart.ready:
            self._ref.append(float(x))
            if self._n == self.reference_size:
                self._chart.fit(np.asarray(self._ref), self._n, self.arl0 * _N_TESTS)
                self._ref = []
            return None
        signals = [self._mean_signal(n, f) for f in self._chart.update(x, n)]
        if dist_signal is not None:
            signals.append(
                dist_signal.model_copy(
                    update={
                        "detector": type(self).__name__,
                        "kind": self.kind,
                        "feature": "distribution",
                    }
                )
            )
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
        :meth:`MeanChart.excess`."""
        return self._chart.excess(direction, self._n)

    def _mean_signal(self, n: int, fired: Fired) -> Signal:
        name, arl0 = type(self).__name__, float(self.arl0)
        return self._chart.signal(name, self.kind, n, fired, "mean", {"arl0": arl0})

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        base = {"arl0": 500.0, "reference_size": 200, "window": 50, "stride": 10}
        return [base, base | {"designs": (1.0, 2.0, 4.0)}]

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
