"""Consumer-group lag read from the broker: what ``sentinel status`` shows for the worker.

The worker's consumer group is its ``worker.app_id`` (faust's group id). Its lag on a
partition is the log-end offset minus the group's committed offset: the records the worker
has not yet processed and committed. Read with the admin client and a group-less consumer,
so it works while the worker is down (then the committed offsets are where it stopped).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from streams.kafka import clients
from streams.kafka.clients import ClientSecurity


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a topic the group reads: end offset, committed offset, lag."""

    topic: str
    partition: int
    end: int
    committed: int | None  # None: the group has committed nothing on this partition

    @property
    def lag(self) -> int:
        """Records not yet committed by the group (all of them when it committed none)."""
        return max(0, self.end - (self.committed or 0))


COORDINATOR_WAIT_S = 20.0
"""How long to retry a group's offsets while the broker answers with a retriable error."""


def group_lag(
    bootstrap: Sequence[str],
    security: ClientSecurity,
    group: str,
    topics: Iterable[str],
    *,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[PartitionLag]:
    """Lag of consumer group ``group`` on every partition of ``topics`` (a topic that does
    not exist is left out), in topic then partition order.

    A young broker answers the first group request with ``CoordinatorNotAvailable`` while
    it creates ``__consumer_offsets``; retriable errors like it are retried for up to
    :data:`COORDINATOR_WAIT_S`, so ``sentinel status`` right after ``kafka up`` works."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    admin = clients.admin(bootstrap, security)
    deadline = monotonic() + COORDINATOR_WAIT_S
    try:
        while True:
            try:
                # kafka-python 3.0: group id -> {TopicPartition: OffsetAndMetadata}
                committed: dict[Any, Any] = admin.list_group_offsets(group).get(group, {})
                break
            except KafkaError as exc:
                if not exc.retriable or monotonic() >= deadline:
                    raise
                sleep(0.5)
    finally:
        admin.close()
    reader = clients.consumer(bootstrap, security, group_id=None, enable_auto_commit=False)
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in sorted(set(topics))
            for p in sorted(reader.partitions_for_topic(topic) or ())
        ]
        ends: dict[Any, int] = reader.end_offsets(tps) if tps else {}
    finally:
        reader.close()
    out: list[PartitionLag] = []
    for tp in tps:
        meta = committed.get(tp)
        offset = int(meta.offset) if meta is not None and meta.offset >= 0 else None
        out.append(PartitionLag(tp.topic, tp.partition, int(ends[tp]), offset))
    return out


def render_lag(group: str, lags: list[PartitionLag], internal: Iterable[str] = ()) -> str:
    """Per topic: lag in records and how many partitions the group has committed on. The
    total counts event records; records of the ``internal`` topics (the worker's hand-offs
    between its stages, each a batch of observations) are counted apart: while they lag,
    events already read are still being joined or detected."""
    if not lags:
        return f"group {group}: no source topics found"
    inner = set(internal)
    events = sum(p.lag for p in lags if p.topic not in inner)
    pending = sum(p.lag for p in lags if p.topic in inner)
    lines = [f"group {group}: lag {events} record(s) in total"]
    if pending:
        lines[0] += f"; {pending} internal record(s) (batches of observations) not yet processed"
    for topic in sorted(dict.fromkeys(p.topic for p in lags), key=lambda t: t in inner):
        parts = [p for p in lags if p.topic == topic]
        done = sum(p.committed is not None for p in parts)
        lines.append(
            f"  {topic}{' (internal)' if topic in inner else ''}: "
            f"lag {sum(p.lag for p in parts)} record(s), "
            f"end {sum(p.end for p in parts)}, committed on {done}/{len(parts)} partition(s)"
        )
    return "\n".join(lines)
