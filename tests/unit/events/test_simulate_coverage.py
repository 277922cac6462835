"""The simulator's coverage injections change what they say, in scope and window only."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from streams.devtools.scenario import Scenario, parse_injection
from streams.devtools.simulate import Simulator


def _events(spec: str) -> tuple[list[dict[str, object]], Simulator]:
    inj = parse_injection(spec)
    sim = Simulator(Scenario(seed=4, duration=timedelta(hours=2), injections=[inj]))
    return [json.loads(line) for line in sim.lines()], sim


def _in_window(ev: dict[str, object]) -> bool:
    return "T01:" in str(ev["timestamp"])  # the injections below run 01:00-02:00


def test_harm_spike_raises_its_category_in_scope_only() -> None:
    events, sim = _events("harm_spike:1h:1h:10:model=support-chat,category=sexual")
    assert sim.ground_truth()["injections"][0]["category"] == "sexual"

    def rate(model: str, window: bool) -> float:
        outs = [
            e
            for e in events
            if e["event_type"] == "output"
            and e["gen_ai.request.model"] == model
            and _in_window(e) is window
        ]
        flagged = [e for e in outs if e["moderation"]["sexual"] >= 0.5]  # type: ignore[index]
        return len(flagged) / len(outs)

    assert rate("support-chat", True) > 5 * rate("support-chat", False)
    assert rate("summarizer", True) < 3 * max(rate("summarizer", False), 0.002)
    # Flagged outputs stay below the critical single-event cutoff.
    top = max(e["moderation"]["sexual"] for e in events if e["event_type"] == "output")  # type: ignore[index]
    assert top < 0.97


def test_guardrail_block_spike_and_judge_drop() -> None:
    events, _ = _events("guardrail_block_spike:1h:1h:6:model=support-chat")
    guard = [e for e in events if e.get("kind") == "guardrail"]
    assert guard
    inside = [e for e in guard if _in_window(e) and e["gen_ai.request.model"] == "support-chat"]
    before = [e for e in guard if not _in_window(e)]
    block_in = sum(e["passed"] is False for e in inside) / len(inside)
    block_out = sum(e["passed"] is False for e in before) / len(before)
    assert block_in > 3 * block_out
    events, _ = _events("judge_score_drop:1h:1h:0.2:model=support-chat")
    judge = [
        e
        for e in events
        if e.get("evaluator") == "llm-judge" and e["gen_ai.request.model"] == "support-chat"
    ]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    score_in = mean([e["gen_ai.evaluation.score.value"] for e in judge if _in_window(e)])
    score_out = mean([e["gen_ai.evaluation.score.value"] for e in judge if not _in_window(e)])
    assert score_out - score_in > 0.12


def test_unknown_harm_category_is_rejected() -> None:
    with pytest.raises(ValueError, match="category"):
        parse_injection("harm_spike:1h:1h:5:category=spam")
