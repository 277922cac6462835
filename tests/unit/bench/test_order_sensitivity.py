"""bench/order_sensitivity.py's model of a worker started behind a backlog: what each order
delivers, how far behind, and at what fetching cost (the figures docs/investigation.md
quotes come from it)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from bench.order_sensitivity import drain, lateness_minutes
from streams.devtools.scenario import Scenario
from streams.devtools.simulate import Simulator


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    scenario = Scenario(seed=3, duration=timedelta(hours=3), events_per_hour=3600)
    return [line.encode() for line in Simulator(scenario).lines()]


@pytest.mark.parametrize("order", ["drawn", "per-call", "timeline"])
def test_every_order_delivers_every_event_once(lines: list[bytes], order: str) -> None:
    delivered = drain(lines, 4, order, fetch_bytes=256 * 1024, max_records=2_000)

    assert Counter(delivered.lines) == Counter(lines)


def test_the_worker_keeps_the_partitions_in_step_and_fetches_each_record_once(
    lines: list[bytes],
) -> None:
    """Fetch calls of 2,000 records from 16 partitions of 256 KiB fetches (3 simulated
    hours): as drawn, partitions run hours apart; cut per call, the cut records are
    fetched again and the order is still half an hour off; on the timeline with the rest
    held, events arrive within a few minutes of the newest delivered and every record is
    fetched once."""
    limits = {"fetch_bytes": 256 * 1024, "max_records": 2_000}
    drawn = drain(lines, 4, "drawn", **limits)
    per_call = drain(lines, 4, "per-call", **limits)
    timeline = drain(lines, 4, "timeline", **limits)

    assert lateness_minutes(drawn.lines)[0] > 120.0
    assert lateness_minutes(per_call.lines)[0] > 20.0
    assert per_call.fetched > len(lines)
    p99, _ = lateness_minutes(timeline.lines)
    assert p99 < 5.0
    assert timeline.fetched == len(lines)
