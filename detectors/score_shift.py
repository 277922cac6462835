"""Shifts of scores beyond model confidence: groundedness, LLM-judge scores, latency, tokens.

Scores come on any scale and in any shape (a 1-5 judge, a 0-1 groundedness score, latency
in milliseconds), so each detector here charts *normal scores* of the raw value against
its reference sample and reuses the two-sided mean CUSUM plus windowed KS test of
:class:`detectors.confidence.ConfidenceShift`. Both parts are then scale-free: the mean
CUSUM works on scores standardised by the reference and is calibrated on their empirical
distribution, and the KS test is rank-based, so a judge scoring 1-5 and one scoring 0-1
are watched alike. The rate detectors of the same failure modes (harm categories, finish
reasons, evaluator fail and guardrail block rates) are in :mod:`detectors.coverage`.

Detectors that watch one (evaluator, metric) carry it as ``metric``; their signals name it
in ``feature`` so that the incident identity includes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from detectors.base import Direction, Frozen, JsonState, Quantity, Signal, SignalKind, frozen
from detectors.confidence import ConfidenceShift
from detectors.mean_chart import normal_score, normal_scores

__all__ = ["EvaluationScoreShift", "GroundednessShift", "LatencyShift", "TokenShift"]


class _ScoreShift(ConfidenceShift):
    """:class:`ConfidenceShift` on another score, on *normal scores*, named by ``metric``.

    Scores of evaluators and guardrails come on any scale and in any shape (a 1-5 judge,
    a bimodal guardrail score with 3 % of its mass five standard deviations out). The first
    ``reference_size`` values are buffered; then each value ``x`` is charted as
    ``Phi^-1(F(x))``, ``F`` the reference's mid-rank empirical distribution (clipped to
    ``[1/2n, 1 - 1/2n]``). The reference is then standard normal whatever the scale and
    shape, so the chart is scale-free (invariant to any increasing rescaling) and its exact
    lattice calibration well conditioned (on raw bimodal scores it is not: the banded
    solve breaks down). The KS test is rank-based and unchanged by the transform.

    ``_transform`` maps the raw value first (log for latencies and counts, whose changes
    are multiplicative); ``_keep`` drops signals of a direction that is no failure.
    """

    quantity: ClassVar[Quantity] = Quantity.NORMAL_SCORE

    def __init__(self, metric: str = "", **params: Any) -> None:
        """``params``: those of :class:`ConfidenceShift` (arl0, shift, reference_size, ...)."""
        self.metric = metric
        super().__init__(**params)

    def _transform(self, x: float) -> float:
        return float(x)

    def _keep(self, signal: Signal) -> bool:
        return True

    def _reset(self) -> None:
        super()._reset()
        self._sorted: Frozen = Frozen()

    def get_state(self) -> JsonState:
        return {**super().get_state(), "sorted": self._sorted}

    def set_state(self, state: JsonState) -> None:
        if state.get("buf"):
            # Saved before priors, while the reference filled: the values were buffered
            # here, and the base class had seen none of them.
            state = {**state, "ref": list(state["buf"]), "n": state["n"] + len(state["buf"])}
        super().set_state(state)
        self._sorted = frozen(state["sorted"])

    def _keep_reference(self, values: list[float]) -> None:
        self._sorted = frozen(values)

    def _reference(self) -> Sequence[float]:
        return self._sorted

    def _value(self, x: float) -> float:
        return self._transform(x)

    def _charted(self, value: float) -> float:
        return normal_score(self._sorted, value)

    def _sorted_reference(self) -> Sequence[float]:
        return self._sorted

    def _charted_many(self, values: list[float]) -> list[float]:
        scores = normal_scores(np.asarray(self._sorted, dtype=np.float64), np.asarray(values))
        out: list[float] = scores.tolist()
        return out

    def _finish(self, signal: Signal | None) -> Signal | None:
        if signal is None or not self._keep(signal):
            return None
        test = signal.feature or "mean"
        return signal.model_copy(
            update={
                "feature": self.metric or test,
                "details": {**signal.details, f"test:{test}": 1.0},
            }
        )

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        base = {
            "metric": "judge/score",
            "arl0": 500.0,
            "reference_size": 200,
            "window": 50,
            "stride": 10,
        }
        grown = base | {"reference_size": 100, "reference_growth": 4}
        return [base, base | {"designs": (1.0, 2.0, 4.0)}, grown]


class GroundednessShift(_ScoreShift):
    """A drop (or a change of shape) of the groundedness distribution: hallucinations.

    A rise of groundedness is no failure: mean-up signals are dropped (the budget still
    counts that test, which keeps the calibration of the shared two-sided chart).
    """

    kind: ClassVar[SignalKind] = SignalKind.HALLUCINATION_RATE

    def _keep(self, signal: Signal) -> bool:
        return signal.direction is not Direction.UP


class EvaluationScoreShift(_ScoreShift):
    """Two-sided, scale-free shift of one (evaluator, metric)'s scores (an LLM judge)."""

    kind: ClassVar[SignalKind] = SignalKind.EVALUATION_SCORE


class LatencyShift(_ScoreShift):
    """Shift of log latency (milliseconds): a slow backend or a shorter, degenerate path."""

    kind: ClassVar[SignalKind] = SignalKind.LATENCY_SHIFT

    def _transform(self, x: float) -> float:
        return math.log1p(max(float(x), 0.0))

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        mu = np.where(np.arange(n) < n // 2, 6.0, 6.6)
        return [float(v) for v in rng.lognormal(mu, 0.5)]


class TokenShift(LatencyShift):
    """Shift of log output-token counts: truncated or runaway answers."""

    kind: ClassVar[SignalKind] = SignalKind.TOKEN_SHIFT
