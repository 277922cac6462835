"""Create the service's topics with the configured partition count before work starts.

A topic auto-created by a producer gets the broker's default partition count, which may
differ from ``kafka.topic_partitions``; creating them up front keeps the layout the
configuration says. The control topic is compacted: it holds the current containment
state per model; the silences, re-learn and watermark topics have a single partition, so
that every worker reads all their records in order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from alerting.delivery_state import delivery_topic
from alerting.relearn import relearn_topic
from alerting.silences import silences_topic
from streams.kafka import clients
from streams.kafka.clients import ClientSecurity
from streams.settings import Settings

COMPACT: Final = {"cleanup.policy": "compact"}
WATERMARKS_SUFFIX: Final = ".watermarks"


def watermarks_topic(control_topic: str) -> str:
    """Name of the workers' watermark topic (``<control>.watermarks``): each worker's
    record time still to deliver, keyed by worker (:class:`streams.runtime.batching.Peers`)."""
    return control_topic + WATERMARKS_SUFFIX


def ensure_topics(settings: Settings, bootstrap: list[str]) -> list[str]:
    """Create missing service topics; return the names created."""
    t = settings.topics
    k = settings.kafka
    wanted = {
        t.inputs: {},
        t.outputs: {},
        t.feedback: {},
        t.evaluations: {},
        t.alerts: {},
        t.dead_letter: {},
        t.control: COMPACT,
        delivery_topic(t.alerts): COMPACT,  # latest delivery state per (sink, incident)
    }
    single = {
        silences_topic(t.control): COMPACT,
        relearn_topic(t.control): COMPACT,
        watermarks_topic(t.control): COMPACT,
    }
    topics = [
        NewTopic(name, k.topic_partitions, k.replication_factor, topic_configs=configs)
        for name, configs in wanted.items()
    ] + [
        # Silences, re-learns, watermarks: one partition, so every worker reads them all,
        # in order.
        NewTopic(name, 1, k.replication_factor, topic_configs=configs)
        for name, configs in single.items()
    ]
    return create_missing(bootstrap, settings.kafka.security, topics)


def create_missing(bootstrap: list[str], security: ClientSecurity, topics: list[Any]) -> list[str]:
    """Create those of ``topics`` (kafka-python ``NewTopic``) that do not exist yet; return
    the names created. A topic another client creates meanwhile is not an error."""
    admin = clients.admin(bootstrap, security)
    try:
        existing = set(admin.list_topics())
        created: list[str] = []
        for topic in topics:
            if topic.name in existing:
                continue
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # another worker created it meanwhile
        return created
    finally:
        admin.close()


@dataclass(frozen=True)
class TopicRecord:
    """A record read by :func:`read_topic_to_end` (kafka-python's fields we use)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_topic_to_end(
    bootstrap: str | list[str],
    topic: str,
    *,
    timeout_s: float = 30.0,
    security: ClientSecurity = None,
) -> list[TopicRecord]:
    """Every record of ``topic`` from the beginning up to its end offsets at call time, in
    log order per partition (partitions one after another). No consumer group, no commits.
    A topic that does not exist reads as empty. Raises ``TimeoutError`` if the end is not
    reached within ``timeout_s``."""
    from kafka import TopicPartition

    reader = clients.consumer(
        [bootstrap] if isinstance(bootstrap, str) else bootstrap,
        security,
        enable_auto_commit=False,
        group_id=None,
        allow_auto_create_topics=False,
    )
    try:
        parts = sorted(reader.partitions_for_topic(topic) or set())
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in parts]
        reader.assign(tps)
        reader.seek_to_beginning(*tps)
        ends: dict[Any, int] = reader.end_offsets(tps)
        by_part: dict[int, list[TopicRecord]] = {p: [] for p in parts}
        deadline = time.monotonic() + timeout_s
        while any(reader.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end in {timeout_s:g} s")
            for r in polled_records(reader.poll(timeout_ms=200, max_records=1000)):
                if r.offset < ends[TopicPartition(r.topic, r.partition)]:
                    by_part[r.partition].append(
                        TopicRecord(
                            r.topic, r.partition, r.offset, getattr(r, "key", None), r.value
                        )
                    )
        return [r for p in parts for r in by_part[p]]
    finally:
        reader.close()


def ensure_compacted_topic(
    bootstrap: str | list[str],
    topic: str,
    *,
    partitions: int = 1,
    replication_factor: int = 1,
    security: ClientSecurity = None,
) -> bool:
    """Create ``topic`` with ``cleanup.policy=compact`` unless it exists; True if created."""
    wanted = [NewTopic(topic, partitions, replication_factor, topic_configs=COMPACT)]
    return bool(
        create_missing([bootstrap] if isinstance(bootstrap, str) else bootstrap, security, wanted)
    )


def polled_records(polled: Any) -> list[Any]:
    """The records of a kafka-python ``poll()`` result, partitions one after another."""
    out: list[Any] = []
    for batch in polled.values():
        out.extend(batch)
    return out
