"""The fetch guard's bookkeeping and what the worker reports about a paused partition.

The guard itself runs against the real broker in ``tests/integration/test_fetch_guard.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import UnsupportedCodecError
from aiokafka.structs import TopicPartition

from streams.runtime.fetch_guard import FetchGuard, GuardedConsumerThread, fetch_guard_for
from streams.runtime.observability import Observability
from tests.unit.alerting.helpers import ManualClock
from tests.unit.hardening.test_observability import _TP, _fake_app, parse


def test_one_report_per_partition_and_offset() -> None:
    guard = FetchGuard()
    exc = UnsupportedCodecError("Libraries for zstd compression codec not found")
    assert guard.record("t.outputs", 0, 10, exc)
    assert not guard.record("t.outputs", 0, 10, exc)  # fetched again after a rebalance
    assert guard.record("t.outputs", 0, 25, exc)  # another batch: news
    assert guard.events_total == 3
    [paused] = guard.paused()
    assert (paused.topic, paused.partition, paused.offset) == ("t.outputs", 0, 25)
    assert paused.error.startswith("UnsupportedCodecError: ")
    guard.forget("t.outputs", 0)
    assert guard.paused() == []


def test_readiness_and_metrics_show_a_paused_partition() -> None:
    tp = _TP(("t.outputs", 0))
    app = _fake_app([tp], {tp: 10}, {tp: 10})
    service: Any = SimpleNamespace()  # the other metric sections fail, counted, not fatal
    guard = FetchGuard()
    app._transport = SimpleNamespace(fetch_guard=guard)
    assert fetch_guard_for(app) is guard
    obs = Observability(app, service, ManualClock(datetime.now(UTC)))
    assert obs.readiness().ready
    guard.record("t.outputs", 1, 7, UnsupportedCodecError("no zstd"))
    state = obs.readiness()
    assert not state.ready
    [entry] = state.to_json()["undecodable_partitions"]
    assert entry["partition"] == 1
    assert entry["offset"] == 7
    parsed = parse(obs.render())
    [sample] = parsed["sentinel_fetch_undecodable_partitions"]["samples"]
    assert sample[1] == {"topic": "t.outputs", "partition": "1"}
    assert sample[2] == 1
    assert parsed["sentinel_fetch_undecodable_total"]["samples"][0][2] == 1


class _State:
    """aiokafka's TopicPartitionState, as far as the guard reads it."""

    def __init__(self, position: int | None) -> None:
        self.position = position

    @property
    def has_valid_position(self) -> bool:
        return self.position is not None


class _Assignment:
    def __init__(self, states: dict[tuple[str, int], _State]) -> None:
        self.states = states
        self.tps = set(states)

    def state_value(self, tp: tuple[str, int]) -> _State | None:
        return self.states.get(tp)


class _Fetcher:
    def __init__(self, assignment: _Assignment) -> None:
        self.assignment = assignment
        self.seeks: dict[tuple[str, int], int] = {}
        self._records: dict[tuple[str, int], object] = {}

    def seek_to(self, tp: tuple[str, int], offset: int) -> None:
        self.seeks[tp] = offset
        self.assignment.states[tp].position = offset


def test_a_failed_fetch_puts_every_other_partition_back_even_one_positioned_meanwhile() -> None:
    """Partition 1 had no position when the failed call began (a fresh assignment), got
    one while the call waited, and was drained to its end: it must go back to its
    committed offset, or its records are never fetched again (seen in CI: partition 1 of
    test_fetch_guard never flowed). Partition 2, positioned before, goes back there;
    partition 3, fresh and never committed, to offset 0 (aiokafka resets to the log start)."""
    failed, fresh, known, new = (TopicPartition("t", p) for p in range(4))
    states = {failed: _State(10), fresh: _State(20), known: _State(57), new: _State(9)}
    assignment = _Assignment(states)
    fetcher = _Fetcher(assignment)
    paused: list[tuple[str, int]] = []
    consumer = SimpleNamespace(
        _fetcher=fetcher,
        _subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment)),
        pause=paused.append,
    )
    thread: Any = GuardedConsumerThread.__new__(GuardedConsumerThread)
    thread.fetch_guard = FetchGuard()
    thread.consumer = SimpleNamespace(_committed_offset={fresh: 5})
    exc = UnsupportedCodecError("Libraries for zstd compression codec not found")
    thread._pause_undecodable(consumer, failed, 10, {failed: 10, known: 50}, exc)
    assert fetcher.seeks == {fresh: 5, known: 50, new: 0}
    assert paused == [failed]
    assert [p.offset for p in thread.fetch_guard.paused()] == [10]
