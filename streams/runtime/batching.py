"""Batch ingress for faust: an agent whose stream items are whole fetched batches.

faust turns every Kafka record into a Message and an Event and hands each one through
``Service.wait_first`` (two asyncio tasks) and a queue: a no-op agent reaches a few
percent of a plain aiokafka consumer, whatever faust's own knobs say (bench/throughput.py).
Here the app stays a faust app -- agents, changelog tables, faust's consumer group,
assignor, recovery and commit loop -- but for the topics registered with
:meth:`BatchApp.batch_topic` the consumer hands the agent *one event per partition per
fetch*, whose value is a :class:`RecordBatch` (the partition's records, in offset order).
Every other topic (internal topics, changelogs during recovery) takes faust's own
per-record path unchanged.

How at-least-once is kept (each point is a way the per-record path can lose records):

* A batch is one :class:`BatchMessage` carrying its first and last offset. When the agent
  is done with the batch, faust's stream acks the event, and :meth:`BatchConsumer.ack`
  marks every offset of the batch as acked under faust's ``ack_lock``, once per batch, in
  the same bookkeeping faust's commit loop reads (``_acked``, ``_acked_index``). Streams
  over batch topics iterate on faust's Python path (:class:`BatchStream`): its Cython
  iterator would ack the batch's last offset alone.
* An ack is refused (the batch will be read again) when the batch belongs to an earlier
  consumer generation: faust's stream *acks* events it skips after a rebalance, and a
  skipped batch acked into the new generation would let the commit pass records that were
  never processed.
* A fetch that was in flight while faust re-seeked (a rebalance, recovery's seek to the
  committed offsets) or while the generation changed is dropped, and the partitions are
  sought back to their committed offsets: otherwise faust's gap logic would take the jump
  from the committed offset to the stale fetch's first offset as a gap and ack it.
* A fetch that returns while faust seeks the partitions to their commits after an
  assignment (``perform_seek``) is dropped the same way. (faust's recovery resumes the
  flow right after that seek, and mode's resume emptied the agents' queues of batches
  never processed while their partitions read on; the app's flow control now keeps them:
  :class:`~streams.runtime.draining.KeepingFlowControl`.)
* A partition with no commit yet is not committed past its first delivered offset until
  that offset is acked (:meth:`BatchConsumer._new_offset`): faust checks the head of the
  acked offsets only against a commit.
* Records of a partition that is no longer active when its fetch returns are dropped and
  the partition sought back to the first dropped offset (faust drops them without a seek).
* Agents over batch topics must run with ``concurrency=1`` (faust's ``_new_offset``
  commits the first run of consecutive acked offsets; out-of-order batch acks only delay
  commits, but one agent per topic keeps each partition in order).

Order: a fetch brings each partition's next records up to a byte limit, hours of event
time when the worker is behind, and one fetch call draws at most
``broker_max_poll_records`` of them, often one partition alone. Each call is cut where
the partition furthest behind stands in record time, among the call's partitions and
every other assigned one with records to read (:class:`Timeline`,
:func:`event_time_cuts`), and delivered minute by minute across the partitions
(:func:`event_time_slices`), so that the detectors meet a backlog's events in about the
order they happened. What a cut leaves is held for a later call (never delivered, so
never acked, meanwhile) and its partition is not drawn from until it is delivered; any
seek drops what a partition holds. Several workers hold to each other's low watermarks
as well (:class:`Peers`).

Policy when the agent body raises on a batch (or is cancelled inside it): faust restarts
the agent and the batch stays unacked, so its partition's commits stop there until the
partition is read again (at the next rebalance or restart), when the batch is processed
again. Three things keep that true: faust's stream, which acks the event it yielded as it
closes, marks the batch abandoned first (:class:`BatchStream`); a partition with no commit
yet is held at its first delivered offset (above); and a revocation, whose commit faust
makes after forgetting the partition's commit, is held where that commit stood
(:meth:`BatchConsumer.on_partitions_revoked`). The ingress agent catches handler errors
itself and dead-letters only the records that still fail one by one
(:mod:`streams.runtime.ingress`).

Table writes made while handling a batch go to the source partition's changelog: the
batch event is faust's current event while the agent handles it, and its message's offset
is the batch's last offset, so faust publishes the attached changelog writes before it
commits past the batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Generic, TypeVar, cast

import faust
from aiokafka.errors import IllegalStateError
from faust.types import TP
from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import notify

from streams.runtime.draining import DrainingApp
from streams.runtime.fetch_guard import GuardedConsumer, GuardedTransport, reread_offset

log = logging.getLogger(__name__)

_P = TypeVar("_P", bound=Hashable)  # a partition (TP), or what a bench stands in for one

MAX_QUEUED_BATCHES: Final = 4
"""Batches waiting in an agent's stream before the fetch loop waits (memory bound)."""
ALIGN_SLACK_MS: Final = 60_000
"""How far in record time (ms) a partition may run ahead of the partition furthest behind
while a backlog drains (:func:`event_time_cuts`): the 60-s grid the engines tick on."""
WAIT_LIMIT_S: Final = 10.0
"""How long (s) a partition that has records left but is not fetched may hold the others
back (:class:`Timeline`): a healthy consumer fetches it again within a second."""
PEER_FRESH_S: Final = 15.0
"""How long (s) another worker's watermark holds this worker back after it arrived
(:class:`Peers`): workers publish theirs after each fetch call while it moves (at most
every :data:`PEER_MIN_GAP_S`), and at least every :data:`PEER_REFRESH_S`."""
PEER_CLOCK_SKEW_S: Final = 300.0
"""How far (s) hosts' clocks may differ for the watermarks to work as designed: a record
sent longer ago than :data:`PEER_FRESH_S` plus this, by its sender's clock, is a dead
worker's that a starting worker reads in the topic's history, and holds nothing back."""
PEER_REFRESH_S: Final = 5.0
"""A worker republishes an unchanged watermark this often (s), to keep it fresh."""
PEER_MIN_GAP_S: Final = 0.05
"""A worker publishes a moving watermark at most this often (s)."""
PEER_FORGET_S: Final = 3600.0
"""A watermark record this old (s of wall time) is deleted from the compacted topic by
the workers that read it (a tombstone, :meth:`Peers.expired`): its worker died without
its farewell, and every restart adds a key the topic would otherwise keep for ever."""
HELD_POLL_S: Final = 0.05
"""How long (s) a fetch call waits for records while records are held back: a held
partition waits for the others' records or watermarks, which come within that."""
_QUEUE_POLL_S: Final = 0.002


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """One partition's records from one fetch, in offset order (aiokafka ConsumerRecords:
    ``topic``, ``partition``, ``offset``, ``timestamp``, ``key``, ``value``)."""

    tp: TP
    records: Sequence[Any]

    @property
    def first_offset(self) -> int:
        return int(self.records[0].offset)

    @property
    def last_offset(self) -> int:
        return int(self.records[-1].offset)

    def __len__(self) -> int:
        return len(self.records)


class BatchMessage(ConsumerMessage):
    """A faust message standing for a whole :class:`RecordBatch`: ``offset`` is its last
    offset (what faust's attachments and commit bookkeeping key on), ``first_offset`` its
    first. ``abandoned``: its agent stopped inside it (raised or was cancelled), so it is
    not acked although faust's stream acks it as it closes (:class:`BatchStream`)."""

    __slots__ = ("abandoned", "first_offset")

    first_offset: int
    abandoned: bool


def event_time_cuts(
    batches: Sequence[tuple[_P, Sequence[Any]]],
    behind: Callable[[_P, int], bool],
    slack_ms: int = ALIGN_SLACK_MS,
    waiting: Mapping[_P, int | None] | None = None,
    floor: int | None = None,
) -> dict[_P, int]:
    """How many of each partition's fetched records to deliver now, so that partitions
    draining a backlog move together in record time (the event time, where producers set
    it: the SDK does).

    A fetch brings each partition's next records up to a byte limit; in a backlog that is
    hours of event time, and more of it in a topic of small records (feedback) than in one
    of large records (outputs). Delivered whole, one partition after another, the
    detectors saw each key's events hours out of order: the engine's clock jumped with the
    fastest partition, votes ran ahead of the outputs they join, and an alarm fired on an
    event older than the change that caused it (docs/investigation.md). So each batch is
    cut before its first record later than the *horizon*: the earliest last-record time
    among the fetched partitions still ``behind`` (more records after ``offset``, the last
    one fetched), and among the partitions ``waiting`` outside this fetch (the record time
    each stands at, :class:`Timeline`), plus ``slack_ms``. The rest waits for a later
    call (:meth:`Timeline.take` holds it). A partition waiting at an unknown time
    (``None``: not read since it was assigned) holds every batch back. When the horizon
    comes from this fetch, the partition that defines it is delivered whole, so the fetch
    makes progress; when it comes from a waiting partition, that partition's own next
    fetch does. ``floor``: the lowest record time the
    other workers still have to deliver (:class:`Peers`), which bounds the horizon too.
    Partitions at the live edge bound nothing (their last record is the newest there is),
    so a worker that keeps up delivers everything as fetched."""
    horizons = [int(recs[-1].timestamp) for tp, recs in batches if behind(tp, int(recs[-1].offset))]
    if floor is not None:
        horizons.append(floor)
    for at in (waiting or {}).values():
        if at is None:
            return {tp: 0 for tp, _ in batches}
        horizons.append(at)
    if not horizons:
        return {tp: len(recs) for tp, recs in batches}
    horizon = min(horizons) + slack_ms
    return {
        tp: len(recs) if int(recs[-1].timestamp) <= horizon else _until(recs, 0, horizon)
        for tp, recs in batches
    }


@dataclass(slots=True)
class _Standing:
    at_ms: int | None
    """The record time of the partition's next record, as far as known: its first record
    not delivered from the last fetch that cut it, else its last delivered record's time
    (a lower bound); None before its first fetch since it was assigned."""
    seen: float
    """When (the timeline's clock) it was last fetched, or assigned."""


class Timeline(Generic[_P]):
    """The fetch loop's order across fetch calls: where each partition of the batch topics
    stands in record time, and the records fetched ahead of the others, held back.

    One fetch call returns at most ``broker_max_poll_records`` records, drawn partition by
    partition from what the consumer has buffered (aiokafka's ``getmany``): in a backlog a
    call often holds one or two partitions, hours of event time each. Cut against the
    partitions of that call alone, a worker restarted behind its input still ran one
    partition hours ahead of the others (docs/validation.md, "Stop 62"). So every assigned
    partition that still has records to read holds the others back at the time it stands
    at, whether or not the call holds it, for at most ``wait_s`` of ``clock`` since it was
    last fetched: a partition that the consumer cannot fetch (its leader unreachable)
    must not stop the others for longer. The worker's clock counts the seconds spent
    waiting for fetches, not those spent handing batches on: a slow detect stage does
    not age a partition that is merely waiting its turn.

    What a cut leaves is *held* here and offered again with the next call, not sought back
    and fetched again: a partition ahead of the others would otherwise be fetched again
    on every call for a minute of its records (hundreds of fetches per record delivered
    in a backlog of mixed record sizes). A partition with held records is not drawn from
    (:meth:`held`), so each holds at most one call's records. Held records are not
    delivered, so not acked, and the commit stays below them: a worker that stops reads
    them again. Any seek of a partition drops what it holds (:meth:`drop`).
    """

    def __init__(self, wait_s: float = WAIT_LIMIT_S, clock: Callable[[], float] = time.monotonic):
        self.wait_s = wait_s
        self.clock = clock
        self._at: dict[_P, _Standing] = {}
        self._held: dict[_P, Sequence[Any]] = {}

    def assign(self, partitions: Iterable[_P]) -> None:
        """Partitions newly assigned or sought back: their times are unknown, and what they
        held is dropped (their position moved below it)."""
        now = self.clock()
        for tp in partitions:
            self._at[tp] = _Standing(None, now)
            self._held.pop(tp, None)

    def forget(self, partitions: Iterable[_P]) -> None:
        """Partitions revoked: they hold nothing back, and nothing is held for them."""
        for tp in partitions:
            self._at.pop(tp, None)
            self._held.pop(tp, None)

    def drop(self, partition: _P) -> None:
        """A seek of ``partition``: the records it held are read again from there."""
        self._held.pop(partition, None)

    def low(self, pending: Callable[[_P], bool]) -> int | None:
        """The lowest record time this worker still has to deliver, as far as known: over
        the partitions with records held, and those ``pending`` whose standing is known;
        None when it has nothing left (at the live edge)."""
        lows = [
            st.at_ms
            for tp, st in self._at.items()
            if st.at_ms is not None and (tp in self._held or pending(tp))
        ]
        return min(lows, default=None)

    def held(self) -> dict[_P, int]:
        """The partitions with records held back (not to be drawn from meanwhile), each
        with the offset of its first record held."""
        return {tp: int(recs[0].offset) for tp, recs in self._held.items()}

    def take(
        self,
        drawn: Sequence[tuple[_P, Sequence[Any]]],
        behind: Callable[[_P, int], bool],
        pending: Callable[[_P], bool],
        slack_ms: int = ALIGN_SLACK_MS,
        floor: int | None = None,
    ) -> list[tuple[_P, Sequence[Any]]]:
        """One fetch call's ``drawn`` batches with the records held from earlier calls:
        the runs to deliver now, minute by minute across the partitions
        (:func:`event_time_slices`), cut (:func:`event_time_cuts`) against every other
        partition that is ``pending`` (records left to read, fetchable) and was fetched
        within ``wait_s``, and against the other workers' ``floor``. The rest is held;
        each partition then stands where its cut left it."""
        merged: dict[_P, Sequence[Any]] = dict(self._held)
        for tp, recs in drawn:  # (records drawn after held ones follow them)
            if recs:
                merged[tp] = [*merged[tp], *recs] if tp in merged else recs
        batches = list(merged.items())
        self._held = {}
        now = self.clock()
        fetched = {tp for tp, _ in batches}
        waiting = {
            tp: st.at_ms
            for tp, st in self._at.items()
            if tp not in fetched and now - st.seen <= self.wait_s and pending(tp)
        }
        cuts = event_time_cuts(batches, behind, slack_ms, waiting, floor)
        ready = []
        for tp, recs in batches:
            cut = cuts[tp]
            if cut < len(recs):
                self._held[tp] = recs[cut:]
            self._at[tp] = _Standing(
                int((recs[cut] if cut < len(recs) else recs[-1]).timestamp), now
            )
            ready.append((tp, recs[:cut]))
        return event_time_slices(ready)


class Peers:
    """The other workers' low watermarks: the lowest record time each still has to deliver
    (:meth:`Timeline.low`), as they publish it on the watermark topic
    (:func:`streams.kafka.topics.watermarks_topic`, keyed by worker).

    Each worker's timeline keeps *its* partitions in step; a model's observations reach
    its detection from every worker (each joins its own partitions' requests), so workers
    at different points of a backlog interleaved them out of order (docs/validation.md,
    "Stop 62"). So each worker also holds its partitions back to the lowest watermark of
    the others (:meth:`floor`), and the group drains a backlog at the pace of the worker
    furthest behind. A watermark not refreshed for ``fresh_s`` (its worker died; the
    compacted topic keeps its last record) holds nothing back, nor does a worker at the
    live edge (``None``). Freshness is judged by when a record arrived, on this worker's
    clock, so hosts whose clocks differ do not misjudge each other; the sender's time
    only tells a dead worker's record in the topic's history (older than
    :data:`PEER_CLOCK_SKEW_S` past ``fresh_s``) from a live one. A worker that stops
    cleanly deletes its record (:meth:`farewell`), so the others stop waiting on it at
    once, and a dead worker's record is deleted by the others once ``forget_s`` old
    (:meth:`expired`)."""

    def __init__(
        self,
        me: str,
        topic: str,
        fresh_s: float = PEER_FRESH_S,
        clock: Callable[[], float] = time.time,
        forget_s: float = PEER_FORGET_S,
    ) -> None:
        self.me = me
        self.topic = topic
        self.fresh_s = fresh_s
        self.forget_s = forget_s
        self.clock = clock
        self._at: dict[str, tuple[int | None, float, float]] = {}  # low, sent, arrived
        self._sent: tuple[int | None, float] | None = None  # the last published, and when
        self._gone = False  # said farewell: publishes nothing more

    def due(self, low: int | None, now: float) -> bool:
        """Whether to publish ``low`` at ``now`` (monotonic seconds): a new value at most
        every :data:`PEER_MIN_GAP_S` (the others' floors follow it within tens of
        milliseconds, so a group in step advances a slack per round trip), an unchanged
        one every :data:`PEER_REFRESH_S` to stay fresh, and "nothing left" once; nothing
        after :meth:`farewell` (a timer still running must not bring the record back)."""
        if self._gone:
            return False
        if self._sent is None:
            return True
        last, at = self._sent
        if low != last:
            return now - at >= PEER_MIN_GAP_S
        return low is not None and now - at >= PEER_REFRESH_S

    def mark(self, low: int | None, now: float) -> None:
        """``low`` was published at ``now``."""
        self._sent = (low, now)

    def record(self, low: int | None) -> tuple[bytes, bytes]:
        """This worker's watermark record: key and value."""
        return self.me.encode(), json.dumps({"low_ms": low, "sent": self.clock()}).encode()

    def farewell(self) -> tuple[bytes, None]:
        """This worker's tombstone, sent as it stops cleanly; it publishes nothing after."""
        self._gone = True
        return self.me.encode(), None

    def expired(self) -> list[tuple[bytes, None]]:
        """Tombstones for the other workers whose last record is older than ``forget_s``
        (forgotten here as well). Several workers may send the same one: deleting twice
        is harmless, and a worker still alive writes its record again at its next
        publication."""
        now = self.clock()
        old = [worker for worker, (_, sent, _) in self._at.items() if now - sent > self.forget_s]
        for worker in old:
            del self._at[worker]
        return [(worker.encode(), None) for worker in old]

    def fold(self, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
        """Take the watermark topic's records (a tombstone forgets its worker)."""
        for key, value in records:
            if key is None:
                continue
            worker = key.decode(errors="replace")
            if worker == self.me:
                continue
            if value is None:
                self._at.pop(worker, None)
                continue
            try:
                data = json.loads(value)
                low = data["low_ms"]
                sent = float(data["sent"])
                self._at[worker] = (None if low is None else int(low), sent, self.clock())
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring a malformed watermark record of %s", worker)

    def floor(self) -> int | None:
        """The lowest fresh watermark of the other workers; None when none holds back."""
        now = self.clock()
        lows = [
            low
            for low, sent, arrived in self._at.values()
            if low is not None
            and now - arrived <= self.fresh_s
            and now - sent <= self.fresh_s + PEER_CLOCK_SKEW_S
        ]
        return min(lows, default=None)


def _until(records: Sequence[Any], first: int, end_ms: int) -> int:
    """The index of the first record from ``first`` on that is later than ``end_ms`` (or
    the end): a run of a partition stops there, whatever comes after it."""
    last = first
    while last < len(records) and int(records[last].timestamp) <= end_ms:
        last += 1
    return last


def event_time_slices(
    batches: Sequence[tuple[_P, Sequence[Any]]], slice_ms: int = ALIGN_SLACK_MS
) -> list[tuple[_P, Sequence[Any]]]:
    """The fetched batches as runs of ``slice_ms`` of record time, interleaved: all
    partitions' first minute, then their next, and so on (each run a contiguous stretch of
    one partition's records, in offset order; a record later than its run's end starts the
    next run). Delivered one partition after another, a backlog's batches each spanned
    the whole fetch; the detectors now meet the partitions' events in time order to within
    ``slice_ms``."""
    records = dict(batches)
    position = dict.fromkeys(records, 0)
    live = [tp for tp, recs in batches if recs]
    out: list[tuple[_P, Sequence[Any]]] = []
    while live:
        heads = sorted(live, key=lambda tp: int(records[tp][position[tp]].timestamp))
        end = int(records[heads[0]][position[heads[0]]].timestamp) + slice_ms
        for tp in heads:
            recs, first = records[tp], position[tp]
            last = _until(recs, first, end)
            if last > first:
                out.append((tp, recs[first:last]))
                position[tp] = last
        live = [tp for tp in live if position[tp] < len(records[tp])]
    return out


def _batch_message(batch: RecordBatch, generation_id: int) -> BatchMessage:
    last = batch.records[-1]
    timestamp = None if last.timestamp is None else last.timestamp / 1000.0
    msg = BatchMessage(
        batch.tp.topic,
        batch.tp.partition,
        batch.last_offset,
        timestamp,  # type: ignore[arg-type]
        last.timestamp_type,
        None,
        None,
        None,
        None,
        0,
        0,
        batch.tp,
        generation_id=generation_id,
    )
    msg.first_offset = batch.first_offset
    msg.abandoned = False
    return msg


class BatchConsumer(GuardedConsumer):
    """faust's aiokafka consumer with a fetch loop that delivers batch topics as batches;
    its consumer thread pauses partitions it cannot decode (:mod:`streams.runtime.fetch_guard`)."""

    _seek_epoch: int = 0
    _seek_done: asyncio.Event | None = None  # the running perform_seek's end (see there)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The first offset delivered of each batch-topic partition since it was last
        # sought back to or before it, while assigned: see _new_offset.
        self._heads: dict[TP, int] = {}
        self._fetching_s = 0.0  # seconds spent waiting for fetches: the timeline's clock
        self._timeline: Timeline[TP] = Timeline(clock=lambda: self._fetching_s)

    # -- seeks: a fetch spanning one is stale --------------------------------------------

    async def seek(self, partition: TP, offset: int) -> None:
        self._seek_epoch += 1
        self._timeline.drop(partition)
        if offset <= self._heads.get(partition, offset):
            self._heads.pop(partition, None)  # read again from there: the next delivery is the head
        await super().seek(partition, offset)

    async def perform_seek(self) -> None:
        """faust's seek of every partition to its committed offset, after each
        assignment's recovery. It awaits an OffsetFetch per partition; the consumer
        thread moves each position when its answer comes, and faust learns the committed
        offsets only at the end. So every fetch that returns while it runs, or that was in
        flight at its start or its end, is stale (:meth:`_stale`; the epoch moves at both
        ends), and a seek-back waits for its end (:meth:`_seek_back`).

        A batch delivered while it ran was stuck or lost: a seek-back meanwhile read
        partitions from offset 0 with the committed offsets still unknown, and faust's
        recovery calls ``flow_control.resume()`` right after this seek, which emptied the
        agent's queue of the batches waiting there (now kept:
        :class:`~streams.runtime.draining.KeepingFlowControl`). Under load the worker
        idled with a partition's batch never processed (docs/validation.md, "Stop 59" and
        "Stop 60")."""
        self._seek_epoch += 1
        done = self._seek_done = asyncio.Event()
        try:
            await super().perform_seek()
        finally:
            self._seek_epoch += 1
            done.set()
            batch_topics = self._batch_topics()
            self._timeline.assign(tp for tp in self.assignment() if tp.topic in batch_topics)

    def _seeking(self) -> bool:
        """Whether faust's :meth:`perform_seek` is running."""
        return self._seek_done is not None and not self._seek_done.is_set()

    # -- acks ----------------------------------------------------------------------------

    def ack(self, message: Any) -> bool:
        """Mark a handled message's offsets acked (faust's commits follow them). Refused,
        so that the records are read again: a message of an earlier consumer generation
        (faust's stream acks the events it skips after a rebalance; acked into the new
        generation they let the commit pass records never handled), on every topic; and
        a batch that no stream took or whose agent stopped inside it."""
        with ack_lock:
            if message.acked:
                return False
            stale = message.generation_id != self.app.consumer_generation_id
            if not stale and not isinstance(message, BatchMessage):
                return bool(super().ack(message))
            message.acked = True  # done with (faust waits for what it tracks)
            self._unacked_messages.discard(message)
            try:
                if stale or not message.tracked or message.abandoned:
                    # Not tracked: no stream took it (faust's stream tracks what it takes
                    # and acks what it skips). Abandoned: its agent stopped inside it.
                    return False
                if not self.app.topics.acks_enabled_for(message.topic):
                    return False
                tp = message.tp
                committed = self._committed_offset[tp]
                first = message.first_offset
                if committed is not None:
                    first = max(first, committed)
                offsets = range(first, message.offset + 1)
                if not offsets:
                    return False
                index = self._acked_index[tp]
                fresh: Iterable[int] = (
                    offsets if index.isdisjoint(offsets) else [o for o in offsets if o not in index]
                )
                fresh = list(fresh)
                index.update(fresh)
                self._acked[tp].extend(fresh)
                self._n_acked += len(fresh)
                return True
            finally:
                notify(self._waiting_for_ack)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """faust forgets a revoked partition's commit and acks, then waits for its agents
        and commits what they ack meanwhile: with no commit to check that against, it
        committed past any batch below that was never handled (an abandoned one). So
        each revoked batch-topic partition's head is first set where its commit stands
        with what is acked (the offsets acked below it are handled: the next owner reads
        them again at worst), and dropped once the revocation is done."""
        batch_topics = self._batch_topics()
        for tp in revoked:
            if tp.topic in batch_topics:
                # _new_offset consumes the acked run it finds: faust drops them next anyway.
                floor = self._new_offset(tp) or self._committed_offset[tp] or self._heads.get(tp)
                if floor is not None:
                    self._heads[tp] = floor
        self._timeline.forget(revoked)
        try:
            await super().on_partitions_revoked(revoked)
        finally:
            for tp in revoked:
                self._heads.pop(tp, None)

    def _new_offset(self, tp: TP) -> int | None:
        """faust's next commit of ``tp``; for a batch-topic partition with no commit yet,
        none while the first offset delivered since it was positioned is unacked.

        faust checks the head of the acked offsets against the committed offset only when
        there is one (a commit at 0 counts as none): without it, the first run of acked
        offsets is committed whatever lies below, so a batch never processed (an agent
        that raised on it, a batch dropped from the agent's queue) was committed past as
        soon as a later one was acked."""
        head = self._heads.get(tp)
        acked = self._acked[tp]
        if head is not None and acked and not self._committed_offset[tp] and min(acked) > head:
            return None
        new: int | None = super()._new_offset(tp)
        return new

    # -- the fetch loop ------------------------------------------------------------------

    def _batch_topics(self) -> frozenset[str]:
        app = self.app
        return frozenset(app.batch_topics) if isinstance(app, BatchApp) else frozenset()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - in workers
        """faust's fetch loop, with batch topics delivered one event per partition."""
        should_stop = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (should_stop() or fetcher_stopped()):
                self.diag.set_flag("FETCHING")
                if not self.flow_active:
                    # A rebalance is on. The fetch that follows it is issued after
                    # recovery's seeks: it is stale only if the generation or a seek
                    # changes while *it* is in flight, so wait before reading them. (mode
                    # types the waitable as its own Event; faust passes asyncio's too.)
                    await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
                generation = self.app.consumer_generation_id
                epoch = self._seek_epoch
                began = time.monotonic()
                records, active = await self._wait_next_records(1.0)
                self._fetching_s += time.monotonic() - began
                await asyncio.sleep(0)
                if (records or self._timeline.held()) and not self.should_stop:
                    await self._deliver(records or {}, active, generation, epoch)
                await self.publish_watermark()
                self.diag.unset_flag("FETCHING")
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag("FETCHING")

    def _stale(self, generation: int, epoch: int) -> bool:
        """Whether a fetch begun at ``generation``/``epoch`` may no longer be delivered
        (also any fetch that returns while :meth:`perform_seek` runs)."""
        return (
            generation != self.app.consumer_generation_id
            or epoch != self._seek_epoch
            or not self.flow_active
            or self._seeking()
        )

    async def _seek_back(self, tps: Iterable[TP]) -> None:
        """Records of ``tps`` were fetched and dropped: seek those partitions back to their
        committed offsets (offset 0 when nothing was committed yet: the group starts at the
        beginning, ``consumer_auto_offset_reset = "earliest"``, and aiokafka moves an offset
        below the log start to the log start), so that the records are fetched again. While
        the flow is stopped (a rebalance) nothing is done here: faust seeks every source
        partition to its committed offset before it resumes. Only source partitions come
        here (batch topics; per-record topics when fetched while :meth:`perform_seek` ran):
        changelog partitions belong to faust's recovery, which positions them itself.

        The offsets are faust's own record of what is committed (``_committed_offset``:
        filled by ``perform_seek`` at every assignment, advanced by every commit) and the
        seeks are local (:meth:`seek`, as faust's own seeks): no request to the broker and
        nothing awaited in the consumer thread, and every partition keeps a valid position.
        The fetch loop waits for this method, so it must not wait on the network (aiokafka's
        ``seek_to_committed`` retries its OffsetFetch forever), and no partition may be left
        without a position (``seek_to_beginning`` does that until a ListOffsets round trip,
        and faust's livelock detector, ``verify_event_path``, fails on it); see
        docs/validation.md, "Hot path in batches".

        The one wait: while faust's :meth:`perform_seek` runs, the committed offsets are
        not yet known (a seek-back would read from 0) and it is about to position every
        partition itself, so the seek-back waits for that seek to end first. It is
        bounded by faust's own timeout on it (``broker_request_timeout``), and the fetch
        loop has nothing to deliver meanwhile: every fetch spanning it is stale."""
        running = self._seek_done
        if running is not None and not running.is_set():
            await running.wait()
        if not self.flow_active or self.should_stop:
            return  # a rebalance is on: faust seeks every source partition before resuming
        owned = [TP(tp.topic, tp.partition) for tp in tps if tp in self.assignment()]
        if not owned:
            return
        log.info("dropped a fetch that spanned a rebalance or seek; re-reading %s", owned)
        self._timeline.assign(owned)  # read again from the commits: their times are unknown
        for tp in owned:
            try:
                # also sets _read_offset
                await self.seek(tp, reread_offset(self._committed_offset, tp))
            except (IllegalStateError, AssertionError):
                # aiokafka: the partition was revoked meanwhile (a rebalance began in the
                # consumer thread); the next assignment positions it afresh.
                log.info("not seeking back %s: no longer assigned", tp)

    async def _deliver(
        self,
        records: Mapping[TP, list[Any]],
        active: set[TP] | None,
        generation: int,
        epoch: int,
    ) -> None:
        # The other topics' records follow faust's own rule (its ``getmany``): the
        # generation as the fetch returned, whatever became of the batches. They are
        # mostly changelogs, which no seek-back repositions: dropped after recovery's
        # seeks, they would never come again, and recovery would wait for them.
        fetched_generation = self.app.consumer_generation_id
        batch_topics = self._batch_topics()
        batches = [(tp, recs) for tp, recs in records.items() if recs and tp.topic in batch_topics]
        per_record = {
            tp: recs for tp, recs in records.items() if recs and tp.topic not in batch_topics
        }
        kept: list[tuple[TP, list[Any]]] = []
        for tp, recs in batches:
            if not self._active(tp, active):
                # Paused while the fetch was in flight: fetch these again when resumed.
                epoch = await self._read_later(tp, int(recs[0].offset), epoch)
                continue
            kept.append((tp, recs))
        for tp, first in self._timeline.held().items():
            if not self._active(tp, active):
                epoch = await self._read_later(tp, first, epoch)  # drops what it held
        if self._stale(generation, epoch):
            # Read again from the commits, with whatever was held.
            dropped = [*self._timeline.held(), *(tp for tp, _ in kept)]
            if dropped:
                await self._seek_back(dropped)
        else:
            # In event-time order: records ahead of the other partitions' are held for a
            # later call, the rest delivered minute by minute across the partitions.
            peers = self._peers()
            floor = peers.floor() if peers is not None else None
            runs = self._timeline.take(
                kept, self._behind, lambda tp: self._pending(tp, active), floor=floor
            )
            for i, (tp, run) in enumerate(runs):
                if not await self._deliver_batch(tp, list(run), generation, epoch):
                    await self._seek_back([*self._timeline.held(), *(t for t, _ in runs[i:])])
                    break
        if per_record and self._seeking():
            # Source records fetched while faust seeks to the commits are read again from
            # there, as batches are: kept, they were handled, and the read offset that
            # perform_seek then resets below them made the next record's gap cover them.
            changelogs = self.app.tables.changelog_topics
            sources = [tp for tp in per_record if tp.topic not in changelogs]
            if sources:
                per_record = {tp: r for tp, r in per_record.items() if tp.topic in changelogs}
                await self._seek_back(sources)
        if per_record:
            await self._deliver_records(per_record, fetched_generation)

    async def _read_later(self, tp: TP, offset: int, epoch: int) -> int:
        """Seek ``tp`` back to ``offset`` (records of this fetch from there are not delivered
        now) and return the seek epoch the rest of the fetch is delivered under: the new
        one, unless another seek came first (then the fetch stays stale)."""
        if tp not in self.assignment():
            return epoch
        before = self._seek_epoch
        await self.seek(tp, offset)
        return self._seek_epoch if epoch == before and self._seek_epoch == before + 1 else epoch

    def _behind(self, tp: TP, offset: int) -> bool:
        """Whether ``tp`` has records after ``offset`` (by the high watermark of its last
        fetch response: no request to the broker)."""
        try:
            highwater = self.highwater(tp)
        except (AssertionError, IllegalStateError, KeyError):
            return False  # no longer assigned
        return highwater is not None and highwater > offset + 1

    def low_watermark(self) -> int | None:
        """The lowest record time this worker still has to deliver (:meth:`Timeline.low`),
        what it publishes for the other workers (:class:`Peers`)."""
        return self._timeline.low(lambda tp: self._pending(tp, None))

    def _active(self, tp: TP, active: set[TP] | None) -> bool:
        """Whether faust reads ``tp`` now (not paused by its flow control)."""
        return active is None or tp in active or tp in self._buffered_partitions

    async def _getmany(
        self,
        active_partitions: set[TP] | None,
        timeout: float,  # noqa: ASYNC109 (faust's signature)
    ) -> Any:
        """faust's fetch call, drawing nothing from the partitions with records held back
        (:class:`Timeline`): their next records stay in the consumer's buffer meanwhile."""
        held = self._timeline.held()
        if held and active_partitions is not None:
            rest = {tp for tp in active_partitions if tp not in held}
            if not rest:
                await asyncio.sleep(HELD_POLL_S)
                return {}
            active_partitions = rest
            timeout = min(timeout, HELD_POLL_S)
        return await super()._getmany(active_partitions, timeout)

    def _peers(self) -> Peers | None:
        """The other workers' watermarks, when this worker follows them."""
        return self.app.peers if isinstance(self.app, BatchApp) else None

    async def publish_watermark(self) -> None:
        """Publish this worker's low watermark for the others (:class:`Peers`) when due:
        after every fetch call, and on the app's timer while a delivery waits. Advisory:
        a failed send leaves it unrefreshed, and the others stop waiting on it."""
        peers = self._peers()
        if peers is None:
            return
        low = self.low_watermark()
        now = time.monotonic()
        if not peers.due(low, now):
            return
        if await self._send_watermark(peers, peers.record(low)):
            peers.mark(low, now)

    async def forget_gone_peers(self) -> None:
        """Delete the watermark records of workers gone for :data:`PEER_FORGET_S` without
        their farewell (:meth:`Peers.expired`)."""
        peers = self._peers()
        if peers is None:
            return
        for record in peers.expired():
            await self._send_watermark(peers, record)

    async def farewell(self) -> None:
        """Delete this worker's watermark record as it stops cleanly, so the others need
        not wait :data:`PEER_FRESH_S` for it to go stale (:meth:`Peers.farewell`)."""
        peers = self._peers()
        if peers is not None:
            await self._send_watermark(peers, peers.farewell())

    async def _send_watermark(self, peers: Peers, record: tuple[bytes, bytes | None]) -> bool:
        """Send one record to the watermark topic; False (logged) when it failed."""
        key, value = record
        try:
            await self.app.producer.send(peers.topic, key, value, 0, None, None)
        except Exception as exc:  # advisory (see publish_watermark)
            log.warning("watermark not published (%s: %s)", type(exc).__name__, exc)
            return False
        return True

    def _pending(self, tp: TP, active: set[TP] | None) -> bool:
        """Whether ``tp``, not in this fetch, has records left that the consumer fetches
        (assigned, active, not paused: aiokafka's position below its high watermark). A
        partition whose last records are transaction markers is not pending once fetched:
        its position moves past them."""
        if not self._active(tp, active):
            return False
        try:
            consumer = self._thread._ensure_consumer()
            state = consumer._subscription.subscription.assignment.state_value(tp)
        except (AttributeError, AssertionError, IllegalStateError, KeyError):
            return False  # no longer assigned (or no consumer yet)
        if state is None or state.paused or not state.has_valid_position:
            return False
        return state.highwater is not None and int(state.position) < int(state.highwater)

    async def _deliver_batch(self, tp: TP, recs: list[Any], generation: int, epoch: int) -> bool:
        """Hand one partition's records to the agents of its topic as one event; False
        if the fetch went stale while waiting for flow control."""
        app = self.app
        await app.flow_control.acquire()
        await app.producer.buffer.wait_until_ebb()
        if self._stale(generation, epoch):
            return False
        first = int(recs[0].offset)
        r_offset = self._read_offset[tp]
        if r_offset is not None and first > r_offset + 1 and app.topics.acks_enabled_for(tp.topic):
            # Offsets the broker skipped between two fetches of one continuous read
            # (transaction markers, compaction): nothing to process, so they count as acked.
            await self._add_gap(tp, r_offset + 1, first - 1)
        batch = RecordBatch(tp, recs)
        message = _batch_message(batch, generation)
        conductor: Any = app.topics
        channels = list(conductor._tp_index.get(tp, ()))  # the topics subscribed to tp
        if not channels:
            return True
        self._heads.setdefault(tp, first)
        message.incref(len(channels))
        for channel in channels:
            queue = channel.queue
            # faust's queue signals no "below N" event: poll (a few ms per wait).
            while queue.qsize() >= MAX_QUEUED_BATCHES and not self.should_stop:  # noqa: ASYNC110
                await asyncio.sleep(_QUEUE_POLL_S)
            await channel.put(faust.Event(app, None, batch, {}, message))
        self._read_offset[tp] = batch.last_offset
        return True

    async def _deliver_records(self, records: Mapping[TP, list[Any]], generation: int) -> None:
        """faust's own per-record path for the other topics (gap bookkeeping, one
        ``callback`` per record, paused by ``suspend_flow``, dropped, as faust drops them,
        when the generation changes or the flow stops)."""
        callback = self.callback
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        n = 0
        for tp, record in self.scheduler.iterate(records):
            if generation != self.app.consumer_generation_id or not self.flow_active:
                return
            n += 1
            if n % 100 == 0:
                await asyncio.sleep(0)
            message = self._to_message(tp, record)
            offset = message.offset
            r_offset = self._read_offset[tp]
            if r_offset is not None and offset < r_offset:
                continue
            if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            await self.wait_first(callback(message), self.suspend_flow.wait())
            self._read_offset[tp] = offset


class BatchTransport(GuardedTransport):
    """faust's aiokafka transport with :class:`BatchConsumer` and a fetch guard."""

    Consumer: ClassVar[type[Any]] = BatchConsumer


class BatchStream(faust.Stream[Any]):
    """faust's stream; over a batch topic it iterates on faust's pure-Python path.

    faust's Cython iterator (used whenever its extension is built, as in the wheels)
    inlines ``Consumer.ack`` instead of calling it: :meth:`BatchConsumer.ack` would not
    run, only each batch's *last* offset would be marked acked, and the commits would stop
    at the first batch of more than one record. The Python path acks through
    ``Message.ack`` and the consumer's ``ack``; it costs once per batch what the Cython
    path saves once per record. Other topics keep faust's own choice.

    faust's iterator also acks the event it yielded when it is closed there, which is
    where an agent that raised or was cancelled inside a batch leaves it: that batch is
    marked abandoned first (:meth:`_abandoning`), so its ack is refused and it is read
    again, as the module's policy says."""

    def __aiter__(self) -> Any:
        app = self.app
        topics = getattr(self.channel, "topics", ())
        if not (isinstance(app, BatchApp) and app.batch_topics.intersection(topics)):
            return super().__aiter__()
        it = self._abandoning(cast(AsyncGenerator[Any, None], self._py_aiter()))
        self._active_agens.add(it)  # closed on stop, as in faust
        return it

    async def _abandoning(self, batches: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        """``batches`` (faust's iterator), marking the batch of the event it yielded
        abandoned when the agent stops inside it: the generator is closed at its ``yield``
        only when the agent never asked for the next batch (an agent that leaves its loop
        with ``break`` after handling a batch has it read again: a duplicate, not a loss)."""
        try:
            async for value in batches:
                event = self.current_event  # the stream's own, reused by a restarted agent
                try:
                    yield value
                except GeneratorExit:
                    if event is not None and isinstance(event.message, BatchMessage):
                        event.message.abandoned = True
                    raise
        finally:
            await batches.aclose()


class BatchApp(DrainingApp):
    """A faust app whose consumer delivers :meth:`batch_topic` topics in batches (only
    for ``kafka://`` brokers: faust's aiokafka driver), and whose agents over them ack
    each batch whole (:class:`BatchStream`)."""

    batch_topics: set[str]
    peers: Peers | None
    """The other workers' watermarks, when the worker follows them (:class:`Peers`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.batch_topics = set()
        self.peers = None
        kwargs.setdefault("Stream", BatchStream)
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if url.scheme not in {"kafka", "aiokafka"}:
            return super()._new_transport()
        return BatchTransport(self.conf.broker_consumer, self)

    def batch_topic(self, *topics: str, **kwargs: Any) -> faust.TopicT:
        """A topic (raw bytes) whose agent receives :class:`RecordBatch` values; give its
        agent ``concurrency=1``."""
        for name in topics:
            self.batch_topics.add(name)
        return self.topic(
            *topics,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            **kwargs,
        )
