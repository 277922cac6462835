"""The one definition of what an event counts as, asked by worker, replay and investigation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.contract.events import Feedback
from streams.detection_settings import DetectionSettings
from streams.pipeline.rules import ANY_TOXIC, is_critical, is_downvote, is_injected, is_toxic

T0 = datetime(2025, 1, 6, tzinfo=UTC)
S = DetectionSettings()


@pytest.mark.parametrize(
    ("vote", "rating", "down"),
    [
        ("down", None, True),
        ("up", None, False),
        (None, 1, True),
        (None, S.downvote_max_rating, True),
        (None, S.downvote_max_rating + 1, False),
        ("up", 1, False),  # an explicit vote wins over the rating
        ("down", 5, True),
    ],
)
def test_downvote_rule(vote: str | None, rating: int | None, down: bool) -> None:
    fb = Feedback.model_validate(
        {"request_id": "r", "timestamp": T0, "vote": vote, "rating": rating}
    )
    assert is_downvote(fb, S) is down


def test_score_rules_use_the_configured_cutoffs() -> None:
    assert is_toxic({"hate": S.toxicity_cutoff}, S, "hate")
    assert not is_toxic({"hate": S.toxicity_cutoff - 0.01}, S, "hate")
    assert is_toxic({"violence": 0.9}, S, ANY_TOXIC)
    assert is_toxic({"a_new_category": 0.9}, S, ANY_TOXIC)  # every category is watched
    excluded = DetectionSettings(toxicity_excluded=("profanity",))
    assert not is_toxic({"profanity": 0.9}, excluded, ANY_TOXIC)
    assert is_critical({"self_harm": S.critical_cutoff}, S)
    assert not is_critical({"self_harm": S.critical_cutoff - 0.01}, S)
    assert is_injected(S.prompt_injection_cutoff, S)
    assert not is_injected(None, S)
