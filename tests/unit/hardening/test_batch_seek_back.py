"""The batch ingress's fetch loop (streams.runtime.batching): after it drops a stale fetch,
it puts the partitions back to their committed offsets without waiting on the broker; a
fetch is stale if the generation or a seek changed while it was in flight, or if it
returns while faust seeks to the commits; the fetch's records of other topics
(changelogs) still take faust's own path; and a batch is acked only once its agent
handled it, and never committed past while it is not. The whole path
runs against the real broker in ``tests/integration/test_batch_ingress.py`` and
``test_failover.py``; this pins what each piece does.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.types import TP

from streams.runtime.batching import (
    ALIGN_SLACK_MS,
    PEER_CLOCK_SKEW_S,
    PEER_FORGET_S,
    PEER_FRESH_S,
    PEER_MIN_GAP_S,
    PEER_REFRESH_S,
    BatchApp,
    Peers,
    RecordBatch,
    Timeline,
    _batch_message,
    event_time_cuts,
    event_time_slices,
)


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

    def highwater(self, tp: TP) -> int | None:
        return None  # no fetch response has said (every partition reads as caught up)


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


# -- what faust's recovery does around its seek (perform_seek, then resume) ---------------


class _PositionedThread(_ConsumerThread):
    """The consumer thread with aiokafka's fetch positions: a fetch returns the next
    records of each partition from its position, and a seek moves it."""

    def __init__(self, positions: dict[TP, int]) -> None:
        super().__init__(set(positions))
        self.positions = dict(positions)

    def seek(self, tp: TP, offset: int) -> None:
        super().seek(tp, offset)
        self.positions[tp] = offset

    def fetch(self, n: int) -> dict[TP, list[Any]]:
        out = {
            tp: [_record(tp, o) for o in range(pos, pos + n)] for tp, pos in self.positions.items()
        }
        for tp in out:
            self.positions[tp] += n
        return out


async def _spin(turns: int = 30) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


def _subscribed(consumer: Any, topic_name: str = "t.in") -> Any:
    """The app as recovery leaves it (its flow on) with an agent's channel on the batch
    topic ``topic_name`` (acked), subscribed to every assigned partition."""
    app = consumer.app
    app.flow_control.resume()
    consumer.resume_flow()
    app.batch_topics.add(topic_name)
    channel = app.topic(topic_name, key_type=bytes, value_type=bytes).__aiter__()
    for tp in consumer._thread.assigned:
        app.topics._tp_index[tp].add(channel)  # as faust's conductor keeps it
    app.topics._acking_topics.add(topic_name)
    return channel


def _ingress(consumer: Any, topic_name: str) -> tuple[Any, dict[TP, list[int]], asyncio.Event]:
    """The batch topic's agent (concurrency 1) on faust's stream: the offsets it handled,
    and a gate that holds it inside its first batch until set."""
    app = consumer.app
    channel = _subscribed(consumer, topic_name)
    handled: dict[TP, list[int]] = {tp: [] for tp in consumer._thread.assigned}
    gate = asyncio.Event()

    async def agent() -> None:
        async for batch in app.stream(channel):
            await gate.wait()
            handled[batch.tp].extend(int(r.offset) for r in batch.records)

    return asyncio.ensure_future(agent()), handled, gate


def test_a_batch_fetched_while_faust_seeks_is_read_again_and_the_commit_follows() -> None:
    """faust's recovery seeks the source partitions to their commits (``perform_seek``,
    one OffsetFetch per partition, each position moved when its answer comes), then
    resumes the flow. A fetch returning in between used to deliver: with the agent busy
    on one partition's batch, the other's waited in its queue, the resume emptied the
    queue, and that partition's commit stuck below records handled after it (or, with no
    commit yet, passed records never handled). Now that fetch is dropped and read again
    from the commits, and the resume keeps what the queue holds."""
    p0, p1 = TP("t.in", 0), TP("t.in", 1)

    async def scenario() -> tuple[dict[TP, list[int]], dict[TP, int], int]:
        consumer, _ = _consumer(set())
        thread = consumer._thread = _PositionedThread({p0: 1000, p1: 2000})
        app = consumer.app
        app.consumer_generation_id = 7
        agent, handled, gate = _ingress(consumer, "t.in")  # the flow on before the seek
        answered = {p1: asyncio.Event(), p0: asyncio.Event()}

        async def seek_to_committed() -> dict[TP, int]:  # aiokafka: per partition
            for tp, committed in ((p1, 2000), (p0, 1000)):
                await answered[tp].wait()
                thread.seek(tp, committed)
            return {p0: 1000, p1: 2000}

        consumer.seek_to_committed = seek_to_committed

        async def on_recovery_completed() -> None:  # faust's Recovery, in this order
            await consumer.perform_seek()
            app.flow_control.resume()
            consumer.resume_flow()

        recovery = asyncio.ensure_future(on_recovery_completed())
        await _spin()
        answered[p1].set()
        await _spin()
        # A fetch issued and answered while the seek runs (aiokafka's prefetched records).
        generation, epoch = app.consumer_generation_id, consumer._seek_epoch
        fetching = asyncio.ensure_future(
            consumer._deliver(thread.fetch(100), None, generation, epoch)
        )
        await _spin()
        answered[p0].set()
        await asyncio.wait_for(asyncio.gather(recovery, fetching), 30)
        queued_after_seek = sum(ch.queue.qsize() for ch in app.topics._tp_index[p1])
        for _ in range(3):  # the fetches that follow, each handled
            generation, epoch = app.consumer_generation_id, consumer._seek_epoch
            await consumer._deliver(thread.fetch(100), None, generation, epoch)
            gate.set()
            await _spin(60)
        commits = consumer._filter_committable_offsets([p0, p1])
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        return handled, commits, queued_after_seek

    handled, commits, queued_after_seek = asyncio.run(scenario())

    assert queued_after_seek == 0  # the fetch during the seek was dropped, not queued
    for tp, committed in ((p0, 1000), (p1, 2000)):
        assert handled[tp] == list(range(committed, committed + 300))  # read again from the commit
        assert commits[tp] == committed + 300


def test_resuming_a_flow_that_is_on_keeps_the_queued_batches() -> None:
    """faust's recovery resumes its flow control several times per assignment; mode's
    resume empties every stream queue each time. Only a resume after a suspension (a
    rebalance) may drop what the queues hold."""

    async def scenario() -> tuple[int, int]:
        consumer, _ = _consumer({TP("t.in", 0)})
        app = consumer.app
        channel = app.topic("t.in").__aiter__()
        app.flow_control.resume()
        channel.queue.put_nowait("a batch")
        app.flow_control.resume()  # already on: kept
        kept = channel.queue.qsize()
        app.flow_control.suspend()  # a rebalance
        app.flow_control.resume()
        return kept, channel.queue.qsize()

    kept, after_rebalance = asyncio.run(scenario())

    assert (kept, after_rebalance) == (1, 0)


def _acked_batch(consumer: Any, tp: TP, first: int, last: int) -> bool:
    """Ack a batch of ``first..last`` as faust's stream does once its agent handled it."""
    batch = RecordBatch(tp, [_record(tp, o) for o in range(first, last + 1)])
    message = _batch_message(batch, consumer.app.consumer_generation_id)
    message.tracked = True  # the stream took it
    return bool(consumer.ack(message))


@pytest.mark.parametrize("seek_ahead", [False, True], ids=["", "sought-ahead-meanwhile"])
def test_a_partition_with_no_commit_is_not_committed_past_its_unhandled_first_batch(
    seek_ahead: bool,
) -> None:
    """faust checks the head of the acked offsets only against a commit: with none yet, a
    first batch never handled (its agent raised) was committed past as soon as the next
    was acked. A seek ahead of it meanwhile (a partition paused while its fetch was out is
    sought to that fetch's first record) does not forget it."""
    tp = TP("t.in", 0)

    async def scenario() -> tuple[dict[TP, int], dict[TP, int]]:
        consumer, _ = _consumer({tp})
        _subscribed(consumer)
        for first in (0, 100):  # two fetches delivered; the first batch is never handled
            if first and seek_ahead:
                await consumer.seek(tp, first)
            generation, epoch = consumer.app.consumer_generation_id, consumer._seek_epoch
            records = {tp: [_record(tp, o) for o in range(first, first + 100)]}
            await consumer._deliver(records, None, generation, epoch)
        assert _acked_batch(consumer, tp, 100, 199)
        before = consumer._filter_committable_offsets([tp])
        assert _acked_batch(consumer, tp, 0, 99)  # read again and handled
        return before, consumer._filter_committable_offsets([tp])

    before, after = asyncio.run(scenario())

    assert before == {}
    assert after == {tp: 200}


def test_a_batch_its_agent_raised_in_is_not_acked_when_faust_closes_the_stream() -> None:
    """faust's stream acks the event it last yielded when its iterator is closed, which
    is where an agent that raised leaves it: that batch was acked and committed past,
    never handled. Now it stays unacked, and the commit stops below it."""
    tp = TP("t.in", 0)

    async def scenario() -> tuple[list[int], dict[TP, int], int]:
        consumer, _ = _consumer({tp})
        app = consumer.app
        app.consumer_generation_id = 3
        stream = app.stream(_subscribed(consumer))

        taken: list[Any] = []  # held: faust tracks its messages in a weak set

        async def agent() -> None:
            async for _batch in stream:
                taken.append(stream.current_event.message)
                raise RuntimeError("the handler failed")

        task = asyncio.ensure_future(agent())
        records = {tp: [_record(tp, o) for o in range(0, 100)]}
        await consumer._deliver(records, None, app.consumer_generation_id, consumer._seek_epoch)
        await asyncio.gather(task, return_exceptions=True)
        for iterator in list(stream._active_agens):  # what faust does as the stream stops
            await iterator.aclose()
        waited = sum(m in consumer._unacked_messages for m in taken)
        assert len(taken) == 1
        return list(consumer._acked[tp]), consumer._filter_committable_offsets([tp]), waited

    acked, commits, waited = asyncio.run(scenario())

    assert acked == []
    assert commits == {}
    assert waited == 0  # nothing left for faust to wait for at the next rebalance


def test_a_batch_no_stream_took_is_not_acked() -> None:
    """faust's stream tracks each event it takes and acks those it skips; a batch event
    it never took (one skipped while the flow was stopped) marks nothing acked."""
    tp = TP("t.in", 0)
    consumer, _ = _consumer({tp})
    consumer.app.topics._acking_topics.add(tp.topic)
    batch = RecordBatch(tp, [_record(tp, 5)])
    untracked = _batch_message(batch, consumer.app.consumer_generation_id)

    assert not consumer.ack(untracked)
    assert not consumer._acked[tp]
    assert _acked_batch(consumer, tp, 5, 5)  # the same batch, taken and handled
    assert consumer._acked[tp] == [5]


def test_per_record_source_records_fetched_while_faust_seeks_are_read_again() -> None:
    """The internal topics between the agents take faust's per-record path. Their records
    fetched while faust seeks to the commits are dropped and read again from the commits
    it learns, as batches are; a changelog's are recovery's and go on to faust."""
    source, changelog = TP("t-seek-back-by-model", 0), TP("t-seek-back-counts-changelog", 0)
    handed: list[tuple[str, int]] = []

    async def callback(message: Any) -> None:
        handed.append((message.topic, message.offset))

    async def scenario() -> _ConsumerThread:
        consumer, thread = _consumer({source, changelog})
        consumer.app.Table("counts", default=int)
        consumer.app.flow_control.resume()
        consumer.resume_flow()
        consumer.callback = callback
        release = asyncio.Event()

        async def seek_to_committed() -> dict[TP, int]:
            await release.wait()
            return {source: 40}

        consumer.seek_to_committed = seek_to_committed
        seeking = asyncio.ensure_future(consumer.perform_seek())
        await asyncio.sleep(0)
        records = {
            source: [_record(source, o) for o in (40, 41)],
            changelog: [_record(changelog, o) for o in (3, 4)],
        }
        generation, epoch = consumer.app.consumer_generation_id, consumer._seek_epoch
        delivering = asyncio.ensure_future(consumer._deliver(records, None, generation, epoch))
        for _ in range(10):
            await asyncio.sleep(0)
        release.set()
        await asyncio.wait_for(asyncio.gather(seeking, delivering), 30)
        return thread

    thread = asyncio.run(scenario())

    assert thread.seeks == [(source, 40)]
    assert handed == [(changelog.topic, 3), (changelog.topic, 4)]


def test_a_message_of_an_earlier_generation_is_not_acked() -> None:
    """faust's stream acks the events it skips after a rebalance; acked into the new
    generation, a per-record event would let the commit pass records never handled, as a
    batch would."""
    tp = TP("t-seek-back-by-model", 0)
    consumer, _ = _consumer({tp})
    consumer.app.topics._acking_topics.add(tp.topic)
    consumer.app.consumer_generation_id = 5
    skipped, handled = (consumer._to_message(tp, _record(tp, o)) for o in (7, 8))
    skipped.generation_id = 4

    assert not consumer.ack(skipped)
    assert consumer.ack(handled)
    assert consumer._acked[tp] == [8]


@pytest.mark.parametrize("first_handled", [False, True], ids=["abandoned", "handled"])
def test_a_revocation_does_not_commit_past_a_batch_never_handled(first_handled: bool) -> None:
    """faust forgets a revoked partition's commit and acks, then commits what its agents
    ack while it waits for them: with no commit to check that against, it committed past
    a batch below that was never handled. Handled below, it commits to the end."""
    tp = TP("t.in", 0)

    async def scenario() -> dict[TP, int]:
        consumer, _ = _consumer({tp})
        app = consumer.app
        _subscribed(consumer)
        consumer._committed_offset[tp] = 1000
        for first in (1000, 1100):
            records = {tp: [_record(tp, o) for o in range(first, first + 100)]}
            await consumer._deliver(records, None, app.consumer_generation_id, consumer._seek_epoch)
        if first_handled:
            assert _acked_batch(consumer, tp, 1000, 1099)
        assert _acked_batch(consumer, tp, 1100, 1199)
        committed_meanwhile: dict[TP, int] = {}

        async def waiting_for_the_agents(revoked: set[TP]) -> None:  # faust's app handler
            assert _acked_batch(consumer, tp, 1200, 1299)  # the batch in flight
            committed_meanwhile.update(consumer._filter_committable_offsets([tp]))

        consumer._on_partitions_revoked = waiting_for_the_agents
        await consumer.on_partitions_revoked({tp})
        return committed_meanwhile

    committed = asyncio.run(scenario())

    assert committed == ({tp: 1300} if first_handled else {})


# -- partitions draining a backlog move together in event time ----------------------------

MIN = 60_000


def _timed(tp: TP, offset: int, minute: float) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        tp.topic, tp.partition, offset, int(minute * MIN), 0, b"k", b"v", None, 1, 1, ()
    )


def test_a_batch_ahead_of_the_others_in_event_time_is_cut_at_their_horizon() -> None:
    outputs, feedback, live = TP("t.out", 0), TP("t.fb", 0), TP("t.in", 0)
    fetched = [
        (outputs, [_timed(outputs, o, o) for o in range(20)]),  # minutes 0-19, more to come
        (feedback, [_timed(feedback, o, 5 * o) for o in range(20)]),  # minutes 0-95
        (live, [_timed(live, o, 200 + o) for o in range(3)]),  # caught up: bounds nothing
    ]
    behind = {outputs: True, feedback: True, live: False}

    cuts = event_time_cuts(fetched, lambda tp, offset: behind[tp])

    horizon = 19 * MIN + ALIGN_SLACK_MS
    assert cuts == {outputs: 20, feedback: 5, live: 0}  # feedback to minute 20, live waits
    assert (
        fetched[1][1][cuts[feedback] - 1].timestamp
        <= horizon
        < fetched[1][1][cuts[feedback]].timestamp
    )


def test_the_partition_furthest_behind_is_delivered_whole_and_nothing_is_cut_at_the_live_edge() -> (
    None
):
    late, other = TP("t.out", 0), TP("t.out", 1)
    # A producer's late record early in the batch: the partition still defines the horizon.
    late_recs = [_timed(late, 0, 50), *(_timed(late, o, o) for o in range(1, 10))]
    other_recs = [_timed(other, o, o) for o in range(40)]
    fetched = [(late, late_recs), (other, other_recs)]

    assert event_time_cuts(fetched, lambda tp, offset: True) == {late: 10, other: 11}
    assert event_time_cuts(fetched, lambda tp, offset: False) == {late: 10, other: 40}


def test_a_fetch_is_delivered_minute_by_minute_across_its_partitions() -> None:
    a, b = TP("t.out", 0), TP("t.fb", 0)
    # b's record at offset 2 came late (minute 0.5): it stays in its run, in offset order.
    fetched = [
        (a, [_timed(a, o, 0.4 * o) for o in range(8)]),  # minutes 0-2.8
        (b, [_timed(b, 0, 0.2), _timed(b, 1, 1.1), _timed(b, 2, 0.5), _timed(b, 3, 2.5)]),
    ]

    runs = [(tp, [int(r.offset) for r in run]) for tp, run in event_time_slices(fetched)]

    # each round starts at its earliest head: minutes 0-1, 1.1-2.1, 2.4-3.4
    assert runs == [(a, [0, 1, 2]), (b, [0]), (b, [1, 2]), (a, [3, 4, 5]), (a, [6, 7]), (b, [3])]


class _BacklogThread(_PositionedThread):
    """Positions over finite partitions whose records are ``minutes_per_record`` apart in
    event time; ``highwater`` as a fetch response reports it; a fetch call draws as
    aiokafka's ``getmany`` does, partition by partition up to a number of records in all."""

    def __init__(self, spacing: dict[TP, float], end: int) -> None:
        super().__init__(dict.fromkeys(spacing, 0))
        self.spacing, self.end = spacing, end

    def highwater(self, tp: TP) -> int | None:
        return self.end

    def fetch(self, n: int, skip: Any = ()) -> dict[TP, list[Any]]:
        out = {}
        room = n
        for tp, pos in self.positions.items():
            upto = min(pos + room, self.end)
            if tp in skip or upto <= pos:
                continue
            out[tp] = [_timed(tp, o, o * self.spacing[tp]) for o in range(pos, upto)]
            self.positions[tp] = upto
            room -= upto - pos
        return out

    def _ensure_consumer(self) -> Any:
        """What the fetch loop reads of aiokafka's subscription state (``_pending``)."""
        states = {
            tp: SimpleNamespace(
                paused=False, has_valid_position=True, position=pos, highwater=self.end
            )
            for tp, pos in self.positions.items()
        }
        assignment = SimpleNamespace(state_value=states.get)
        return SimpleNamespace(
            _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
        )


@pytest.mark.parametrize("per_call", [50, 25])
def test_a_backlog_drains_in_step_in_event_time_and_every_record_once(per_call: int) -> None:
    """Two partitions of a backlog, one spanning five times the event time of the other
    per record (feedback beside outputs), fetched ``per_call`` records at a time in all:
    at 25 a call draws one partition alone (aiokafka's ``getmany`` takes partition after
    partition up to its ``max_records``). Delivered as fetched, the fast one ran 100
    minutes ahead after one call; cut at the standing of every partition, the rest held
    and not drawn again meanwhile, no batch runs more than the slack past what the other
    has delivered nor goes back in time by more, every record is fetched and handled
    once, in order, with the commits at the end, and nothing is sought."""
    slow, fast = TP("t.in", 0), TP("t.in", 1)
    handed: list[tuple[TP, float, float]] = []  # partition, first and last minute
    fetched: list[int] = []

    async def scenario() -> tuple[dict[TP, list[int]], dict[TP, int], _BacklogThread]:
        consumer, _ = _consumer(set())
        thread = consumer._thread = _BacklogThread({slow: 1.0, fast: 5.0}, end=200)
        consumer._timeline.assign([slow, fast])  # as after faust's seek to the commits
        app = consumer.app
        agent, handled, gate = _ingress(consumer, "t.in")
        gate.set()
        original = consumer._deliver_batch

        async def deliver_batch(tp: TP, recs: list[Any], generation: int, epoch: int) -> bool:
            handed.append((tp, recs[0].timestamp / MIN, recs[-1].timestamp / MIN))
            return bool(await original(tp, recs, generation, epoch))

        consumer._deliver_batch = deliver_batch
        for _ in range(100):
            records = thread.fetch(per_call, skip=consumer._timeline.held())
            fetched.extend(len(recs) for recs in records.values())
            if not records and not consumer._timeline.held():
                break
            generation, epoch = app.consumer_generation_id, consumer._seek_epoch
            await consumer._deliver(records, None, generation, epoch)
            await _spin(60)
        commits = consumer._filter_committable_offsets([slow, fast])
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        return handled, commits, thread

    handled, commits, thread = asyncio.run(scenario())

    assert handled == {slow: list(range(200)), fast: list(range(200))}
    assert commits == {slow: 200, fast: 200}
    assert sum(fetched) == 400
    assert thread.seeks == []
    slack = ALIGN_SLACK_MS / MIN
    delivered_to = {slow: -1.0, fast: -1.0}
    for tp, first, last in handed:
        other = fast if tp == slow else slow
        if delivered_to[other] < (199 if other == slow else 995):  # the other still behind
            assert last <= delivered_to[other] + per_call * 1.0 + slack
        # and no batch goes back in time by more than the slice it was cut in
        assert first >= max(delivered_to.values()) - slack
        delivered_to[tp] = last


def _offsets(runs: list[tuple[TP, Any]]) -> dict[TP, list[int]]:
    """The offsets each partition's runs deliver, in the order delivered."""
    out: dict[TP, list[int]] = {}
    for tp, run in runs:
        out.setdefault(tp, []).extend(int(r.offset) for r in run)
    return out


def test_a_fetch_call_of_one_partition_waits_for_the_partitions_it_did_not_draw() -> None:
    """A call holding one partition delivers nothing while another partition with records
    to read stands at an unknown time, and up to that partition's time (plus the slack)
    once it is known; what is cut is held for the next call, not read again."""
    outputs, feedback = TP("t.out", 0), TP("t.fb", 0)
    timeline: Timeline[TP] = Timeline(clock=lambda: 0.0)
    timeline.assign([outputs, feedback])
    fb = [_timed(feedback, o, 5 * o) for o in range(20)]  # minutes 0-95
    out = [_timed(outputs, o, o) for o in range(20)]  # minutes 0-19

    def behind(tp: TP, offset: int) -> bool:
        return True

    assert timeline.take([(feedback, fb)], behind, lambda tp: True) == []
    assert timeline.held() == {feedback: 0}

    runs = timeline.take([(outputs, out)], behind, lambda tp: True)

    # feedback to minute 20: the outputs' last (19) plus the slack
    assert _offsets(runs) == {feedback: [0, 1, 2, 3, 4], outputs: list(range(20))}
    assert timeline.held() == {feedback: 5}
    runs = timeline.take([(outputs, [_timed(outputs, 20, 40)])], behind, lambda tp: True)
    assert _offsets(runs) == {feedback: [5, 6, 7, 8], outputs: [20]}  # minutes 25-40
    assert timeline.held() == {feedback: 9}


def test_a_partition_holds_the_others_back_only_while_it_is_pending_and_fetched_lately() -> None:
    """A partition holds nothing back once it has nothing left to read or is paused (not
    pending), nor once the consumer has not fetched it for ``wait_s`` of fetching time
    (its leader unreachable): the others must not stop for it."""
    a, b = TP("t.out", 0), TP("t.fb", 0)
    recs = [_timed(a, o, o) for o in range(30)]
    now = [0.0]
    timeline: Timeline[TP] = Timeline(wait_s=10.0, clock=lambda: now[0])
    timeline.assign([a, b])

    whole = {a: list(range(30))}
    assert _offsets(timeline.take([(a, recs)], lambda tp, offset: True, lambda tp: False)) == whole

    timeline.assign([a, b])
    assert timeline.take([(a, recs)], lambda tp, offset: True, lambda tp: True) == []
    now[0] = 10.5
    assert _offsets(timeline.take([], lambda tp, offset: True, lambda tp: True)) == whole


def test_a_fetch_call_draws_nothing_from_partitions_with_records_held() -> None:
    """faust's fetch call skips the partitions whose records are held (their next records
    stay in aiokafka's buffer), and makes no call at all when every active one is held."""
    held, other = TP("t.in", 0), TP("t.in", 1)
    asked: list[set[TP]] = []

    async def scenario() -> list[Any]:
        consumer, thread = _consumer({held, other})

        async def getmany(active: set[TP], _: float) -> dict[TP, list[Any]]:
            asked.append(set(active))
            return {}

        thread.getmany = getmany
        consumer._timeline.assign([held, other])
        consumer._timeline.take([(held, [_timed(held, 0, 0)])], lambda tp, o: True, lambda tp: True)
        return [
            await consumer._getmany({held, other}, 0.0),
            await consumer._getmany({held}, 0.0),
        ]

    assert asyncio.run(scenario()) == [{}, {}]
    assert asked == [{other}]


def test_a_partition_read_later_does_not_make_a_stale_fetch_fresh() -> None:
    """A fetch's partition whose records wait (paused while the fetch was out, or ahead in
    event time) is sought back, and the rest of the fetch is delivered under the new seek
    epoch, unless the fetch was stale already: that epoch must not make it fresh."""
    paused, other = TP("t.in", 0), TP("t.in", 1)

    async def scenario() -> tuple[int, list[tuple[TP, int]]]:
        consumer, thread = _consumer({paused, other})
        channel = _subscribed(consumer)
        records = {
            paused: [_record(paused, o) for o in range(10, 20)],
            other: [_record(other, o) for o in range(30, 40)],
        }
        generation = consumer.app.consumer_generation_id
        stale_epoch = consumer._seek_epoch - 1  # faust sought while the fetch was out
        await consumer._deliver(records, {other}, generation, stale_epoch)
        return channel.queue.qsize(), thread.seeks

    queued, seeks = asyncio.run(scenario())

    assert queued == 0  # nothing of the stale fetch delivered
    assert seeks == [(paused, 10), (other, 0)]  # read later; back to its commit


def test_the_other_workers_watermarks_hold_a_worker_back_while_fresh() -> None:
    """Another worker still delivering minute 10 holds this worker's partitions at minute
    11 (plus the slack); its own record, a worker at the live edge, a dead worker's record
    in the topic's history, a watermark not refreshed (its worker died) and a tombstone
    hold nothing back; a malformed record is skipped."""
    now = [1000.0]
    me, other = Peers("me", "w", clock=lambda: now[0]), Peers("b", "w", clock=lambda: now[0])
    history = 1000.0 - PEER_FRESH_S - PEER_CLOCK_SKEW_S - 1.0
    me.fold([(b"died", json.dumps({"low_ms": 0, "sent": 990.0}).encode())])
    now[0] += PEER_FRESH_S + 1.0  # "died" is not refreshed
    me.fold(
        [
            other.record(10 * MIN),
            me.record(0),  # its own: ignored
            (b"old", json.dumps({"low_ms": 0, "sent": history}).encode()),  # history
            (b"live", json.dumps({"low_ms": None, "sent": 1000.0}).encode()),  # at the live edge
            (b"bad", b"{"),
        ]
    )

    assert me.floor() == 10 * MIN
    a = TP("t.in", 0)
    timeline: Timeline[TP] = Timeline(clock=lambda: 0.0)
    runs = timeline.take(
        [(a, [_timed(a, o, o) for o in range(30)])],
        lambda tp, offset: False,
        lambda tp: False,
        floor=me.floor(),
    )
    assert _offsets(runs) == {a: list(range(12))}  # to minute 11: the floor plus the slack
    assert timeline.held() == {a: 12}
    assert timeline.low(lambda tp: False) == 12 * MIN  # what this worker publishes

    me.fold([(b"b", None)])  # a tombstone
    assert me.floor() is None
    me.fold([other.record(10 * MIN)])
    now[0] += PEER_FRESH_S + 1.0
    assert me.floor() is None  # not refreshed: stale


@pytest.mark.parametrize("skew_s", [-120.0, 120.0])
def test_watermarks_hold_whatever_the_hosts_clocks_say(skew_s: float) -> None:
    """Freshness is judged by arrival on the reader's clock: a worker whose clock runs two
    minutes ahead of or behind this one's holds it back while its records keep coming,
    and not once they stop."""
    now = [1000.0]
    me = Peers("me", "w", clock=lambda: now[0])
    other = Peers("b", "w", clock=lambda: now[0] + skew_s)
    for _ in range(5):
        me.fold([other.record(10 * MIN)])
        assert me.floor() == 10 * MIN
        now[0] += PEER_REFRESH_S
    now[0] += PEER_FRESH_S
    assert me.floor() is None


def test_a_worker_publishes_a_moving_watermark_promptly_and_a_still_one_to_stay_fresh() -> None:
    peers = Peers("me", "w")

    assert peers.due(5, 0.0)  # the first
    peers.mark(5, 0.0)
    assert not peers.due(6, 0.01)  # moved, but within the minimum gap
    assert peers.due(6, PEER_MIN_GAP_S)
    assert not peers.due(5, 1.0)  # unchanged: not yet
    assert peers.due(5, PEER_REFRESH_S)  # unchanged: refreshed
    peers.mark(None, 10.0)
    assert not peers.due(None, 100.0)  # nothing left: said once


def test_a_worker_that_stops_cleanly_releases_the_others_at_once() -> None:
    """Its farewell is a tombstone of its record: the others stop waiting on it without
    the :data:`PEER_FRESH_S` it would take to go stale, and it publishes nothing after
    (the app's timer outlives the farewell by a moment)."""
    now = [1000.0]
    leaving, staying = Peers("a", "w", clock=lambda: now[0]), Peers("b", "w", clock=lambda: now[0])
    staying.fold([leaving.record(10 * MIN)])
    assert staying.floor() == 10 * MIN

    staying.fold([leaving.farewell()])
    assert staying.floor() is None
    assert not leaving.due(12 * MIN, 1e9)
    assert not leaving.due(None, 1e9)


def test_a_dead_workers_record_is_deleted_once_an_hour_old() -> None:
    """A worker killed without its farewell leaves its record on the compacted topic; every
    restart adds a key. A worker that reads a record older than :data:`PEER_FORGET_S`
    sends its tombstone, once, and keeps the others'."""
    now = [1000.0]
    me = Peers("me", "w", clock=lambda: now[0])
    me.fold(
        [
            (b"dead", json.dumps({"low_ms": 5, "sent": 1000.0 - PEER_FORGET_S - 1}).encode()),
            (b"idle", json.dumps({"low_ms": None, "sent": 1000.0 - PEER_FORGET_S + 60}).encode()),
            Peers("live", "w", clock=lambda: now[0]).record(7),
        ]
    )
    assert me.expired() == [(b"dead", None)]
    assert me.expired() == []
    now[0] += 61.0
    assert me.expired() == [(b"idle", None)]  # at the live edge, silent since: deleted too
    assert me.floor() is None  # "live" went stale long ago (not refreshed in this test)
