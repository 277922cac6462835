"""Reading recorded topics back: by time range, merged by timestamp, or whole topics.

Everything here reads with a group-less kafka-python consumer (no offsets are committed,
nothing the live service consumes is disturbed). :class:`KafkaHistory` is the one place
that talks to the broker; commands take one as an argument so tests can hand in their
own, and so that one consumer serves every read of a command. It logs in with the
``kafka.security`` settings, as every other client of the service.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from streams.kafka.security import check_login, kafka_python_kwargs
from streams.settings import Settings

POLL_MS: Final = 500
HIGH_WATER: Final = 20_000
"""Records buffered per partition before that partition is paused (bounded memory)."""
LOW_WATER: Final = 2_000


class HistoryError(RuntimeError):
    """The broker did not deliver what the offsets promised (a timeout, a missing topic)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as read back (the parts investigation needs)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Span:
    """Offsets ``[start, stop)`` of one partition to read."""

    topic: str
    partition: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime (naive datetimes are rejected)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: give a UTC offset or 'Z'")
    return int(value.timestamp() * 1000)


class KafkaHistory:
    """A group-less consumer over recorded topics.

    ``consumer`` is anything with kafka-python's ``KafkaConsumer`` shape; by default one is
    built for ``settings.kafka.bootstrap_servers`` with ``settings.kafka.security``, after
    one login check, so a refused login raises :class:`streams.kafka.security.KafkaLoginError`
    at once instead of after the consumer's retries. ``idle_timeout_s`` bounds how long a
    read waits for records the offsets say exist.
    """

    def __init__(
        self, settings: Settings, *, consumer: Any = None, idle_timeout_s: float = 30.0
    ) -> None:
        if consumer is None:
            servers = settings.kafka.bootstrap_servers
            if not servers:
                raise ValueError(
                    "no broker configured: set kafka.broker in the config file or SENTINEL_BROKER"
                )
            from kafka import KafkaConsumer

            check_login(servers, settings.kafka.security)
            consumer = KafkaConsumer(
                bootstrap_servers=servers,
                group_id=None,
                enable_auto_commit=False,
                client_id="sentinel-investigate",
                max_partition_fetch_bytes=4 * 1024 * 1024,
                **kafka_python_kwargs(settings.kafka.security),
            )
        self.consumer = consumer
        self.idle_timeout_s = idle_timeout_s

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> KafkaHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- offsets ---------------------------------------------------------------------

    def partitions(self, topic: str) -> list[Any]:
        from kafka.structs import TopicPartition

        found = self.consumer.partitions_for_topic(topic)
        return [TopicPartition(topic, p) for p in sorted(found or ())]

    def spans_between(
        self, topics: Iterable[str], start: datetime | None, end: datetime | None
    ) -> list[Span]:
        """Per partition, the offsets of records with timestamps in ``[start, end)``.

        ``None`` means the beginning / the current end of the partition. The end is a
        snapshot: records written after this call are not read. Topics that do not exist
        contribute nothing.
        """
        tps = [tp for topic in dict.fromkeys(topics) for tp in self.partitions(topic)]
        if not tps:
            return []
        first = self.consumer.beginning_offsets(tps)
        last = self.consumer.end_offsets(tps)
        starts = self._offsets_at(tps, start, first, last)
        stops = self._offsets_at(tps, end, last, last)
        return [Span(tp.topic, tp.partition, starts[tp], max(starts[tp], stops[tp])) for tp in tps]

    def _offsets_at(
        self,
        tps: Sequence[Any],
        when: datetime | None,
        default: dict[Any, int],
        ends: dict[Any, int],
    ) -> dict[Any, int]:
        if when is None:
            return {tp: int(default[tp]) for tp in tps}
        found = self.consumer.offsets_for_times(dict.fromkeys(tps, to_ms(when)))
        # No record at or after the time: the partition's end.
        return {tp: int(ends[tp]) if found.get(tp) is None else found[tp].offset for tp in tps}

    def spans_whole(self, topics: Iterable[str]) -> list[Span]:
        return self.spans_between(topics, None, None)

    # -- reading ---------------------------------------------------------------------

    def read(self, spans: Sequence[Span]) -> Iterator[Record]:
        """Records of the spans, merged across partitions by (timestamp, topic, partition,
        offset). Within a partition the offset order is kept; the merge is the same for any
        subset of partitions, so two reads of overlapping topics agree on relative order."""
        from kafka.structs import TopicPartition

        active = {TopicPartition(s.topic, s.partition): s for s in spans if s.size > 0}
        if not active:
            return
        consumer = self.consumer
        consumer.assign(list(active))
        for tp, span in active.items():
            consumer.seek(tp, span.start)
        buffers: dict[Any, deque[Record]] = {tp: deque() for tp in active}
        fetching = set(active)
        paused: set[Any] = set()
        idle_since = time.monotonic()
        while True:
            # Every partition still fetching must show its head before the merge may pick.
            while any(not buffers[tp] for tp in fetching):
                for tp in list(paused):
                    if len(buffers[tp]) < LOW_WATER:
                        consumer.resume(tp)
                        paused.discard(tp)
                polled = consumer.poll(timeout_ms=POLL_MS)
                got = 0
                for tp, batch in polled.items():
                    want = active.get(tp)
                    if want is None or tp not in fetching:
                        continue
                    for rec in batch:
                        if rec.offset >= want.stop:
                            fetching.discard(tp)
                            break
                        if rec.offset < want.start:
                            continue
                        buffers[tp].append(
                            Record(
                                rec.topic,
                                rec.partition,
                                rec.offset,
                                rec.timestamp,
                                rec.key,
                                rec.value,
                            )
                        )
                        got += 1
                    if buffers[tp] and buffers[tp][-1].offset >= want.stop - 1:
                        fetching.discard(tp)
                    if tp in fetching and len(buffers[tp]) >= HIGH_WATER:
                        consumer.pause(tp)
                        paused.add(tp)
                for tp in list(fetching):
                    if consumer.position(tp) >= active[tp].stop:
                        fetching.discard(tp)  # gaps (compaction, transaction markers)
                if got:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.idle_timeout_s:
                    stuck = ", ".join(
                        f"{tp.topic}[{tp.partition}] at {consumer.position(tp)} "
                        f"(expected up to {active[tp].stop - 1})"
                        for tp in fetching
                        if not buffers[tp]
                    )
                    raise HistoryError(f"no records for {self.idle_timeout_s:.0f} s: {stuck}")
            heads = [tp for tp, buf in buffers.items() if buf]
            if not heads:
                return
            best = min(
                heads,
                key=lambda tp: (
                    buffers[tp][0].timestamp_ms,
                    tp.topic,
                    tp.partition,
                    buffers[tp][0].offset,
                ),
            )
            yield buffers[best].popleft()

    def read_topic(self, topic: str) -> Iterator[Record]:
        """Every record currently in ``topic`` (merged by timestamp across partitions)."""
        yield from self.read(self.spans_whole([topic]))
