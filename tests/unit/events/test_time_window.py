"""The event-time window and the one rule for numeric timestamps (issue 17 item 5)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streams.contract.decode import Coordinates, DeadLetter, IngressLimits, decode

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
AT = Coordinates("inputs", 0, 7)


def _record(ts: object) -> bytes:
    return json.dumps(
        {
            "event_type": "input",
            "gen_ai.response.id": "r1",
            "timestamp": ts,
            "model": "m",
            "model_version": "v1",
        }
    ).encode()


@pytest.mark.parametrize(
    "ts", ["0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z", "1970-01-01T00:00:00Z", 0, 86400]
)
def test_old_timestamps_are_dead_lettered_as_past(ts: object) -> None:
    out = decode(_record(ts), AT, now=NOW)
    assert isinstance(out, DeadLetter)
    assert out.reason == "past_timestamp"
    assert out.errors[0].loc == "timestamp"


def test_the_past_bound_is_configurable() -> None:
    ts = "2026-11-28T12:00:00Z"  # one day before NOW
    assert not isinstance(decode(_record(ts), AT, now=NOW), DeadLetter)
    out = decode(_record(ts), AT, now=NOW, limits=IngressLimits(max_past_s=3600))
    assert isinstance(out, DeadLetter)
    assert out.reason == "past_timestamp"


def test_numbers_are_seconds_since_the_epoch() -> None:
    secs = NOW.timestamp() - 60
    for value in (secs, int(secs), str(secs)):
        event = decode(_record(value), AT, now=NOW)
        assert not isinstance(event, DeadLetter), value
        assert abs(event.timestamp.timestamp() - float(value)) < 1e-3


def test_1e11_is_seconds_not_milliseconds() -> None:
    # As seconds, 1e11 is in the year 5138: in the future, not 1973.
    out = decode(_record(1e11), AT, now=NOW)
    assert isinstance(out, DeadLetter)
    assert out.reason == "future_timestamp"


@pytest.mark.parametrize("ts", [NOW.timestamp() * 1000, 1e300, True])
def test_milliseconds_and_booleans_are_rejected_with_a_reason(ts: object) -> None:
    out = decode(_record(ts), AT, now=NOW)
    assert isinstance(out, DeadLetter)
    assert out.reason == "invalid"
    assert "timestamp" in out.error
