"""A signal's baseline and observed value are printed with their unit, by detector."""

from __future__ import annotations

import pytest

from alerting.model import values_text
from detectors.base import Direction, Quantity, Signal, SignalKind
from detectors.registry import REGISTRY


def _signal(detector: str, kind: SignalKind, baseline: float, observed: float) -> Signal:
    return Signal(
        detector=detector,
        kind=kind,
        statistic=10.485,
        threshold=10.0,
        baseline=baseline,
        observed=observed,
        effect_size=0.3,
        direction=Direction.UP,
        first_index=0,
        last_index=9,
        n_observations=10,
    )


@pytest.mark.parametrize(
    ("detector", "kind", "baseline", "observed", "text"),
    [
        ("HallucinationRate", SignalKind.HALLUCINATION_RATE, 0.0073, 0.0599, "rate 0.73% -> 5.99%"),
        ("HarmRate", SignalKind.TOXICITY_RATE, 0.0046, 0.02, "rate 0.46% -> 2.00%"),
        ("AdaptiveDownvoteSpike", SignalKind.DOWNVOTE_RATE, 0.05, 0.2, "rate 5.00% -> 20.00%"),
        ("ConfidenceShift", SignalKind.CONFIDENCE_SHIFT, 0.81, 0.66, "mean 0.810 -> 0.660"),
        (
            "GroundednessShift",
            SignalKind.HALLUCINATION_RATE,
            -1.65e-06,
            -0.6766,
            "mean normal score -0.00 -> -0.68 sd of the reference",
        ),
        (
            "TrafficSilence",
            SignalKind.TRAFFIC_SILENCE,
            28.73,
            0.0,
            "28.7 events/min -> none for 10.5 min",
        ),
        ("NumericDrift", SignalKind.INPUT_DRIFT, 0.1, 0.4, "baseline 0.1 -> observed 0.4"),
    ],
)
def test_values_are_printed_in_the_detectors_unit(
    detector: str, kind: SignalKind, baseline: float, observed: float, text: str
) -> None:
    assert values_text(_signal(detector, kind, baseline, observed)) == text


def test_every_rate_detector_says_so() -> None:
    """Rates are the detectors whose kind names a rate and that count flags (not the
    score charts of the same kind, nor the single-event toxicity score)."""
    rates = {name for name, cls in REGISTRY.items() if cls.quantity is Quantity.RATE}
    assert rates == {
        "bernoulli_cusum",
        "adaptive_bernoulli_cusum",
        "adaptive_downvote_spike",
        "adaptive_prompt_injection_rate",
        "downvote_spike",
        "prompt_injection_rate",
        "harm_rate",
        "hallucination_rate",
        "evaluation_fail_rate",
        "guardrail_block_rate",
        "finish_reason_rate",
    }
    shifts = {name for name, cls in REGISTRY.items() if cls.quantity is Quantity.NORMAL_SCORE}
    assert shifts == {
        "groundedness_shift",
        "evaluation_score_shift",
        "latency_shift",
        "token_shift",
    }
