"""The fetch guard's bookkeeping and what the worker reports about a paused partition.

The guard itself runs against the real broker in ``tests/integration/test_fetch_guard.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import UnsupportedCodecError

from streams.runtime.fetch_guard import FetchGuard, fetch_guard_for
from streams.runtime.observability import Observability
from tests.unit.hardening.test_observability import _TP, _Clock, _fake_app, parse


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
    obs = Observability(app, service, _Clock(datetime.now(UTC)))
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
