"""Ingress on the real broker: poison records between good ones.

A faust worker runs in a subprocess (this module is its entry point:
``python -m tests.integration.test_ingress VALIDATED_TOPIC``, settings via SENTINEL_*
variables). Good records must all arrive, exactly once, on a 'validated' topic;
every poison record must be in the dead-letter topic with its reason, original bytes and
coordinates.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.contract.decode import DeadLetter
from streams.contract.events import parse_event
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.workers import child_env, ingress_topics, process_group

REPO = Path(__file__).resolve().parents[2]
REFUSED = "good-017"
"""A valid event the next stage raises on: its batch is handed over again one event at a
time, and only this event is dead-lettered (reason ``handler_error``)."""


def _worker_main(validated_topic: str) -> None:  # pragma: no cover - runs in a subprocess
    import faust

    from streams.runtime.app import create_app
    from streams.runtime.ingress import Accepted, register_ingress
    from streams.settings import load_settings
    from tests.integration.workers import forward_to_topic

    settings = load_settings(env=os.environ)
    app = create_app(settings)
    forward = forward_to_topic(app, validated_topic, partitions=settings.kafka.topic_partitions)

    async def handle(items: Sequence[Accepted]) -> None:
        """The next stage, refusing one event (a bug or a poison it cannot take)."""
        if any(item.event.request_id == REFUSED for item in items):
            raise ValueError(f"the next stage cannot take {REFUSED}")
        await forward(items)

    register_ingress(app, settings, handle)
    faust.Worker(app, loglevel="warning").execute_from_commandline()


def _good(kind: str, rid: str, ts: datetime) -> dict[str, object]:
    base: dict[str, object] = {
        "event_type": kind,
        "gen_ai.response.id": rid,
        "timestamp": ts.isoformat(),
        "segment": {"tenant": "acme", "locale": "en-US"},
    }
    if kind == "input":
        base |= {"gen_ai.request.model": "chat", "model_version": "v1", "retrieved_doc_ids": ["d"]}
    else:
        base |= {
            "gen_ai.request.model": "chat",
            "model_version": "v1",
            "confidence": 0.8,
            "moderation": {"toxicity": 0.01},
        }
    return base


def _poison(now: datetime) -> list[tuple[str, bytes | None]]:
    """(expected reason, value) pairs."""
    ok = _good("output", "p", now)

    def with_(**kv: object) -> bytes:
        return json.dumps(ok | {k.replace("__", "."): v for k, v in kv.items()}).encode()

    def without(key: str) -> bytes:
        return json.dumps({k: v for k, v in ok.items() if k != key}).encode()

    return [
        ("not_json", b"this is not json"),
        ("not_json", b"\xff\xfe\x00garbage"),
        ("not_object", b"[1, 2, 3]"),
        ("wrong_type", with_(confidence="high")),
        ("non_finite", with_(confidence=float("nan"))),
        (
            "non_finite",
            json.dumps(ok).replace('"confidence": 0.8', '"confidence": Infinity').encode(),
        ),
        ("out_of_range", with_(confidence=1.5)),
        ("out_of_range", with_(moderation={"toxicity": -0.1})),
        ("missing_field", without("gen_ai.request.model")),
        ("missing_field", without("gen_ai.response.id")),
        ("future_timestamp", with_(timestamp=(now + timedelta(days=2)).isoformat())),
        ("naive_timestamp", with_(timestamp="2025-01-01T00:00:00")),
        ("unknown_event_type", with_(event_type="telemetry")),
        ("too_large", with_(output_text="x" * 600_000)),
        ("empty", None),
    ]


@pytest.fixture
def topics(kafka_broker: KafkaBroker, service_settings: Settings) -> str:
    return ingress_topics(kafka_broker.bootstrap, service_settings)


def _drain(
    bootstrap: str, wanted: dict[str, int], timeout_s: float, proc: subprocess.Popen[bytes]
) -> dict[str, list[tuple[bytes | None, bytes]]]:
    consumer = KafkaConsumer(
        *wanted, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    got: dict[str, list[tuple[bytes | None, bytes]]] = {t: [] for t in wanted}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            for tp, records in consumer.poll(timeout_ms=500).items():
                got[tp.topic].extend((r.key, r.value) for r in records)
            if all(len(got[t]) >= n for t, n in wanted.items()):
                time.sleep(2.0)  # anything extra (duplicates, strays) shows up too
                for tp, records in consumer.poll(timeout_ms=500).items():
                    got[tp.topic].extend((r.key, r.value) for r in records)
                break
    finally:
        consumer.close()
    return got


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_poison_goes_to_dead_letter_and_good_records_flow(
    kafka_broker: KafkaBroker, service_settings: Settings, topics: str, tmp_path: Path
) -> None:
    validated = topics
    t = service_settings.topics
    now = datetime.now(UTC) - timedelta(minutes=1)
    poison = _poison(now)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, max_request_size=2**21)
    good_ids: list[str] = []
    expected_dead: dict[tuple[str, int, int], tuple[str, bytes | None]] = {}
    try:
        for i in range(40):
            topic, kind = (t.inputs, "input") if i % 2 else (t.outputs, "output")
            rid = f"good-{i:03d}"
            good_ids.append(rid)
            event = _good(kind, rid, now + timedelta(seconds=i))
            if i % 10 == 3:
                del event["event_type"]  # the topic's default kind applies
            md = producer.send(topic, key=rid.encode(), value=json.dumps(event).encode()).get(30)
            if rid == REFUSED:
                expected_dead[(md.topic, md.partition, md.offset)] = (
                    "handler_error",
                    json.dumps(event).encode(),
                )
            if i < len(poison):
                reason, value = poison[i]
                md = producer.send(topic, key=f"bad-{i}".encode(), value=value).get(30)
                expected_dead[(md.topic, md.partition, md.offset)] = (reason, value)
    finally:
        producer.close()

    log_path = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "tests.integration.test_ingress", validated]
    with process_group(argv, child_env(service_settings), log_path) as proc:
        got = _drain(
            kafka_broker.bootstrap,
            {validated: len(good_ids) - 1, t.dead_letter: len(expected_dead)},
            timeout_s=150,
            proc=proc,
        )
    full_log = log_path.read_text(errors="replace")
    worker_log = full_log[-4000:]

    events = [parse_event(value) for _, value in got[validated]]
    assert sorted(e.request_id for e in events) == [r for r in good_ids if r != REFUSED], worker_log
    assert [k for k, _ in got[validated]] == [e.request_id.encode() for e in events]

    letters = [DeadLetter.model_validate_json(value) for _, value in got[t.dead_letter]]
    assert len(letters) == len(expected_dead), worker_log
    for (key, _), letter in zip(got[t.dead_letter], letters, strict=True):
        reason, value = expected_dead[(letter.source_topic, letter.partition, letter.offset)]
        assert key == letter.source_topic.encode()
        assert letter.reason == reason, letter.error
        assert letter.error
        if value is None:
            assert letter.value_b64 is None
        elif letter.value_truncated:
            assert value.startswith(base64.b64decode(letter.value_b64 or ""))
            assert letter.value_size == len(value)
        else:
            assert letter.original_value() == value
        assert letter.key_b64 is not None
        expected_key = REFUSED.encode() if reason == "handler_error" else b"bad-"
        assert base64.b64decode(letter.key_b64).startswith(expected_key)

    # The log names the first rejected record and summarises the rest, by the end of the
    # interval or at shutdown at the latest, whether or not another batch came (the
    # handler_error is logged with its traceback instead).
    named = re.findall(r"dead-lettered \S+@\d+: ", full_log)
    summarised = [int(n) for n in re.findall(r"dead-lettered (\d+) more record", full_log)]
    rejected = sum(reason != "handler_error" for reason, _ in expected_dead.values())
    assert named, worker_log
    assert len(named) + sum(summarised) == rejected, worker_log


if __name__ == "__main__":  # pragma: no cover
    _worker_main(sys.argv[1])
