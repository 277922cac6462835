"""The notify consumer's backoff sleep (:func:`polling_sleep`) on kafka-python's own
subscription state: a rebalance in the middle of a backoff, and a stop requested during
one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from kafka.consumer.subscription_state import SubscriptionState
from kafka.structs import TopicPartition
from pydantic import SecretStr

from alerting.delivery import DeliveryRunner, RetryPolicy
from alerting.engine import IncidentEngine
from alerting.model import IncidentEvent
from alerting.sinks import WebhookSink
from alerting.transport import HttpRequest, HttpResponse
from streams.cli.common import Stopper, StopRequestedError
from streams.runtime.notify_consumer import PartitionsRevokedError, notify_loop, polling_sleep

from .helpers import ManualClock, detection, playbooks, policy

P0, P1 = TopicPartition("alerts", 0), TopicPartition("alerts", 1)


@dataclass
class _Record:
    offset: int


class _Consumer:
    """assignment, pause, resume and seek on kafka-python's ``SubscriptionState``; a poll
    returns a record of each assigned partition that is not paused (what its fetcher
    would). At the ``rebalance_at``-th poll a rebalance inside the poll hands this member
    P1 as well (another member of the group left): kafka-python gives it a fresh state,
    not paused."""

    def __init__(self, rebalance_at: int = 0) -> None:
        self.sub = SubscriptionState()
        self.sub.subscribe(topics=["alerts"])
        self.sub.assign_from_subscribed([P0])
        self.rebalance_at = rebalance_at
        self.polls = 0
        self.sought: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.sub.assigned_partitions())

    def pause(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.sub.pause(tp)

    def resume(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.sub.resume(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought.append((tp, offset))

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        self.polls += 1
        if self.polls == self.rebalance_at:
            self.sub.assign_from_subscribed([P0, P1])
        return {
            tp: [_Record(40), _Record(41)]
            for tp in self.sub.assigned_partitions()
            if not self.sub.is_paused(tp)
        }


def test_records_of_a_partition_a_rebalance_hands_over_mid_backoff_are_read_again() -> None:
    """Before, those records raised "records from paused partitions" and notify exited in
    the middle of the sink's outage."""
    consumer = _Consumer(rebalance_at=2)
    polling_sleep(consumer, lambda s: None, slice_s=0.01)(0.05)
    assert consumer.polls >= 3
    assert consumer.sought == [(P1, 40)]  # read again once the backoff ends
    assert not consumer.sub.is_paused(P0)
    assert not consumer.sub.is_paused(P1)


def test_a_stop_requested_during_a_backoff_ends_it_uncommitted() -> None:
    """With partitions assigned the backoff polled instead of calling the run's sleep, so
    SIGTERM or ``--max-seconds`` waited out the retries (30 minutes by default) and the
    event was then dead-lettered."""
    consumer = _Consumer()
    stopper = Stopper(max_seconds=None, until_idle=None)
    stopper.request("SIGTERM")
    with pytest.raises(StopRequestedError, match="SIGTERM"):
        polling_sleep(consumer, stopper.sleep, slice_s=0.01)(3600.0)
    assert consumer.polls == 1
    assert not consumer.sub.is_paused(P0)


class _Shrinking(_Consumer):
    """Holds P0 and P1; at the ``rebalance_at``-th poll a member joins and takes P0 (its
    records are read from their last commit by that member now)."""

    def __init__(self, rebalance_at: int) -> None:
        super().__init__(rebalance_at=0)
        self.sub.assign_from_subscribed([P0, P1])
        self.shrink_at = rebalance_at
        self.committed: list[Any] = []

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        self.polls += 1
        if self.polls == self.shrink_at:
            self.sub.assign_from_subscribed([P1])
        return {}

    def commit(self, offsets: Any = None) -> None:
        self.committed.append(offsets)

    def close(self) -> None:
        pass


def test_a_partition_taken_away_mid_backoff_ends_the_backoff() -> None:
    consumer = _Shrinking(rebalance_at=2)
    with pytest.raises(PartitionsRevokedError) as caught:
        polling_sleep(consumer, lambda s: None, slice_s=0.01)(3600.0)
    assert caught.value.lost == {P0}
    assert consumer.polls == 2
    assert not consumer.sub.is_paused(P1)


@dataclass
class _AlertRecord:
    topic: str
    partition: int
    offset: int
    value: bytes


def test_a_delivery_whose_partition_moved_mid_backoff_is_left_to_its_new_owner() -> None:
    """Before, the member went on retrying after the rebalance and paged, while the new
    owner read the same record from the last commit and paged too; the late commit could
    then move the new owner's offset back."""
    consumer = _Shrinking(rebalance_at=2)
    transport = _Failing()
    runner = DeliveryRunner(
        WebhookSink("http://127.0.0.1:1/hook", SecretStr("s3cret")),
        transport,
        dead_letter=lambda _: None,
        sleep=polling_sleep(consumer, lambda s: None, slice_s=0.01),
        clock=ManualClock(),
        retry=RetryPolicy(max_attempts=1000, initial_backoff_s=60, retry_for_s=3600),
    )
    first, second = (_event(n).model_dump_json().encode() for n in range(2))
    records = [_AlertRecord("alerts", 0, 40, first), _AlertRecord("alerts", 1, 7, second)]
    looped = _LoopConsumer(consumer, {P0: records[:1], P1: records[1:]})
    stats = notify_loop(
        looped,
        runner,
        dead_letter_raw=lambda _: None,
        should_stop=lambda: looped.loop_polls > 1,
        clock=ManualClock(),
    )
    assert stats.outcomes == {"handed_over": 1}
    assert transport.posts == 1  # no page after the rebalance
    assert consumer.committed == []
    assert consumer.sought == [(P1, 7)]  # the kept partition's record is read again


class _Failing:
    def __init__(self) -> None:
        self.posts = 0

    def post(self, request: HttpRequest) -> HttpResponse:
        self.posts += 1
        return HttpResponse(status=503)


class _LoopConsumer:
    """The loop's first poll returns ``batch``, later ones nothing; the backoff's (paused)
    polls, seeks and commits go to ``inner``."""

    def __init__(self, inner: _Shrinking, batch: dict[TopicPartition, list[Any]]) -> None:
        self.inner, self.batch, self.loop_polls = inner, batch, 0

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        self.loop_polls += 1
        return self.batch if self.loop_polls == 1 else {}

    def assignment(self) -> set[TopicPartition]:
        return self.inner.assignment()

    def commit(self, offsets: Any = None) -> None:
        self.inner.commit(offsets)

    def seek(self, partition: Any, offset: int) -> None:
        self.inner.seek(partition, offset)

    def close(self) -> None:
        pass


def _event(n: int) -> IncidentEvent:
    [ev] = IncidentEngine(policy(), playbooks()).observe(detection(model=f"m{n}"))
    return ev
