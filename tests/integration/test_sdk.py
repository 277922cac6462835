"""The publisher SDK against the real session broker."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from pydantic import ValidationError

from streams.contract.events import (
    MAX_EMBEDDING_DIM,
    MAX_FEATURES,
    MAX_TEXT_CHARS,
    Evaluation,
    Feedback,
    InferenceInput,
    InferenceOutput,
    parse_event,
)
from streams.sdk import PublishError, RejectedEventError, SentinelPublisher
from streams.settings import Settings
from tests.conftest import KafkaBroker

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _consume(
    bootstrap: str, topic: str, n: int, timeout_s: float = 30.0
) -> list[tuple[bytes, bytes, int]]:
    """The first ``n`` records of ``topic``: key, value and record timestamp (ms)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    out: list[tuple[bytes, bytes, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend((r.key, r.value, r.timestamp) for r in records)
    finally:
        consumer.close()
    return out


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_publishes_each_kind_keyed_by_request_id(
    kafka_broker: KafkaBroker, service_settings: Settings, codec: str
) -> None:
    """With every compression codec (issue 17: the docs' zstd example failed without the
    codec libraries); kafka-python reads them back."""
    common = {"request_id": "req-1", "timestamp": T0, "segment": {"tenant": "acme"}}
    events = [
        InferenceInput(**common, model="chat", model_version="v1", retrieved_doc_ids=["d1"]),
        InferenceOutput(**common, model="chat", model_version="v1", confidence=0.9),
        Feedback(**common, vote="down", comment="wrong"),
        Evaluation(**common, evaluator="judge", name="groundedness", score=0.2, passed=False),
    ]
    with SentinelPublisher(
        kafka_broker.bootstrap, service_settings.topics, compression_type=codec
    ) as pub:
        futures = [
            pub.publish_input(events[0]),  # type: ignore[arg-type]
            pub.publish_output(events[1]),  # type: ignore[arg-type]
            pub.publish_feedback(events[2]),  # type: ignore[arg-type]
            pub.publish_evaluation(events[3]),  # type: ignore[arg-type]
        ]
        metadata = [f.get(timeout=30) for f in futures]
    assert all(m.offset >= 0 for m in metadata)
    assert pub.sent == 4
    assert pub.failed == 0
    t = service_settings.topics
    for event, topic in zip(events, [t.inputs, t.outputs, t.feedback, t.evaluations], strict=True):
        [(key, value, timestamp_ms)] = _consume(kafka_broker.bootstrap, topic, 1)
        assert key == b"req-1"
        assert parse_event(value) == event
        # the record time is the event time: a worker draining a backlog keeps its
        # partitions in step by it, and a replay from Kafka merges them by it
        assert timestamp_ms == int(T0.timestamp() * 1000)


def test_invalid_event_is_rejected_before_send(kafka_broker: KafkaBroker) -> None:
    bad = InferenceOutput.model_construct(
        request_id="r", timestamp=T0, model="m", model_version="v", confidence=2.0
    )
    with SentinelPublisher(kafka_broker.bootstrap) as pub, pytest.raises(ValidationError):
        pub.publish(bad)
    with SentinelPublisher(kafka_broker.bootstrap) as pub, pytest.raises(TypeError):
        pub.publish_output(Feedback(request_id="r", timestamp=T0, vote="up"))  # type: ignore[arg-type]


def test_an_event_the_ingress_would_dead_letter_is_refused_before_send(
    kafka_broker: KafkaBroker, service_settings: Settings
) -> None:
    """Valid field by field, an event can still be over the record size the ingress takes,
    or stamped ahead of its clock: it was sent, and dead-lettered where the producer does
    not look (``too_large``, ``future_timestamp``)."""
    now = T0 + timedelta(days=1)
    big = InferenceInput(
        request_id="req-big",
        timestamp=now,
        model="chat",
        model_version="v1",
        prompt="漢" * MAX_TEXT_CHARS,  # 300 KB of UTF-8, within the prompt's own limit
        embedding=[0.0123456789012345] * MAX_EMBEDDING_DIM,
        categorical_features={f"feature_{i:03d}": "x" * 250 for i in range(MAX_FEATURES)},
        numeric_features={f"number_{i:03d}": 0.123456789 for i in range(MAX_FEATURES)},
        retrieved_doc_ids=[f"kb://tenant-acme/docs/{i:04d}" for i in range(256)],
    )
    ahead = InferenceOutput(
        request_id="req-ahead", timestamp=now + timedelta(minutes=10), model="chat",
        model_version="v1", confidence=0.9,
    )  # fmt: skip
    old = ahead.model_copy(update={"request_id": "req-old", "timestamp": T0})
    with SentinelPublisher(
        kafka_broker.bootstrap, service_settings.topics, clock=lambda: now
    ) as pub:
        with pytest.raises(RejectedEventError, match="too_large: req-big: record value is"):
            pub.publish(big)
        with pytest.raises(RejectedEventError, match="future_timestamp: req-ahead") as info:
            pub.publish(ahead)
        assert info.value.reason == "future_timestamp"
        pub.publish(old).get(timeout=30)  # a backfill is sent (replay takes every time)
    assert pub.sent == 1
    [(key, _, _)] = _consume(kafka_broker.bootstrap, service_settings.topics.outputs, 1)
    assert key == b"req-old"


def test_delivery_failure_surfaces_to_caller(kafka_broker: KafkaBroker, unique_name: str) -> None:
    topic = f"t{unique_name}.tiny"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "1024"})])
    finally:
        admin.close()
    big = InferenceInput(
        request_id="big", timestamp=T0, model="m", model_version="v", prompt="x" * 5000
    )
    pub = SentinelPublisher(
        kafka_broker.bootstrap, delivery_timeout_ms=20_000, request_timeout_ms=10_000
    )
    try:
        future = pub.publish(big, topic=topic)
        with pytest.raises(Exception, match=r"(?i)too ?large"):
            future.get(timeout=30)
        pub.publish(big, topic=topic)
        with pytest.raises(PublishError) as info:
            pub.flush(timeout=30)
        assert info.value.failures
        assert info.value.failures[0][0] == "big"
        pub.flush(timeout=5)  # failures are reported once
    finally:
        pub._producer.close(timeout=5)
