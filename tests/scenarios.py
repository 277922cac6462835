"""Simulated scenarios shared by several tests."""

from __future__ import annotations

from datetime import timedelta

from streams.devtools.scenario import Injection, Scenario


def toxicity_spike_scenario(**overrides: object) -> Scenario:
    """Four hours at 3600 requests/hour; an 8x toxicity spike on support-chat from 2h.

    The offline pipeline finds it about 20 minutes in (tests/unit/pipeline/test_replay.py).
    """
    fields: dict[str, object] = {
        "seed": 3,
        "duration": timedelta(hours=4),
        "events_per_hour": 3600,
        "injections": [
            Injection(
                type="toxicity_spike",
                start=timedelta(hours=2),
                duration=timedelta(hours=2),
                strength=8,
                scope={"model": "support-chat"},
            )
        ],
    }
    return Scenario.model_validate(fields | overrides)
