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
  rounded increments (:func:`detectors.arl.lattice_threshold`). With several ``designs``
  each direction runs one such CUSUM per design shift (``shift`` times each multiple),
  in parallel, splitting that direction's share of the budget among them, as the
  adaptive rates do (:class:`detectors.adaptive_rate.AdaptiveBernoulliCusum`): a chart
  for half a standard deviation reacts to a shift of 1.5 at about 0.55 of the optimal
  speed, a chart for 1 or 2 at about 0.9.
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
        if (
            not self.designs
            or self.designs[0] != 1.0
            or any(b <= a for a, b in zip(self.designs, self.designs[1:], strict=False))
        ):
            raise ValueError(f"designs must ascend from 1.0, got {designs}")
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
        m = len(self.designs)
        self._kq = [0] * m  # reference value k of each design, in grid units
        # Per direction (up, down) and design: thresholds in grid units (empty while
        # collecting the reference), statistics, change-point estimates, sums since them.
        self._h: list[list[int]] = []
        self._s = [[0] * m, [0] * m]
        self._start = [[0] * m, [0] * m]
        self._sum = [[0.0] * m, [0.0] * m]
        # Episodes (see ``excess``): shadow CUSUMs of the smallest design per direction
        # that do not restart at an alarm and are capped at its threshold; [stat, start,
        # sum, alarmed by any design's CUSUM].
        self._ep_up: list[Any] = [0, 0, 0.0, False]
        self._ep_down: list[Any] = [0, 0, 0.0, False]
        # The smallest design's rounded reference increments per direction ([offset,
        # pmf...], up then down), kept so a new ARL0 re-derives the thresholds without the
        # reference window; a larger design's increments are the same, offset by its k.
        self._pmf: list[list[float]] = []

    _KEYS: ClassVar[tuple[str, ...]] = ("n", "mu", "sigma")
    _PER_DESIGN: ClassVar[tuple[str, ...]] = ("h", "s", "start", "sum")

    def get_state(self) -> JsonState:
        state = {key: getattr(self, "_" + key) for key in self._KEYS}
        for key in self._PER_DESIGN:
            state[key] = [list(side) for side in getattr(self, "_" + key)]
        state["kq"] = list(self._kq)
        state["ep_up"], state["ep_down"] = list(self._ep_up), list(self._ep_down)
        state["ref"] = list(self._ref)
        state["dist"] = self._dist.get_state()
        state["pmf"] = [list(p) for p in self._pmf]
        return state

    def set_state(self, state: JsonState) -> None:
        if "h_up" in state:  # saved before designs: one design, scalars per direction
            h = [[state["h_up"]], [state["h_down"]]] if state["h_up"] else []
            state = {
                **state,
                "kq": [state["kq"]],
                "h": h,
                **{
                    key: [[state[f"{key}_up"]], [state[f"{key}_down"]]]
                    for key in ("s", "start", "sum")
                },
            }
        if len(state["kq"]) != len(self.designs):
            raise ValueError(
                f"state has {len(state['kq'])} design(s), the detector {len(self.designs)}"
            )
        for key in self._KEYS:
            setattr(self, "_" + key, state[key])
        for key in self._PER_DESIGN:
            setattr(self, "_" + key, [list(side) for side in state[key]])
        self._kq = list(state["kq"])
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
        if self._h and len(self._pmf) == 2:
            self._h = [
                [self._solve(side, j, max(1, h)) for j, h in enumerate(hs)]
                for side, hs in enumerate(self._h)
            ]

    def _solve(self, side: int, design: int, guess: int) -> int:
        """Threshold of one direction's CUSUM for one design, at that design's ARL0."""
        stored = self._pmf[side]
        lo = int(stored[0]) + self._kq[0] - self._kq[design]
        pmf = np.asarray(stored[1:], dtype=np.float64)
        return lattice_threshold(pmf, lo, self.arl0 * _N_TESTS * len(self.designs), guess)

    @property
    def learning(self) -> bool:
        return self._n < self.reference_size

    @property
    def statistic(self) -> float:
        """Largest of the statistics, each divided by its threshold (alarm at 1)."""
        if not self._h:
            return 0.0
        mean = max(
            s / h
            for ss, hs in zip(self._s, self._h, strict=True)
            for s, h in zip(ss, hs, strict=True)
        )
        return max(mean, self._dist.statistic / self._dist.threshold)

    @property
    def threshold(self) -> float:
        return 1.0

    def _calibrate(self) -> None:
        ref = np.asarray(self._ref)
        self._mu = float(ref.mean())
        self._sigma = max(float(ref.std(ddof=1)), 1e-9)
        self._kq = [max(1, round(m * self.shift / 2 / self._res)) for m in self.designs]
        z = (ref - self._mu) / self._sigma
        # The mean's upper confidence bound towards each alarm, in standard deviations:
        # rounding z + margin onto the grid moves the increments' mean by the margin.
        margin = NormalDist().inv_cdf(self.baseline_confidence) / math.sqrt(ref.size)
        self._pmf = []
        for sign in (1, -1):
            inc = np.rint((sign * z + margin) / self._res).astype(np.int64) - self._kq[0]
            lo = int(inc.min())
            pmf = np.bincount(inc - lo).astype(np.float64) / inc.size
            self._pmf.append([float(lo), *pmf.tolist()])
        self._h = [
            [self._solve(side, j, self._guess(j)) for j in range(len(self.designs))]
            for side in (0, 1)
        ]
        self._ref = []
        self._start = [[self._n] * len(self.designs) for _ in (0, 1)]
        self._ep_up = [0, self._n, 0.0, False]
        self._ep_down = [0, self._n, 0.0, False]

    def _guess(self, design: int) -> int:
        """Wald/Siegmund-style start for a threshold search: h ~ ln(2 k^2 arl0) / (2 k)."""
        k = self._kq[design] * self._res
        arl0 = self.arl0 * _N_TESTS * len(self.designs)
        return max(1, int(math.log(2 * k * k * arl0 + 1) / (2 * k) / self._res))

    def update(self, x: float) -> Signal | None:
        n = self._n
        self._n = n + 1
        dist_signal = self._dist.update({"confidence": x})
        if not self._h:
            self._ref.append(float(x))
            if self._n == self.reference_size:
                self._calibrate()
            return None
        zq = round((x - self._mu) / self._sigma / self._res)
        kq0, h = self._kq[0], self._h
        self._episode(self._ep_up, zq - kq0, h[0][0], x, n)
        self._episode(self._ep_down, -zq - kq0, h[1][0], x, n)
        signals: list[Signal] = []
        for side, (z, ep, direction) in enumerate(
            ((zq, self._ep_up, Direction.UP), (-zq, self._ep_down, Direction.DOWN))
        ):
            fired = self._step(side, z, x, n, direction)
            if fired:
                ep[3] = True
                signals.append(max(fired, key=lambda sig: sig.statistic / sig.threshold))
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

    def _step(self, side: int, z: int, x: float, n: int, direction: Direction) -> list[Signal]:
        """One observation into one direction's CUSUMs (``z``: the rounded standardised
        score, signed towards that direction's alarm); the signals of those that fired,
        each restarted (the designs do not reset each other)."""
        ss, hs, starts, sums = self._s[side], self._h[side], self._start[side], self._sum[side]
        fired: list[Signal] = []
        for j, kq in enumerate(self._kq):
            s = ss[j] + z - kq
            if s <= 0:
                ss[j], starts[j], sums[j] = 0, n + 1, 0.0
                continue
            ss[j], sums[j] = s, sums[j] + x
            if s >= hs[j]:
                fired.append(self._mean_signal(n, side, j, direction))
                ss[j], starts[j], sums[j] = 0, n + 1, 0.0
        return fired

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
        if not self._h:
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

    def _mean_signal(self, n: int, side: int, design: int, direction: Direction) -> Signal:
        start = self._start[side][design]
        m = n - start + 1
        observed = self._sum[side][design] / m
        return Signal(
            detector=type(self).__name__,
            kind=self.kind,
            statistic=self._s[side][design] * self._res,
            threshold=self._h[side][design] * self._res,
            baseline=self._mu,
            observed=observed,
            effect_size=(observed - self._mu) / self._sigma,
            direction=direction,
            first_index=start,
            last_index=n,
            n_observations=m,
            feature="mean",
            details={
                "sigma": self._sigma,
                "arl0": float(self.arl0),
                "design_sd": self.designs[design] * self.shift,
            },
        )

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        base = {"arl0": 500.0, "reference_size": 200, "window": 50, "stride": 10}
        return [base, base | {"designs": (1.0, 2.0, 4.0)}]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        a = np.where(np.arange(n) < n // 2, 8.0, 4.0)
        return [float(v) for v in rng.beta(a, 2.0)]
