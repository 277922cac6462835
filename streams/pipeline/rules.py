"""What an event counts as: the one definition of toxic, critical, injected and downvoted.

The worker's detectors, replay, investigation (which events an incident flagged) and the
metrics all ask these functions, so a rule cannot drift apart between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from streams.contract.events import Feedback
from streams.settings import DetectionSettings

ANY_TOXIC: Final = "any"
"""Pseudo-category: the output is toxic in any category. A spike spread over categories
is invisible per category long before it is obvious pooled, so both are watched."""


def top_toxicity(scores: Mapping[str, float], settings: DetectionSettings) -> float:
    """The highest moderation score over the watched toxicity categories."""
    return max((scores.get(c, 0.0) for c in settings.toxicity_categories), default=0.0)


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
