"""The local broker's properties: a new consumer group waits for more members before its
first assignment, as a production Kafka broker does by default (Kafka's
``group.initial.rebalance.delay.ms``, 3000 ms)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerting.policy import ConfigError
from streams.devtools.broker_config import server_properties
from streams.settings import load_settings


def _delay(overrides: dict[str, object]) -> str:
    settings = load_settings(env={}, overrides=overrides)
    props = server_properties(settings.local_broker, Path("/tmp/unused"), None)
    return props["group.initial.rebalance.delay.ms"]


def test_a_new_group_waits_for_its_members_by_default() -> None:
    assert _delay({}) == "3000"
    assert _delay({"local_broker.group_initial_rebalance_delay_ms": 0}) == "0"


@pytest.mark.parametrize("bad", [-1, 300_001, "soon"])
def test_a_bad_delay_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="group_initial_rebalance_delay_ms"):
        load_settings(env={}, overrides={"local_broker.group_initial_rebalance_delay_ms": bad})
