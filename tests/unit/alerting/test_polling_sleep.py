"""The notify consumer's backoff sleep (:func:`polling_sleep`) on kafka-python's own
subscription state: a rebalance in the middle of a backoff, and a stop requested during
one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from kafka.consumer.subscription_state import SubscriptionState
from kafka.structs import TopicPartition

from streams.cli.common import Stopper, StopRequestedError
from streams.runtime.notify_consumer import polling_sleep

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
