"""A detector's evidence ranges: exactly the offsets of its window, per partition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerting.model import EventRange
from streams.contract.decode import Coordinates
from streams.contract.events import InferenceOutput
from streams.pipeline.detectorset import (
    CHECKPOINT_EVERY,
    CHECKPOINTS_DENSE,
    CHECKPOINTS_KEPT,
    Tracker,
    source,
)
from streams.pipeline.observation import Observation

T0 = datetime(2025, 1, 6, tzinfo=UTC)


def _obs(i: int, partition: int, offset: int) -> Observation:
    event = InferenceOutput.model_validate(
        {
            "request_id": f"r{i}",
            "timestamp": T0 + timedelta(seconds=i),
            "model": "m",
            "model_version": "v1",
        }
    )
    return Observation(event, "m", "v1", {}, Coordinates("outputs", partition, offset))


def _feed(tracker: Tracker, placed: list[tuple[int, int]]) -> None:
    for i, (partition, offset) in enumerate(placed):
        obs = _obs(i, partition, offset)
        tracker.see(obs, False, source(obs))


def test_a_window_holds_its_records_and_none_of_this_detector_before_it() -> None:
    """Observations alternate between partitions 0 and 1 (offsets 10, 20, ... of shared
    partitions, other keys' records between them); partition 2 first appears inside the
    window, partition 3 only before it. Each range holds every record of the window and
    none of this detector's records before it: before, each began at the last record
    before the window, and a partition first seen in the window was cut to its last
    offset."""
    n = 2 * CHECKPOINT_EVERY
    placed = [(i % 2, 10 * i) for i in range(n)]
    placed[3] = (3, 5)
    placed[CHECKPOINT_EVERY + 5] = (2, 7)
    placed[CHECKPOINT_EVERY + 9] = (2, 9)
    tracker = Tracker()
    _feed(tracker, placed)
    start, ranges = tracker.evidence(CHECKPOINT_EVERY)
    assert start == (T0 + timedelta(seconds=CHECKPOINT_EVERY)).timestamp()
    by_partition = {r.partition: (r.first_offset, r.last_offset) for r in ranges}
    window, earlier = placed[CHECKPOINT_EVERY:], placed[:CHECKPOINT_EVERY]
    assert set(by_partition) == {p for p, _ in window}
    for p, offset in window:
        assert by_partition[p][0] <= offset <= by_partition[p][1]
    for p, offset in earlier:
        assert p not in by_partition or not by_partition[p][0] <= offset <= by_partition[p][1]


def test_a_state_saved_before_the_first_offsets_still_gives_ranges() -> None:
    tracker = Tracker()
    _feed(tracker, [(0, 10 * i) for i in range(CHECKPOINT_EVERY + 3)])
    saved = tracker.to_json()
    del saved["first"]
    restored = Tracker.from_json(saved)
    _, ranges = restored.evidence(0)
    assert ranges == (EventRange(topic="outputs", partition=0, first_offset=0, last_offset=340),)
    assert Tracker.from_json(tracker.to_json()) == tracker


def test_an_old_change_point_starts_the_window_at_or_before_it_early_by_a_fraction_of_its_age() -> (
    None
):
    """After 200k observations, every change point gets a window start at or before it,
    at most a quarter of its age early beyond one checkpoint's spacing (ranges start there
    too), and the last 2048 observations keep every checkpoint."""
    n = 200_000
    tracker = Tracker()
    _feed(tracker, [(0, i) for i in range(n)])
    assert len(tracker.checkpoints) == CHECKPOINTS_KEPT
    recent = [cp[0] for cp in tracker.checkpoints[-CHECKPOINTS_DENSE:]]
    assert recent == list(range(n - CHECKPOINTS_DENSE * CHECKPOINT_EVERY, n, CHECKPOINT_EVERY))
    for first_index in [*range(0, n, 97), n - 1]:
        start, [window] = tracker.evidence(first_index)
        assert start is not None
        began = int(start - T0.timestamp())  # observation i is at T0 + i seconds
        age = n - first_index
        assert began <= first_index, first_index
        assert first_index - began <= age / 4 + CHECKPOINT_EVERY, (first_index, began)
        assert window.first_offset == began  # the ranges start where the window does
