"""The batch ingress's seek-back (streams.runtime.batching): after it drops a stale fetch,
the fetch loop puts the partitions back to their committed offsets without waiting on the
broker. The whole path runs against the real broker in
``tests/integration/test_batch_ingress.py``; this pins what the seek-back itself does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
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
