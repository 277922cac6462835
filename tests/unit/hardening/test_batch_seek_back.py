"""The batch ingress's fetch loop (streams.runtime.batching): after it drops a stale fetch,
it puts the partitions back to their committed offsets without waiting on the broker; a
fetch is stale only if the generation or a seek changed while it was in flight; and the
fetch's records of other topics (changelogs) still take faust's own path. The whole path
runs against the real broker in ``tests/integration/test_batch_ingress.py`` and
``test_failover.py``; this pins what each piece does.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.types import TP

from streams.runtime.batching import BatchApp


class _ConsumerThread:
    """What the seek-back may use of faust's consumer thread: the assignment and its local
    seek. ``call_thread`` (work in the thread's event loop: aiokafka's network calls, which
    the fetch loop would wait for) fails the test."""

    def __init__(self, assigned: set[TP], revoked_meanwhile: frozenset[TP] = frozenset()) -> None:
        self.assigned = assigned
        self.revoked_meanwhile = revoked_meanwhile
        self.seeks: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def seek(self, tp: TP, offset: int) -> None:
        if tp in self.revoked_meanwhile:  # what aiokafka raises for an unassigned partition
            raise IllegalStateError(f"No current assignment for partition {tp}")
        self.seeks.append((tp, offset))

    async def call_thread(self, fun: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the seek-back waited on the consumer thread: {fun!r}{args!r}")


def _consumer(
    assigned: set[TP], revoked_meanwhile: frozenset[TP] = frozenset()
) -> tuple[Any, _ConsumerThread]:
    app = BatchApp("t-seek-back", broker="kafka://127.0.0.1:9")
    consumer: Any = app.consumer  # created, never started: no broker is contacted
    thread = _ConsumerThread(assigned, revoked_meanwhile)
    consumer._thread = thread
    return consumer, thread


def test_seek_back_seeks_locally_to_the_committed_offset_or_the_beginning() -> None:
    committed, zero, unknown, revoked = (TP("t.in", p) for p in range(4))
    consumer, thread = _consumer({committed, zero, unknown})
    consumer._committed_offset[committed] = 120
    consumer._committed_offset[zero] = None  # faust keeps a commit at 0 as None
    consumer._read_offset[committed] = 180  # what the dropped fetch had delivered before
    epoch = consumer._seek_epoch
    fetched = [TopicPartition(tp.topic, tp.partition) for tp in (committed, zero, unknown, revoked)]

    asyncio.run(consumer._seek_back(fetched))

    assert thread.seeks == [(committed, 120), (zero, 0), (unknown, 0)]
    assert all(type(tp) is TP for tp, _ in thread.seeks)
    assert consumer._read_offset[committed] == 120
    assert consumer._read_offset[zero] is None
    assert consumer._read_offset[unknown] is None
    assert consumer._seek_epoch > epoch  # a fetch begun before the seek-back is stale


def test_seek_back_leaves_the_partitions_to_faust_while_the_flow_is_stopped() -> None:
    tp = TP("t.in", 0)
    consumer, thread = _consumer({tp})
    consumer._committed_offset[tp] = 5
    consumer.stop_flow()  # a rebalance: faust seeks every partition before it resumes

    asyncio.run(consumer._seek_back([TopicPartition("t.in", 0)]))

    assert thread.seeks == []


def test_seek_back_skips_a_partition_revoked_while_it_seeks() -> None:
    first, revoked, last = (TP("t.in", p) for p in range(3))
    consumer, thread = _consumer({first, revoked, last}, revoked_meanwhile=frozenset({revoked}))
    consumer._committed_offset[last] = 40

    fetched = [TopicPartition(tp.topic, tp.partition) for tp in (first, revoked, last)]
    asyncio.run(consumer._seek_back(fetched))

    assert thread.seeks == [(first, 0), (last, 40)]


def _record(tp: TP, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v", None, 1, 1, ())


def test_the_first_fetch_after_a_rebalance_is_not_stale() -> None:
    """The loop reads the generation and the seek epoch once the flow is back, after
    recovery's seeks: that fetch holds the changelog records recovery waits for. Read
    before the wait, it was dropped as stale, and a takeover's recovery waited for those
    records for good (test_failover with the batch ingress on)."""
    tp = TP("t.in", 0)
    seen: list[tuple[int, int]] = []

    async def scenario() -> tuple[Any, _ConsumerThread]:
        consumer, thread = _consumer({tp})  # in the loop: mode binds its events to it
        fetcher = SimpleNamespace(_stopped=asyncio.Event())

        async def getmany(**kwargs: Any) -> dict[TP, list[Any]]:  # active partitions, timeout
            return {tp: [_record(tp, 0)]}

        async def deliver(records: Any, active: Any, generation: int, epoch: int) -> None:
            seen.append((generation, epoch))
            fetcher._stopped.set()

        consumer._getmany = getmany
        consumer._deliver = deliver
        consumer.stop_flow()  # a rebalance is on when the loop comes round
        task = asyncio.ensure_future(consumer._drain_messages(fetcher))
        for _ in range(10):
            await asyncio.sleep(0)  # the loop now waits for the flow
        assert not seen
        consumer.app.consumer_generation_id = 7  # the new assignment, its partitions
        consumer._set_active_tps({tp})
        await consumer.seek(tp, 0)  # recovery's seeks
        consumer.resume_flow()
        await asyncio.wait_for(task, 30)
        return consumer, thread

    consumer, thread = asyncio.run(scenario())

    assert thread.seeks == [(tp, 0)]
    assert seen == [(7, consumer._seek_epoch)]


def test_a_stale_batch_leaves_the_fetchs_changelog_records_to_faust() -> None:
    """A batch whose fetch spanned a seek is dropped and sought back; the same fetch's
    changelog records are not: faust's per-record path takes them, as its own fetch loop
    would (no seek-back repositions a changelog: dropped, a standby table missed them)."""
    source, changelog = TP("t.in", 0), TP("app-table-changelog", 0)
    handed: list[tuple[str, int]] = []

    async def callback(message: Any) -> None:
        handed.append((message.topic, message.offset))

    async def scenario() -> _ConsumerThread:
        consumer, thread = _consumer({source, changelog})
        consumer.app.batch_topics.add(source.topic)
        consumer.app.flow_control.resume()  # as faust does once recovery is done
        consumer.callback = callback
        records = {
            source: [_record(source, 10)],
            changelog: [_record(changelog, o) for o in (3, 4)],
        }
        generation = consumer.app.consumer_generation_id
        stale_epoch = consumer._seek_epoch - 1  # a seek happened while the fetch was out
        await consumer._deliver(records, None, generation, stale_epoch)
        return thread

    thread = asyncio.run(scenario())

    assert thread.seeks == [(source, 0)]  # the batch: back to its committed offset
    assert handed == [(changelog.topic, 3), (changelog.topic, 4)]


def test_a_fetch_in_flight_when_faust_seeks_to_committed_is_stale_and_a_seek_back_waits() -> None:
    """faust's ``perform_seek`` learns the committed offsets only at its end, and the
    consumer thread moves the positions somewhere in between. A fetch issued while it runs
    is stale when it returns, and a seek-back meanwhile waits for it, then seeks to the
    committed offset it learned (not to 0, as it did with the offset still unknown)."""
    tp = TP("t.in", 1)

    async def scenario() -> tuple[Any, _ConsumerThread, int]:
        consumer, thread = _consumer({tp})
        release = asyncio.Event()

        async def seek_to_committed() -> dict[TP, int]:  # the OffsetFetch, in flight
            await release.wait()
            return {tp: 2000}

        consumer.seek_to_committed = seek_to_committed
        seeking = asyncio.ensure_future(consumer.perform_seek())
        await asyncio.sleep(0)
        epoch = consumer._seek_epoch  # what a fetch issued now reads
        back = asyncio.ensure_future(consumer._seek_back([TopicPartition(tp.topic, tp.partition)]))
        for _ in range(10):
            await asyncio.sleep(0)
        assert thread.seeks == []  # the committed offset is not known yet: it waits
        release.set()
        await asyncio.wait_for(asyncio.gather(seeking, back), 30)
        return consumer, thread, epoch

    consumer, thread, epoch = asyncio.run(scenario())

    assert consumer._stale(consumer.app.consumer_generation_id, epoch)
    assert consumer._committed_offset[tp] == 2000
    assert thread.seeks == [(tp, 2000)]
