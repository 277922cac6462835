"""Replay finds the failures beyond toxicity and downvotes, each as its own incident type:
a hallucination wave, an LLM-judge score drop, a guardrail block spike and a self-harm rate
spike, injected at once on separate models/signals of one simulated stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerting.model import IncidentEvent
from streams.devtools.scenario import Injection, ModelSpec, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.replay import replay_lines
from streams.settings import load_settings

START = datetime(2025, 1, 6, 8, tzinfo=UTC)  # daytime: ~1800 requests/h per model
INJECT_AT = timedelta(hours=1, minutes=15)
WINDOW = timedelta(minutes=45)


def _scenario() -> Scenario:
    def inj(kind: str, strength: float, model: str, **extra: str) -> Injection:
        return Injection.model_validate(
            {
                "type": kind,
                "start": INJECT_AT,
                "duration": WINDOW,
                "strength": strength,
                "scope": {"model": model},
                **extra,
            }
        )

    # Two LLMs, and base rates high enough that every baseline is learned (1000 outputs,
    # 20 flagged events, 300 evaluations) well before the injections start: ~13k events.
    return Scenario(
        seed=21,
        start=START,
        duration=INJECT_AT + WINDOW,
        events_per_hour=2400,
        models=[
            ModelSpec(name="support-chat", version="v12", share=1.0),
            ModelSpec(name="summarizer", version="v3", share=1.0, confidence_beta=(9.0, 2.0)),
        ],
        harm_rates={"self_harm": 0.02, "sexual": 0.005},
        evaluation_rate=0.3,
        guardrail_rate=0.5,
        injections=[
            inj("hallucination_wave", 0.25, "summarizer"),
            inj("judge_score_drop", 0.25, "support-chat"),
            inj("guardrail_block_spike", 6.0, "support-chat"),
            inj("harm_spike", 8.0, "support-chat", category="self_harm"),
        ],
    )


@pytest.fixture(scope="module")
def triggers() -> list[IncidentEvent]:
    lines = [line.encode() for line in Simulator(_scenario()).lines()]
    result = replay_lines(lines, load_settings(env={}))
    assert result.dead_letters == 0
    return [e for e in result.incidents if e.action == "trigger"]


@pytest.mark.parametrize(
    ("incident_type", "model"),
    [
        ("hallucination_rate", "summarizer"),
        ("evaluation_score:llm-judge/groundedness", "support-chat"),
        ("guardrail_block_rate:guardrail/pii/pii_leak", "support-chat"),
        ("toxicity_rate:self_harm", "support-chat"),
    ],
)
def test_each_injected_failure_raises_its_incident_type_in_time(
    triggers: list[IncidentEvent], incident_type: str, model: str
) -> None:
    mine = [t for t in triggers if t.incident_type == incident_type and t.labels.model == model]
    assert mine, f"no {incident_type} on {model}; got {sorted({t.incident_type for t in triggers})}"
    detected = min(t.emitted_at for t in mine)
    # Not before the injection (no false alarm before it), and within 40 min of it.
    assert START + INJECT_AT <= detected <= START + INJECT_AT + timedelta(minutes=40)


def test_a_self_harm_rate_incident_ranks_sev1(triggers: list[IncidentEvent]) -> None:
    harm = [t for t in triggers if t.incident_type == "toxicity_rate:self_harm"]
    assert harm
    assert all(t.severity.value == "SEV1" for t in harm)
    assert harm[0].playbook is not None
    assert harm[0].playbook.name == "toxicity_rate"


def test_the_hallucination_incident_carries_its_playbook(triggers: list[IncidentEvent]) -> None:
    hall = [t for t in triggers if t.incident_type == "hallucination_rate"]
    assert hall
    assert hall[0].playbook is not None
    assert hall[0].playbook.name == "hallucination_rate"
