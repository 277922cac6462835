"""Test helpers: publish simulator lines to the event topics, collect incident events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec

from alerting.model import IncidentEvent
from streams.contract.events import InferenceOutput, dump_event
from streams.settings import Settings, kind_topics

SKEW = timedelta(minutes=15)
"""Event-time skew between partitions when tests publish simulated hours in seconds: the
worker reads four partitions that are a fraction of a second, i.e. minutes of simulated
time, apart, so a detection's event time can precede an injection's start by a few
minutes (seen: 7 min). Tests accept detections from ``start - SKEW``."""


def topic_for(settings: Settings) -> dict[str, str]:
    """Event kind -> topic, as :func:`streams.runtime.ingress.kind_topics` (plain str keys)."""
    return {str(kind): topic for kind, topic in kind_topics(settings).items()}


def publish_lines(
    bootstrap: str, settings: Settings, lines: Iterable[str], *, rate: float = 0.0
) -> int:
    """Send JSONL events as a producer would: keyed by request id, timestamped by event
    time, at most ``rate`` events per second of wall time (0: as fast as possible).
    Returns the number sent (all acknowledged).

    Pacing matters for event-time logic: a stream published far faster than the worker
    reads it lets partitions drift hours apart in event time, which real traffic does not.
    """
    topics = topic_for(settings)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks="all"
    )
    n = 0
    began = time.monotonic()
    try:
        for line in lines:
            if rate > 0 and n % 200 == 0:
                ahead = n / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
            head = json.loads(line)
            ts = datetime.fromisoformat(head["timestamp"].replace("Z", "+00:00"))
            producer.send(
                topics[head["event_type"]],
                key=head["gen_ai.response.id"].encode(),
                value=line.encode(),
                timestamp_ms=int(ts.timestamp() * 1000),
            )
            n += 1
        producer.flush(timeout=120)
    finally:
        producer.close()
    return n


def output_line(
    model: str, version: str, at: datetime, request_id: str, moderation: dict[str, float]
) -> str:
    """One output as a JSONL line, with these moderation scores and a usual confidence."""
    event = InferenceOutput.model_validate(
        {
            "request_id": request_id,
            "timestamp": at,
            "model": model,
            "model_version": version,
            "moderation": moderation,
            "confidence": 0.9,
        }
    )
    return dump_event(event).decode()


def critical_marker(model: str, version: str, at: datetime, n: int) -> str:
    """An output with a certain self-harm score: it must page at once (the end marker)."""
    return output_line(model, version, at, f"marker-{model}-{n}", {"self_harm": 0.999})


class AlertsReader:
    """Reads the alerts topic from the beginning as incidents arrive."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=500,
        )
        self.events: list[IncidentEvent] = []

    def poll(self) -> list[IncidentEvent]:
        for record in self.consumer:
            self.events.append(IncidentEvent.model_validate_json(record.value))
        return self.events

    def wait(self, done: Callable[[list[IncidentEvent]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done(self.poll()):
                return True
        return False

    def close(self) -> None:
        self.consumer.close()


def split_at(lines: list[str], at: datetime) -> tuple[list[str], list[str]]:
    """Simulator lines (in event-time order) before ``at``, and the rest."""
    cut = at.isoformat().replace("+00:00", "")
    first = [line for line in lines if str(json.loads(line)["timestamp"]) < cut]
    return first, lines[len(first) :]


def after(ts: datetime, seconds: float) -> datetime:
    return ts + timedelta(seconds=seconds)


def end_offsets(admin: KafkaAdminClient, topic: str, partitions: int) -> int:
    """Records ever written to ``topic`` (the sum of its partitions' end offsets)."""
    specs = {TopicPartition(topic, p): OffsetSpec.LATEST for p in range(partitions)}
    return sum(o.offset for o in admin.list_partition_offsets(specs).values())


def records_written(bootstrap: str, topic: str, partitions: int) -> int:
    """:func:`end_offsets` through an admin client of its own."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return end_offsets(admin, topic, partitions)
    finally:
        admin.close()


def topic_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` now (group-less, bounded)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"reading {topic} timed out"
            for batch in consumer.poll(timeout_ms=300).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()
