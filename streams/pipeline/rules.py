"""What an event counts as: the one definition of toxic, critical, injected, downvoted,
hallucinated, failed (evaluations), blocked (guardrails) and flagged finish reasons.

The worker's detectors, replay, investigation (which events an incident flagged) and the
metrics all ask these functions, so a rule cannot drift apart between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from streams.contract.events import Evaluation, Feedback, InferenceOutput
from streams.detection_settings import DetectionSettings

ANY_TOXIC: Final = "any"
"""Pseudo-category: the output is toxic in any category. A spike spread over categories
is invisible per category long before it is obvious pooled, so both are watched."""


def is_watched_category(category: str, settings: DetectionSettings) -> bool:
    """Every moderation category a producer sends is rate-watched, unless excluded."""
    return category not in settings.toxicity_excluded


def top_toxicity(scores: Mapping[str, float], settings: DetectionSettings) -> float:
    """The highest moderation score over the watched categories."""
    return max(
        (v for c, v in scores.items() if is_watched_category(c, settings)),
        default=0.0,
    )


def harm_flags(scores: Mapping[str, float], settings: DetectionSettings) -> dict[str, bool]:
    """Per watched moderation category: does the output count as harmful in it?"""
    cut = settings.toxicity_cutoff
    return {c: v >= cut for c, v in scores.items() if is_watched_category(c, settings)}


def is_toxic(scores: Mapping[str, float], settings: DetectionSettings, category: str) -> bool:
    """Whether an output counts as toxic in ``category`` (or in any, for :data:`ANY_TOXIC`)."""
    if category == ANY_TOXIC:
        return top_toxicity(scores, settings) >= settings.toxicity_cutoff
    return scores.get(category, 0.0) >= settings.toxicity_cutoff


def is_critical(scores: Mapping[str, float], settings: DetectionSettings) -> bool:
    """A single output that pages at once (self-harm, data exposure at a near-certain score)."""
    return any(scores.get(c, 0.0) >= settings.critical_cutoff for c in settings.critical_categories)


def is_injected(prompt_injection: float | None, settings: DetectionSettings) -> bool:
    """Whether an output's prompt-injection score flags it."""
    return prompt_injection is not None and prompt_injection >= settings.prompt_injection_cutoff


def is_downvote(feedback: Feedback, settings: DetectionSettings) -> bool:
    """A thumbs-down; without a vote, a rating at or below ``downvote_max_rating``.

    An explicit vote wins over a rating: ``vote="up", rating=1`` is not a downvote.
    """
    if feedback.vote is not None:
        return feedback.vote == "down"
    return feedback.rating is not None and feedback.rating <= settings.downvote_max_rating


def is_hallucination(groundedness: float | None, settings: DetectionSettings) -> bool:
    """An output whose groundedness is below ``groundedness_cutoff`` (unsupported by its
    sources). Outputs without a groundedness score are not judged."""
    return groundedness is not None and groundedness < settings.groundedness_cutoff


def evaluation_metric(evaluation: Evaluation) -> str:
    """The identity of what an evaluation measures: ``<evaluator>/<metric name>``."""
    return f"{evaluation.evaluator}/{evaluation.name}"


BLOCK_LABELS: Final = frozenset({"block", "blocked", "deny", "denied", "fail", "failed", "reject"})
"""``score_label`` values that mean a guardrail blocked, when ``passed`` is not set."""


def is_guardrail_block(evaluation: Evaluation) -> bool | None:
    """Whether a guardrail blocked the output: ``passed = false``; without ``passed``, a
    ``score_label`` in :data:`BLOCK_LABELS`. ``None`` for a guardrail that says neither
    (and for non-guardrail evaluations)."""
    if evaluation.kind != "guardrail":
        return None
    if evaluation.passed is not None:
        return not evaluation.passed
    if evaluation.score_label is not None:
        return evaluation.score_label.lower() in BLOCK_LABELS
    return None


def is_evaluation_fail(evaluation: Evaluation) -> bool | None:
    """Whether an evaluator's verdict is a fail (``passed = false``); ``None`` when the
    evaluator gives no verdict (and for guardrails, judged by :func:`is_guardrail_block`)."""
    if evaluation.kind != "evaluation" or evaluation.passed is None:
        return None
    return not evaluation.passed


def finish_flags(output: InferenceOutput, settings: DetectionSettings) -> dict[str, bool]:
    """Per watched finish reason: did this output finish for it? Empty when the producer
    reports no finish reasons (then the output says nothing about their rates)."""
    if not output.finish_reasons:
        return {}
    reasons = set(output.finish_reasons)
    return {flag: flag in reasons for flag in settings.finish_reason_flags}
