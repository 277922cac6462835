"""Event models: JSON Schema round trips, naming, timestamps, strictness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.cli.main import main
from streams.contract.events import (
    EVENT_MODELS,
    AnyEvent,
    Evaluation,
    Feedback,
    InferenceInput,
    InferenceOutput,
    dump_event,
    parse_event,
)
from streams.contract.schema import json_schemas

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
names = st.from_regex(r"\A[a-z][a-z0-9_-]{0,12}\Z")
labels = st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z")
unit = st.floats(0.0, 1.0, allow_nan=False)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
times = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis needs naive bounds
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
common = {
    "request_id": st.text(min_size=1, max_size=20),
    "timestamp": times,
    "segment": st.dictionaries(labels, st.text(min_size=1, max_size=8), max_size=3),
    "user_hash": st.none() | st.text(min_size=1, max_size=10),
}
model_ref = {"model": names, "model_version": names}
EVENTS: dict[str, st.SearchStrategy[Any]] = {
    "input": st.builds(
        InferenceInput,
        **common,
        **model_ref,
        prompt=st.none() | st.text(max_size=30),
        system_instructions_hash=st.none() | st.from_regex(r"\A(sha256:)?[0-9a-f]{64}\Z"),
        retrieved_doc_ids=st.lists(st.text(min_size=1, max_size=8), max_size=4),
        numeric_features=st.dictionaries(labels, finite, max_size=3),
        categorical_features=st.dictionaries(labels, st.text(min_size=1, max_size=5), max_size=3),
        embedding=st.none() | st.lists(finite, min_size=1, max_size=8),
    ),
    "output": st.builds(
        InferenceOutput,
        **common,
        **model_ref,
        confidence=st.none() | unit,
        moderation=st.dictionaries(labels, unit, max_size=4),
        prompt_injection=st.none() | unit,
        groundedness=st.none() | unit,
        label=st.none() | st.text(min_size=1, max_size=5),
        input_tokens=st.none() | st.integers(0, 10**6),
        output_tokens=st.none() | st.integers(0, 10**6),
    ),
    "feedback": st.builds(
        Feedback,
        **common,
        model=st.none() | names,
        vote=st.sampled_from(["up", "down"]),
        rating=st.none() | st.integers(1, 5),
        comment=st.none() | st.text(max_size=20),
    ),
    "evaluation": st.builds(
        Evaluation,
        **common,
        evaluator=names,
        name=names,
        score=st.none() | finite,
        passed=st.none() | st.booleans(),
        scores=st.dictionaries(labels, unit, max_size=3),
    ),
}
SCHEMAS = json_schemas()
VALIDATORS = {k: jsonschema.Draft202012Validator(v) for k, v in SCHEMAS.items()}
"""Compiled once: ``jsonschema.validate`` re-checks the schema itself on every call."""


@pytest.mark.parametrize("kind", list(EVENT_MODELS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_model_round_trips_through_its_json_schema(kind: str, data: st.DataObject) -> None:
    event: AnyEvent = data.draw(EVENTS[kind])
    wire = dump_event(event)
    doc = json.loads(wire)
    VALIDATORS[kind].validate(doc)
    VALIDATORS["event"].validate(doc)
    back = parse_event(wire)
    assert back == event
    assert back.timestamp.tzinfo is UTC


def test_schemas_reject_what_the_models_reject() -> None:
    doc = json.loads(
        dump_event(InferenceOutput(request_id="r", timestamp=T0, model="m", model_version="v"))
    )
    for bad in ({"confidence": 1.5}, {"confidence": "0.5"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc | bad, SCHEMAS["output"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {k: v for k, v in doc.items() if k != "gen_ai.request.model"}, SCHEMAS["output"]
        )


def test_otel_aliases_on_the_wire_and_names_in_python() -> None:
    out = InferenceOutput(
        request_id="r", timestamp=T0, model="m", model_version="v", input_tokens=3
    )
    doc = json.loads(dump_event(out))
    assert doc["gen_ai.response.id"] == "r"
    assert doc["gen_ai.request.model"] == "m"
    assert doc["gen_ai.usage.input_tokens"] == 3
    assert doc["timestamp"] == "2025-03-01T12:00:00Z"
    by_name = {
        "event_type": "output",
        "request_id": "r",
        "timestamp": "2025-03-01T12:00:00Z",
        "model": "m",
        "model_version": "v",
        "input_tokens": 3,
    }
    assert parse_event(json.dumps(by_name)) == out


def test_timestamps_must_be_aware_and_become_utc() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Feedback(request_id="r", timestamp=datetime(2025, 1, 1), vote="up")  # noqa: DTZ001
    fb = parse_event(
        b'{"event_type":"feedback","gen_ai.response.id":"r",'
        b'"timestamp":"2025-01-01T02:00:00+02:00","vote":"up"}'
    )
    assert fb.timestamp == datetime(2025, 1, 1, tzinfo=UTC)
    assert fb.timestamp.tzinfo is UTC


def test_strict_numbers_and_unknown_fields_ignored() -> None:
    base = {
        "event_type": "output",
        "gen_ai.response.id": "r",
        "timestamp": "2025-01-01T00:00:00Z",
        "gen_ai.request.model": "m",
        "model_version": "v",
    }
    with pytest.raises(ValidationError):
        parse_event(json.dumps(base | {"confidence": "0.5"}))
    with pytest.raises(ValidationError):
        parse_event(json.dumps(base | {"confidence": float("nan")}))
    event = parse_event(json.dumps(base | {"confidence": 1, "some_new_field": {"x": 1}}))
    assert isinstance(event, InferenceOutput)
    assert event.confidence == 1.0
    assert "some_new_field" not in dump_event(event).decode()


def test_feedback_needs_vote_or_rating() -> None:
    with pytest.raises(ValidationError, match="vote or a rating"):
        Feedback(request_id="r", timestamp=T0)


def test_schema_main_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(
        f"{k}.schema.json"
        for k in ["input", "output", "feedback", "evaluation", "event", "dead-letter"]
    )
    for path in tmp_path.iterdir():
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))
