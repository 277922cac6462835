"""Confidence deviation: shifts of the mean and of the distribution of confidence scores.

A drop in confidence is the usual failure (new inputs the model does not know); an
unexplained rise matters too (a degenerate model that is sure of everything). Three
tests share the false-alarm budget equally (false-alarm rates add, so each runs at
``3 * arl0`` and the detector keeps ARL0 >= ``arl0``):

* mean up / mean down: one-sided CUSUMs on the standardised score ``z = (x - mu) / sigma``
  with reference value ``shift / 2``, optimal for a mean shift of ``shift`` standard
  deviations. Scores are bounded and skewed, so no Gaussian formula is used: each
  increment is rounded to a grid of ``resolution`` standard deviations and the threshold
  is the exact Markov-chain value for the empirical reference distribution of the
  rounded increments (:func:`detectors.arl.lattice_threshold`).
* distribution: a windowed two-sample KS test against the reference, calibrated as the
  drift detectors are (``alpha = stride / (3 * arl0)``, see :mod:`detectors.windowed`); it
  catches changes of shape (bimodality, spread) that leave the mean alone.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from detectors.arl import lattice_threshold
from detectors.base import DEFAULT_ARL0, Detector, Direction, Excess, JsonState, Signal, SignalKind
from detectors.drift import NumericDrift
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
    reference_size
        The first ``reference_size`` scores form the reference (no alarms meanwhile).
    window, stride
        Window length and test spacing of the distribution test (stride default
        ``window // 4``).
    baseline_confidence
        The reference mean is an estimate (standard error ``1 / sqrt(reference_size)``
        reference standard deviations), and a chart designed on a mean that came out on
        the wrong side alarms far sooner than its ARL0 (the estimated-parameter effect).
        Each direction's threshold is therefore solved as if the mean were that many
        standard errors towards its alarm: the one-sided bound at this confidence, as the
        learned-rate charts do (:data:`detectors.rate.BASELINE_CONFIDENCE`).
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
        self.reference_size = reference_size
        self.window = window
        self.stride = stride
        self.resolution = resolution
        if shift <= 0 or not 0 < self._res <= shift / 2:
            raise ValueError("need shift > 0 and 0 < resolution <= shift / 2")
        self._reset()

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
        self._mu = 0.0
        self._sigma = 1.0
        self._kq = 0  # reference value k in grid units
        self._h_up = 0  # thresholds in grid units; 0 while collecting the reference
        self._h_down = 0
        self._s_up = 0
        self._s_down = 0
        self._start_up = 0
        self._start_down = 0
        self._sum_up = 0.0
        self._sum_down = 0.0
        # Episodes (see ``excess``): shadow CUSUMs per direction that do not restart at an
        # alarm and are capped at the threshold; [stat, start, sum, alarmed by the CUSUM].
        self._ep_up: list[Any] = [0, 0, 0.0, False]
        self._ep_down: list[Any] = [0, 0, 0.0, False]
        # The rounded reference increments per direction ([offset, pmf...], up then down),
        # kept so a new ARL0 re-derives the thresholds without the reference window.
        self._pmf: list[list[float]] = []

    _KEYS: ClassVar[tuple[str, ...]] = (
        "n",
        "ref",
        "mu",
        "sigma",
        "kq",
        "h_up",
        "h_down",
        "s_up",
        "s_down",
        "start_up",
        "start_down",
        "sum_up",
        "sum_down",
    )

    def get_state(self) -> JsonState:
        state = {key: getattr(self, "_" + key) for key in self._KEYS}
        state["ep_up"], state["ep_down"] = list(self._ep_up), list(self._ep_down)
        state["ref"] = list(self._ref)
        state["dist"] = self._dist.get_state()
        state["pmf"] = [list(p) for p in self._pmf]
        return state

    def set_state(self, state: JsonState) -> None:
        for key in self._KEYS:
            setattr(self, "_" + key, state[key])
        self._ref = list(state["ref"])
        self._dist.set_state(state["dist"])
        self._pmf = [list(p) for p in state.get("pmf", [])]  # absent: saved before retargets
        # State saved before episodes existed: they start now.
        self._ep_up = list(state.get("ep_up", [0, self._n, 0.0, False]))
        self._ep_down = list(state.get("ep_down", [0, self._n, 0.0, False]))

    def set_arl0(self, arl0: float) -> None:
        """Retarget to a new ARL0 keeping the evidence (statistics and reference): the
        mean thresholds are re-solved from the stored reference increments, the
        distribution test runs at the new alpha."""
        self.arl0 = arl0
        self._dist.set_arl0(arl0 * _N_TESTS)
        if self._h_up and len(self._pmf) == 2:
            hs = (self._h_up, self._h_down)
            self._h_up, self._h_down = (
                self._solve(p, max(1, h)) for p, h in zip(self._pmf, hs, strict=True)
            )

    def _solve(self, stored: list[float], guess: int) -> int:
        lo, pmf = int(stored[0]), np.asarray(stored[1:], dtype=np.float64)
        return lattice_threshold(pmf, lo, self.arl0 * _N_TESTS, guess)

    @property
    def learning(self) -> bool:
        return self._n < self.reference_size

    @property
    def statistic(self) -> float:
        """Largest of the three statistics, each divided by its threshold (alarm at 1)."""
        if not self._h_up:
            return 0.0
        return max(
            self._s_up / self._h_up,
            self._s_down / self._h_down,
            self._dist.statistic / self._dist.threshold,
        )

    @property
    def threshold(self) -> float:
        return 1.0

    def _calibrate(self) -> None:
        ref = np.asarray(self._ref)
        self._mu = float(ref.mean())
        self._sigma = max(float(ref.std(ddof=1)), 1e-9)
        self._kq = max(1, round(self.shift / 2 / self._res))
        z = (ref - self._mu) / self._sigma
        # The mean's upper confidence bound towards each alarm, in standard deviations:
        # rounding z + margin onto the grid moves the increments' mean by the margin.
        margin = NormalDist().inv_cdf(self.baseline_confidence) / math.sqrt(ref.size)
        # Wald/Siegmund-style start for the search: h ~ ln(2 k^2 arl0) / (2 k).
        k = self._kq * self._res
        guess = max(1, int(math.log(2 * k * k * self.arl0 * _N_TESTS + 1) / (2 * k) / self._res))
        self._pmf = []
        for sign in (1, -1):
            inc = np.rint((sign * z + margin) / self._res).astype(np.int64) - self._kq
            lo = int(inc.min())
            pmf = np.bincount(inc - lo).astype(np.float64) / inc.size
            self._pmf.append([float(lo), *pmf.tolist()])
            h = lattice_threshold(pmf, lo, self.arl0 * _N_TESTS, guess)
            if sign == 1:
                self._h_up = h
            else:
                self._h_down = h
        self._ref = []
        self._start_up = self._start_down = self._n
        self._ep_up = [0, self._n, 0.0, False]
        self._ep_down = [0, self._n, 0.0, False]

    def update(self, x: float) -> Signal | None:
        n = self._n
        self._n = n + 1
        dist_signal = self._dist.update({"confidence": x})
        if not self._h_up:
            self._ref.append(float(x))
            if self._n == self.reference_size:
                self._calibrate()
            return None
        zq = round((x - self._mu) / self._sigma / self._res)
        self._episode(self._ep_up, zq - self._kq, self._h_up, x, n)
        self._episode(self._ep_down, -zq - self._kq, self._h_down, x, n)
        signals: list[Signal] = []
        s = self._s_up + zq - self._kq
        if s <= 0:
            self._s_up, self._start_up, self._sum_up = 0, n + 1, 0.0
        else:
            self._s_up, self._sum_up = s, self._sum_up + x
            if s >= self._h_up:
                signals.append(self._mean_signal(n, s, self._h_up, self._start_up, Direction.UP))
                self._ep_up[3] = True
                self._s_up, self._start_up, self._sum_up = 0, n + 1, 0.0
        s = self._s_down - zq - self._kq
        if s <= 0:
            self._s_down, self._start_down, self._sum_down = 0, n + 1, 0.0
        else:
            self._s_down, self._sum_down = s, self._sum_down + x
            if s >= self._h_down:
                signals.append(
                    self._mean_signal(n, s, self._h_down, self._start_down, Direction.DOWN)
                )
                self._ep_down[3] = True
                self._s_down, self._start_down, self._sum_down = 0, n + 1, 0.0
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

    @staticmethod
    def _episode(ep: list[Any], inc: int, h: int, x: float, n: int) -> None:
        e = ep[0] + inc
        if e <= 0:
            ep[:] = [0, n + 1, 0.0, False]
            return
        ep[0] = min(e, h)
        ep[2] += x

    def excess(
        self, feature: str | None = None, direction: Direction = Direction.DOWN
    ) -> Excess | None:
        """The mean shift of the current episode in ``direction`` (UP, else down: a change
        of the distribution's shape is read as its usual failure, a drop): ``excess`` =
        n x shift of the mean (in score units, positive in that direction), ``surprise`` =
        n x d^2 / 2 with d the shift in reference standard deviations
        (Gaussian log-likelihood ratio)."""
        if not self._h_up:
            return None
        up = direction is Direction.UP
        ep = self._ep_up if up else self._ep_down
        m = self._n - int(ep[1])
        observed = float(ep[2]) / m if m else self._mu
        shift = (observed - self._mu) if up else (self._mu - observed)
        d = shift / self._sigma
        return Excess(
            n=m,
            baseline=self._mu,
            observed=observed,
            excess=m * shift,
            surprise=m * d * d / 2 if shift > 0 else 0.0,
            alarmed=bool(ep[3]),
        )

    def _mean_signal(self, n: int, s: int, h: int, start: int, direction: Direction) -> Signal:
        m = n - start + 1
        total = self._sum_up if direction is Direction.UP else self._sum_down
        observed = total / m
        return Signal(
            detector=type(self).__name__,
            kind=self.kind,
            statistic=s * self._res,
            threshold=h * self._res,
            baseline=self._mu,
            observed=observed,
            effect_size=(observed - self._mu) / self._sigma,
            direction=direction,
            first_index=start,
            last_index=n,
            n_observations=m,
            feature="mean",
            details={"sigma": self._sigma, "arl0": float(self.arl0)},
        )

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        return [{"arl0": 500.0, "reference_size": 200, "window": 50, "stride": 10}]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        a = np.where(np.arange(n) < n // 2, 8.0, 4.0)
        return [float(v) for v in rng.beta(a, 2.0)]
