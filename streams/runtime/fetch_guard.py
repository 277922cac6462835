"""Records the worker cannot decode at the fetch level pause their partition, not the worker.

A record batch aiokafka cannot decode (a compression codec whose library is missing, a
corrupt batch: CRC mismatch, a broken compressed payload) raises out of the fetcher before
any Sentinel code sees a record. faust took that as a crash of its Fetcher service and the
worker exited; restarted, it fetched the same batch and exited again: a crash loop
(issue 17). Such a batch has no records to dead-letter (its bytes never decode), and
skipping it would silently lose every event in it.

The policy, for the worker's faust consumer (:class:`GuardedTransport`):

* the partition whose batch failed is **paused**; every other partition goes on. Its
  position stays where the failed fetch began: records of it that came in the same fetch
  response, before the batch, wait with it (aiokafka gives none of a failed fetch out).
  Records of other partitions taken out of the same fetch are put back (their positions
  are reset; a partition first positioned during the failed call goes back to its
  committed offset), so nothing is skipped;
* ``/readyz`` answers 503 with ``undecodable_partitions`` (topic, partition, offset,
  error); ``sentinel_fetch_undecodable_partitions`` (gauge, labels topic, partition) and
  ``sentinel_fetch_undecodable_total`` (counter) are on ``/metrics``; one ERROR log line per
  partition and offset says what happened and what to do;
* no offset is committed past the batch. Fix the cause (install the codec library; for a
  corrupt batch, move the group's offset past it with ``kafka-consumer-groups
  --reset-offsets`` after saving what can be saved) and restart the worker: it resumes at
  the batch. A rebalance assigns the partition afresh: it is fetched once more and, if
  still undecodable, paused again (one more log line only if the offset changed).

With every codec library installed (``cramjam`` for aiokafka) a well-formed compressed
record never takes this path: ``tests/integration/test_codecs.py``.
"""

from __future__ import annotations

import gzip
import logging
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cramjam
from aiokafka.consumer.fetcher import FetchResult
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

UNDECODABLE: tuple[type[BaseException], ...] = (
    UnsupportedCodecError,
    CorruptRecordException,
    cramjam.DecompressionError,
    zlib.error,
    gzip.BadGzipFile,
    EOFError,
)
"""What decoding a fetched batch raises when the batch cannot be read."""


@dataclass(frozen=True)
class UndecodablePartition:
    """A partition paused at a batch the worker cannot decode."""

    topic: str
    partition: int
    offset: int
    error: str
    since: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "error": self.error,
            "since": self.since.isoformat(),
        }


class FetchGuard:
    """The undecodable partitions of one worker (written by the consumer thread, read by
    the web server's thread: guarded by a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paused: dict[tuple[str, int], UndecodablePartition] = {}
        self.events_total = 0

    def paused(self) -> list[UndecodablePartition]:
        with self._lock:
            return sorted(self._paused.values(), key=lambda p: (p.topic, p.partition))

    def record(self, topic: str, partition: int, offset: int, exc: BaseException) -> bool:
        """Note a failed batch; True if it is news (not the same partition and offset)."""
        error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.events_total += 1
            known = self._paused.get((topic, partition))
            if known is not None and known.offset == offset:
                return False
            self._paused[(topic, partition)] = UndecodablePartition(
                topic, partition, offset, error, datetime.now(UTC)
            )
            return True

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked: another worker owns it now."""
        with self._lock:
            self._paused.pop((topic, partition), None)


def fetch_guard_for(app: Any) -> FetchGuard | None:
    """The guard of ``app``'s consumer, when the app uses :class:`GuardedTransport`."""
    transport = getattr(app, "_transport", None)
    guard = getattr(transport, "fetch_guard", None)
    return guard if isinstance(guard, FetchGuard) else None


def reread_offset(committed: Mapping[Any, int | None], tp: Any) -> int:
    """Where a partition whose fetched records were dropped is read again: faust's
    committed offset (``Consumer._committed_offset``), or 0 when nothing was committed
    (below the log start, aiokafka moves it to the earliest record, as the group's
    ``auto_offset_reset = earliest`` would)."""
    return committed.get(tp) or 0


def _failed_partition(fetcher: Any) -> tuple[Any, int] | None:
    """The partition whose buffered fetch result just failed to decode, and the offset of
    the first record it did not yield. A decode error leaves that result's record
    generator closed while the result is still buffered; nothing else does."""
    for tp, result in list(fetcher._records.items()):
        if type(result) is not FetchResult or not result.has_more():
            continue
        records = result._partition_records
        iterator = getattr(records, "_records_iterator", None)
        if iterator is not None and getattr(iterator, "gi_frame", True) is None:
            return tp, int(records.next_fetch_offset)
    return None


class GuardedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread with the policy of the module docstring."""

    fetch_guard: FetchGuard

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (faust's signature)
        max_records: int | None = None,
    ) -> Any:
        assignment = consumer._subscription.subscription
        states = assignment.assignment if assignment is not None else None
        before: dict[Any, int] = {}
        if states is not None:
            for tp in states.tps:
                state = states.state_value(tp)
                if state is not None and state.has_valid_position:
                    before[tp] = state.position
        try:
            return await super()._fetch_records(
                consumer, active_partitions, timeout=timeout, max_records=max_records
            )
        except UNDECODABLE as exc:
            failed = _failed_partition(consumer._fetcher)
            if failed is None:
                raise
            tp, offset = failed
            self._pause_undecodable(consumer, tp, offset, before, exc)
            return {}

    def _pause_undecodable(
        self, consumer: Any, tp: Any, offset: int, before: dict[Any, int], exc: BaseException
    ) -> None:
        # Records drained from other partitions in the failed call were never returned:
        # put their positions back so they are fetched again. A partition that had no
        # position when the call began (a fresh assignment) got one while it waited and
        # may have been drained too: it goes back to faust's committed offset.
        fetcher = consumer._fetcher
        states = consumer._subscription.subscription.assignment
        committed = getattr(self.consumer, "_committed_offset", {})
        for other in states.tps:
            state = states.state_value(other)
            if other == tp or state is None or not state.has_valid_position:
                continue
            position = before.get(other)
            if position is None:
                position = reread_offset(committed, other)
            if state.position != position:
                fetcher.seek_to(other, position)
        consumer.pause(tp)  # aiokafka's pause: no more fetches; faust's sets stay as they are
        fetcher._records.pop(tp, None)
        if self.fetch_guard.record(tp.topic, tp.partition, offset, exc):
            log.error(
                "partition %s[%d] paused at offset %d: a record batch there cannot be "
                "decoded (%s: %s). The other partitions go on; nothing after it is committed. "
                "Fix the cause (a missing compression library, a corrupt batch) and restart "
                "the worker; see /readyz and sentinel_fetch_undecodable_partitions",
                tp.topic,
                tp.partition,
                offset,
                type(exc).__name__,
                exc,
            )

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self.fetch_guard.forget(tp.topic, tp.partition)
        await super().on_partitions_revoked(revoked)


class GuardedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        thread = GuardedConsumerThread(self, loop=self.loop, beacon=self.beacon)
        thread.fetch_guard = self.transport.fetch_guard  # type: ignore[attr-defined]
        return thread


class GuardedTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport whose consumer pauses undecodable partitions."""

    Consumer = GuardedConsumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_guard = FetchGuard()


def install(app: Any) -> FetchGuard:
    """Give ``app`` the guarded transport (before the worker starts); returns its guard."""
    transport = GuardedTransport(app.conf.broker_consumer, app)
    app.transport = transport
    return transport.fetch_guard
