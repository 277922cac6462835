"""Names for detectors, so configuration can refer to them and tests can find them all.

``REGISTRY`` maps a stable snake_case name to the detector class; ``create(name, **params)``
builds one. The conformance suite runs over every entry, so a detector added here is
tested without further work. Optional backends (alibi-detect) are listed in ``OPTIONAL``
and only importable with their extra.
"""

from __future__ import annotations

from typing import Any

from detectors.adaptive_rate import (
    AdaptiveBernoulliCusum,
    AdaptiveDownvoteSpike,
    AdaptivePromptInjectionRate,
)
from detectors.base import Detector
from detectors.confidence import ConfidenceShift
from detectors.coverage import (
    EvaluationFailRate,
    FinishReasonRate,
    GuardrailBlockRate,
    HallucinationRate,
    HarmRate,
)
from detectors.drift import (
    AlibiOnlineDrift,
    CategoricalDrift,
    EmbeddingDrift,
    LabelMixDrift,
    NumericDrift,
)
from detectors.moderation import CriticalEventDetector, ToxicityRate
from detectors.rate import BernoulliCusum, DownvoteSpike, PromptInjectionRate
from detectors.score_shift import EvaluationScoreShift, GroundednessShift, LatencyShift, TokenShift

__all__ = ["OPTIONAL", "REGISTRY", "create"]

REGISTRY: dict[str, type[Detector[Any]]] = {
    "bernoulli_cusum": BernoulliCusum,
    "adaptive_bernoulli_cusum": AdaptiveBernoulliCusum,
    "adaptive_downvote_spike": AdaptiveDownvoteSpike,
    "adaptive_prompt_injection_rate": AdaptivePromptInjectionRate,
    "downvote_spike": DownvoteSpike,
    "prompt_injection_rate": PromptInjectionRate,
    "toxicity_rate": ToxicityRate,
    "critical_event": CriticalEventDetector,
    "confidence_shift": ConfidenceShift,
    "numeric_drift": NumericDrift,
    "categorical_drift": CategoricalDrift,
    "label_mix_drift": LabelMixDrift,
    "embedding_drift": EmbeddingDrift,
    "harm_rate": HarmRate,
    "hallucination_rate": HallucinationRate,
    "groundedness_shift": GroundednessShift,
    "evaluation_score_shift": EvaluationScoreShift,
    "evaluation_fail_rate": EvaluationFailRate,
    "guardrail_block_rate": GuardrailBlockRate,
    "finish_reason_rate": FinishReasonRate,
    "latency_shift": LatencyShift,
    "token_shift": TokenShift,
}

OPTIONAL: dict[str, type[Detector[Any]]] = {
    "alibi_online_drift": AlibiOnlineDrift,
}


def create(name: str, **params: Any) -> Detector[Any]:
    """Build the detector registered under ``name`` with the given hyper-parameters."""
    try:
        cls = REGISTRY.get(name) or OPTIONAL[name]
    except KeyError:
        known = ", ".join(sorted([*REGISTRY, *OPTIONAL]))
        raise KeyError(f"unknown detector {name!r}; known: {known}") from None
    return cls(**params)
