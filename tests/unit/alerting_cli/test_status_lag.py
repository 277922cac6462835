"""``sentinel status``'s lag: event records read but not yet detected still count."""

from __future__ import annotations

from streams.kafka.lag import PartitionLag, render_lag
from streams.settings import WorkerSettings


def test_lag_on_the_internal_topics_is_shown_apart_from_the_event_records() -> None:
    """Before, status said "lag 0" while the worker still held a backlog of batches on its
    by-model topic (found in a live run: an incident appeared a minute after "lag 0")."""
    internal = WorkerSettings().internal_topics
    assert internal == {"by_request": "sentinel-by-request", "by_model": "sentinel-by-model"}
    lags = [
        PartitionLag("sentinel.outputs", 0, end=100, committed=100),
        PartitionLag("sentinel.outputs", 1, end=50, committed=None),
        PartitionLag("sentinel-by-model", 0, end=40, committed=37),
        PartitionLag("sentinel-by-request", 0, end=9, committed=9),
    ]
    text = render_lag("sentinel", lags, internal.values())
    assert text.splitlines() == [
        "group sentinel: lag 50 record(s) in total; 3 internal record(s) (batches of "
        "observations) not yet processed",
        "  sentinel.outputs: lag 50 record(s), end 150, committed on 1/2 partition(s)",
        "  sentinel-by-model (internal): lag 3 record(s), end 40, committed on 1/1 partition(s)",
        "  sentinel-by-request (internal): lag 0 record(s), end 9, committed on 1/1 partition(s)",
    ]
    caught_up = [PartitionLag(p.topic, p.partition, p.end, p.end) for p in lags]
    assert render_lag("sentinel", caught_up, internal.values()).splitlines()[0] == (
        "group sentinel: lag 0 record(s) in total"
    )
