"""The join stage: feedback finds its output's labels by request id, in bounded state."""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta

import pytest

from streams.contract.decode import Coordinates
from streams.contract.events import Evaluation, Feedback, InferenceInput, InferenceOutput
from streams.detection_settings import DetectionSettings
from streams.pipeline.join import COMPACT_SLACK, Joiner
from streams.pipeline.observation import Observation, served_time

T0 = datetime(2025, 1, 6, tzinfo=UTC)


def _output(rid: str, t: datetime, version: str = "v1") -> InferenceOutput:
    return InferenceOutput.model_validate(
        {
            "request_id": rid,
            "timestamp": t,
            "model": "chat",
            "model_version": version,
            "segment": {"tenant": "acme"},
            "confidence": 0.9,
        }
    )


def _feedback(rid: str, t: datetime) -> Feedback:
    return Feedback.model_validate(
        {"request_id": rid, "timestamp": t, "vote": "down", "segment": {"locale": "de-DE"}}
    )


def _c(offset: int) -> Coordinates:
    return Coordinates("topic", 0, offset)


def test_feedback_after_output_gets_model_version_and_merged_segment() -> None:
    joiner = Joiner(DetectionSettings(), {})
    assert len(joiner.process(_output("r1", T0), _c(0))) == 1
    [obs] = joiner.process(_feedback("r1", T0 + timedelta(minutes=5)), _c(1))
    assert (obs.model, obs.version) == ("chat", "v1")
    assert obs.segment == {"tenant": "acme", "locale": "de-DE"}
    assert obs.coords == _c(1)
    assert joiner.stats.joined == 1


def test_feedback_before_output_waits_and_is_released_with_its_coordinates() -> None:
    joiner = Joiner(DetectionSettings(), {})
    assert joiner.process(_feedback("r2", T0), _c(7)) == []
    assert joiner.stats.parked == 1
    released = joiner.process(_output("r2", T0 + timedelta(seconds=1), "v2"), _c(8))
    assert [o.event.event_type for o in released] == ["output", "feedback"]
    assert released[1].version == "v2"
    assert released[1].coords == _c(7)
    assert "p:r2" not in joiner.store


def test_inputs_and_labelled_feedback_pass_straight_through() -> None:
    joiner = Joiner(DetectionSettings(), {})
    inp = InferenceInput.model_validate(
        {"request_id": "r3", "timestamp": T0, "model": "chat", "model_version": "v1"}
    )
    fb = Feedback.model_validate(
        {"request_id": "r9", "timestamp": T0, "vote": "up", "model": "m", "model_version": "x"}
    )
    assert joiner.process(inp, _c(0))[0].version == "v1"
    assert joiner.process(fb, _c(1))[0].model == "m"
    assert joiner.store == {}


def test_feedback_and_evaluations_carry_when_their_output_was_served() -> None:
    """Late verdicts date what they report on by their output's time, whether the join
    labelled them or their producer did; the time survives the hop between stages."""
    joiner = Joiner(DetectionSettings(), {})
    [out] = joiner.process(_output("r1", T0), _c(0))
    assert out.served_t is None
    assert served_time(out) == T0.timestamp()
    [fb] = joiner.process(_feedback("r1", T0 + timedelta(hours=1)), _c(1))
    assert fb.served_t == T0.timestamp() == served_time(fb)
    judge = {
        "timestamp": T0 + timedelta(hours=2),
        "model": "chat",
        "model_version": "v1",
        "evaluator": "llm-judge",
        "gen_ai.evaluation.name": "groundedness",
        "gen_ai.evaluation.score.value": 0.2,
    }
    [ev] = joiner.process(Evaluation.model_validate({**judge, "request_id": "r1"}), _c(2))
    assert (ev.version, ev.served_t) == ("v1", T0.timestamp())
    assert joiner.stats.joined == 1  # labelled by its producer: read, not joined
    assert Observation.from_json(ev.to_json()) == ev
    [unseen] = joiner.process(Evaluation.model_validate({**judge, "request_id": "r9"}), _c(3))
    assert unseen.served_t is None
    assert served_time(unseen) == (T0 + timedelta(hours=2)).timestamp()


def test_join_state_is_bounded_by_ttl_and_by_entries_per_partition() -> None:
    settings = DetectionSettings(join_ttl_minutes=10, join_max_entries=100)
    joiner = Joiner(settings, {})
    for i in range(250):
        joiner.process(_output(f"r{i}", T0 + timedelta(seconds=i)), _c(i))
    assert len(joiner.store) == 100
    assert joiner.stats.evicted == 150
    # An hour later everything older than the TTL goes, unjoined feedback is counted.
    joiner.process(_feedback("orphan", T0 + timedelta(minutes=20)), _c(300))
    joiner.process(_output("late", T0 + timedelta(hours=1)), _c(301))
    assert set(joiner.store) == {"o:late"}
    assert joiner.stats.expired_unjoined == 1


def test_fifo_is_rebuilt_from_the_store_after_a_restart() -> None:
    settings = DetectionSettings(join_ttl_minutes=10, join_max_entries=100)
    store: dict[str, object] = {}
    first = Joiner(settings, store)
    for i in range(50):
        first.process(_output(f"r{i}", T0 + timedelta(seconds=i)), _c(i))
    restarted = Joiner(settings, store)  # same (changelog-restored) store, fresh memory
    restarted.process(_output("later", T0 + timedelta(minutes=30)), _c(99))
    assert set(store) == {"o:later"}


def test_entries_restored_by_a_rebalance_are_evicted_in_their_partition() -> None:
    """A rebalance restores another partition's join entries into the same store; the
    eviction order is rebuilt with them (before, they were never evicted)."""
    settings = DetectionSettings(join_ttl_minutes=60, join_max_entries=100)
    store: dict[str, object] = {}
    joiner = Joiner(settings, store)
    joiner.process(_output("a", T0), _c(0), 0)  # the order is built: partition 0 alone
    restored = Joiner(settings, {})
    for i in range(50):
        restored.process(_output(f"r{i}", T0), Coordinates("topic", 1, i), 1)
    store.update(restored.store)  # faust's recovery of partition 1's table
    joiner.reassigned()
    joiner.process(_output("later", T0 + timedelta(hours=2)), Coordinates("topic", 1, 99), 1)
    assert {k for k, v in store.items() if v["part"] == 1} == {"o:later"}  # type: ignore[index]


def test_events_pushed_out_of_a_requests_wait_are_counted() -> None:
    settings = DetectionSettings()
    joiner = Joiner(settings, {})
    for i in range(12):
        joiner.process(_feedback("r", T0 + timedelta(seconds=i)), _c(i))
    released = joiner.process(_output("r", T0 + timedelta(minutes=1)), _c(99))
    waited = [o.coords.offset for o in released if isinstance(o.event, Feedback)]
    assert waited == list(range(4, 12))
    assert (joiner.stats.parked, joiner.stats.joined, joiner.stats.expired_unjoined) == (12, 8, 4)


def test_the_bound_counts_entries_in_the_store_not_writes() -> None:
    """Three evaluations parked before each output are four writes of two keys, and the
    released ``p:`` key is deleted: the eviction order's length counted every write, and
    outputs were evicted with the store at a quarter of ``join_max_entries``; feedback half an
    hour later, well inside the TTL, then never joined."""
    settings = DetectionSettings(join_ttl_minutes=24 * 60, join_max_entries=100)
    joiner = Joiner(settings, {})
    offset = 0
    for i in range(100):
        t = T0 + timedelta(seconds=10 * i)
        for _ in range(3):
            joiner.process(_feedback(f"r{i}", t), _c(offset))
            offset += 1
        joiner.process(_output(f"r{i}", t + timedelta(seconds=1)), _c(offset))
        offset += 1
    assert len(joiner.store) == 100
    assert joiner.stats.evicted == 0
    [late] = joiner.process(_feedback("r10", T0 + timedelta(minutes=30)), _c(offset))
    assert late.model == "chat"  # joined with its output's labels
    # the eviction order keeps no more than its slack of stale entries
    for i in range(100, 3000):
        t = T0 + timedelta(minutes=40, seconds=i)
        joiner.process(_feedback(f"r{i}", t), _c(i))
        joiner.process(_output(f"r{i}", t), _c(i))
    assert len(joiner.store) == 100
    assert len(joiner._fifos()[0]) <= 2 * 100 + COMPACT_SLACK + 1


class _HandOffError(Exception):
    pass


def test_released_events_stay_parked_until_handed_on() -> None:
    """The worker hands released events on inside ``holding_releases``: a hand-off that
    raises leaves them parked, and the retried output releases them again (before, the
    entry was deleted as the output arrived, and a failed hand-off lost them)."""
    joiner = Joiner(DetectionSettings(), {})
    joiner.process(_feedback("r", T0), _c(0))
    scopes: list[int] = []

    def in_partition(part: int) -> AbstractContextManager[None]:
        scopes.append(part)
        return nullcontext()

    def fail_hand_off() -> None:
        with joiner.holding_releases(in_partition):
            released = joiner.process(_output("r", T0 + timedelta(seconds=1)), _c(1), 3)
            assert [o.event.event_type for o in released] == ["output", "feedback"]
            # a second copy of the output, in the same block, releases nothing twice
            again = joiner.process(_output("r", T0 + timedelta(seconds=1)), _c(1), 3)
            assert [o.event.event_type for o in again] == ["output"]
            raise _HandOffError

    with pytest.raises(_HandOffError):
        fail_hand_off()
    assert "p:r" in joiner.store
    assert scopes == []
    with joiner.holding_releases(in_partition):
        retried = joiner.process(_output("r", T0 + timedelta(seconds=1)), _c(1), 3)
        assert "p:r" in joiner.store  # still parked while the block runs
    assert [o.coords for o in retried] == [_c(1), _c(0)]
    assert "p:r" not in joiner.store
    assert scopes == [3]  # the deletion is written in the entry's partition
    assert joiner.stats.expired_unjoined == 0


def test_a_released_entry_is_not_expired_while_held() -> None:
    settings = DetectionSettings(join_ttl_minutes=10)
    joiner = Joiner(settings, {})
    joiner.process(_feedback("r", T0), _c(0))
    with joiner.holding_releases():
        joiner.process(_output("r", T0 + timedelta(minutes=20)), _c(1))
    assert joiner.stats.expired_unjoined == 0
    assert joiner.stats.joined == 1
    assert set(joiner.store) == {"o:r"}


def test_an_entry_held_by_a_failed_block_is_still_evicted() -> None:
    """The block's eviction passed over the held entry; after a failure it stays parked
    and must still leave at its TTL."""
    joiner = Joiner(DetectionSettings(join_ttl_minutes=10), {})
    joiner.process(_feedback("r", T0), _c(0))

    def fail() -> None:
        with joiner.holding_releases():
            joiner.process(_output("r", T0 + timedelta(minutes=20)), _c(1))
            raise _HandOffError

    with pytest.raises(_HandOffError):
        fail()
    assert "p:r" in joiner.store
    joiner.process(_output("later", T0 + timedelta(minutes=45)), _c(2))
    assert set(joiner.store) == {"o:later"}
    assert joiner.stats.expired_unjoined == 1


def test_two_tasks_hold_their_releases_apart() -> None:
    """The ingress and join agents share one joiner, and each holds its block open across
    the await of its hand-off: the second to enter raised "not reentrant" (the ingress
    then dead-lettered good events, the join agent crashed). Each task holds its own."""
    joiner = Joiner(DetectionSettings(), {})
    joiner.process(_feedback("a", T0), _c(0))
    joiner.process(_feedback("b", T0), _c(1))
    handing_off = asyncio.Event()
    released: dict[str, list[str]] = {}

    async def agent(rid: str, offset: int, first: bool) -> None:
        with joiner.holding_releases():
            out = joiner.process(_output(rid, T0 + timedelta(seconds=1)), _c(offset))
            released[rid] = [o.event.event_type for o in out]
            if first:  # the hand-off waits (a full producer batch): the other task runs
                await handing_off.wait()
            else:
                handing_off.set()
            assert f"p:{rid}" in joiner.store  # held until this block completes

    async def both() -> None:
        await asyncio.gather(agent("a", 2, first=True), agent("b", 3, first=False))

    asyncio.run(both())
    assert released == {"a": ["output", "feedback"], "b": ["output", "feedback"]}
    assert set(joiner.store) == {"o:a", "o:b"}
