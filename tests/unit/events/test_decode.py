"""decode(): every record becomes an event or a dead letter; nothing raises past it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contract.decode import Coordinates, DeadLetter, IngressLimits, decode
from streams.contract.events import InferenceOutput
from streams.runtime.ingress import IngressStats

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
AT = Coordinates("sentinel.outputs", 3, 42)
GOOD: dict[str, Any] = {
    "event_type": "output",
    "gen_ai.response.id": "req-1",
    "timestamp": "2025-03-01T11:59:00Z",
    "gen_ai.request.model": "chat",
    "model_version": "v1",
    "segment": {"tenant": "acme"},
    "confidence": 0.8,
    "moderation": {"toxicity": 0.01},
    "prompt_injection": 0.0,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _check(result: object, raw: bytes | None) -> None:
    assert isinstance(result, (DeadLetter, InferenceOutput)) or hasattr(result, "event_type")
    if isinstance(result, DeadLetter):
        assert result.source_topic == AT.topic
        assert (result.partition, result.offset) == (3, 42)
        if raw:
            assert base64.b64decode(result.value_b64 or "") == raw[: 256 * 1024]
        DeadLetter.model_validate_json(result.model_dump_json())  # serialisable


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    _check(decode(raw, AT, now=NOW), raw)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    raw = json.dumps(value).encode()
    _check(decode(raw, AT, now=NOW, default_type="output"), raw)


@settings(max_examples=500, deadline=None)
@given(key=st.sampled_from(sorted(GOOD)), value=json_values, drop=st.booleans())
def test_mutated_events_never_raise(key: str, value: Any, drop: bool) -> None:
    doc = dict(GOOD)
    if drop:
        del doc[key]
    else:
        doc[key] = value
    raw = json.dumps(doc).encode()
    result = decode(raw, AT, now=NOW)
    _check(result, raw)


@settings(max_examples=200, deadline=None)
@given(score=st.floats())
def test_scores_outside_unit_interval_are_dead_lettered(score: float) -> None:
    raw = json.dumps(GOOD | {"confidence": score}).encode()
    result = decode(raw, AT, now=NOW)
    if 0.0 <= score <= 1.0:
        assert isinstance(result, InferenceOutput)
    else:
        assert isinstance(result, DeadLetter)
        assert result.reason in {"non_finite", "out_of_range"}


def _with(**kv: Any) -> bytes:
    return json.dumps(GOOD | {k.replace("__", "."): v for k, v in kv.items()}).encode()


def _without(key: str) -> bytes:
    return json.dumps({k: v for k, v in GOOD.items() if k != key}).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"{nope", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b'"a string"', "not_object"),
        (b"[]", "not_object"),
        (_without("event_type"), "missing_event_type"),
        (_with(event_type="other"), "unknown_event_type"),
        (_with(schema_version="2"), "unsupported_schema_version"),
        (_without("gen_ai.response.id"), "missing_field"),
        (_without("gen_ai.request.model"), "missing_field"),
        (_with(confidence=float("nan")), "non_finite"),
        (_with(timestamp=float("nan")), "non_finite"),
        (_with(timestamp=float("-inf")), "non_finite"),
        (_with(moderation={"toxicity": float("inf")}), "non_finite"),
        (_with(confidence=1.01), "out_of_range"),
        (_with(prompt_injection=-0.5), "out_of_range"),
        (_with(timestamp="2025-03-01T11:00:00"), "naive_timestamp"),
        (_with(timestamp="2025-03-02T11:00:00Z"), "future_timestamp"),
        (_with(confidence="0.8"), "wrong_type"),
        (_with(segment=["acme"]), "wrong_type"),
        (_with(**{"gen_ai.request.model": ""}), "invalid"),
    ],
)
def test_reason_codes(raw: bytes | None, reason: str) -> None:
    result = decode(raw, AT, now=NOW)
    assert isinstance(result, DeadLetter)
    assert result.reason == reason, result.error
    assert result.error


def test_size_limit_and_truncated_original() -> None:
    limits = IngressLimits(max_bytes=1000, max_dead_letter_value_bytes=100)
    raw = _with(output_text="x" * 2000)
    result = decode(raw, AT, now=NOW, limits=limits, key=b"k")
    assert isinstance(result, DeadLetter)
    assert result.reason == "too_large"
    assert result.value_truncated
    assert result.value_size == len(raw)
    assert result.original_value() == raw[:100]
    assert result.key_b64 == base64.b64encode(b"k").decode()


def test_future_limit_and_default_type() -> None:
    soon = (NOW + timedelta(seconds=200)).isoformat()
    assert isinstance(decode(_with(timestamp=soon), AT, now=NOW), InferenceOutput)
    strict = IngressLimits(max_future_s=60)
    assert isinstance(decode(_with(timestamp=soon), AT, now=NOW, limits=strict), DeadLetter)
    untyped = _without("event_type")
    assert isinstance(decode(untyped, AT, now=NOW, default_type="output"), InferenceOutput)
    wrong = decode(untyped, AT, now=NOW, default_type="feedback")
    assert isinstance(wrong, DeadLetter)  # an output's fields are not a valid feedback


def test_stats_count_by_topic_and_reason() -> None:
    stats = IngressStats()
    for raw in (_with(), b"x", b"y", _with(confidence=2.0)):
        stats.record(AT, decode(raw, AT, now=NOW))
    assert stats.accepted[(AT.topic, "output")] == 1
    assert stats.dead[(AT.topic, "not_json")] == 2
    assert stats.total_dead() == 3


def test_a_field_given_under_both_its_names_with_different_values_is_dead_lettered() -> None:
    """The OpenTelemetry spelling won and the other value was dropped without a word: a
    join by the wrong request id, a model key of the wrong name."""
    raw = _with(request_id="req-other")
    result = decode(raw, AT, now=NOW)
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid"
    assert "'request_id' and 'gen_ai.response.id' name one field and disagree" in result.error
    same = json.loads(_with())
    same["request_id"] = same["gen_ai.response.id"]
    assert not isinstance(decode(json.dumps(same).encode(), AT, now=NOW), DeadLetter)
