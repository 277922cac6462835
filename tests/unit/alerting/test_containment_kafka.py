from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from kafka.structs import OffsetAndMetadata, TopicPartition
from pydantic import SecretStr

from alerting.containment import (
    ContainmentState,
    ModelContainment,
    commands_for,
    fold,
    fold_control,
)
from alerting.delivery import DeliveryRunner, FailedDelivery
from alerting.engine import IncidentEngine
from alerting.model import IncidentEvent
from alerting.playbooks import PlaybookSet
from alerting.sinks import WebhookSink
from alerting.transport import HttpRequest, HttpResponse
from detectors.base import SignalKind
from streams.runtime.consumers import (
    containment_loop,
    handle_containment_event,
    restore_containment_state,
)
from streams.runtime.notify_consumer import notify_loop

from .helpers import T0, ManualClock, detection, minutes, playbooks, policy, signal


def _lifecycle(kind: SignalKind, feature: str | None = None, **kw: Any) -> list[IncidentEvent]:
    eng = IncidentEngine(policy(), playbooks())
    events = eng.observe(detection(sig=signal(kind, feature=feature), **kw))
    return events + eng.tick(T0 + minutes(300))


def test_trigger_applies_playbook_actions_and_resolve_releases_them() -> None:
    trig, res = _lifecycle(SignalKind.CRITICAL_EVENT, "self_harm")
    pbs = playbooks()
    [apply] = commands_for(trig, pbs)
    assert apply.op == "apply"
    assert apply.model == "support-bot"
    kinds = [a.action for a in apply.actions]
    assert kinds == ["route_to_fallback", "enable_filter"]
    assert apply.actions[0].model_dump()["fallback_model"] == "support-bot-safe"
    assert apply.actions[1].model_dump()["name"] == "critical-self_harm"
    [release] = commands_for(res, pbs)
    assert release.op == "release"
    state = fold([apply])
    snap = state.snapshot("support-bot")
    assert snap is not None
    assert len(snap.measures) == 2
    assert "route_to_fallback(support-bot-safe)" in state.render()
    # idempotent fold: applying twice changes nothing
    assert fold([apply, apply]) == state
    after = state.apply(release)
    released = after.snapshot("support-bot")
    assert released is not None
    assert released.measures == ()
    assert "no containment" in after.render()


def test_bad_deploy_rolls_back_to_previous_version_and_skips_unknowns() -> None:
    eng = IncidentEngine(policy(), playbooks())
    eng.record_deploy("m", "v1", T0 - minutes(500))
    eng.record_deploy("m", "v2", T0)
    [ev] = eng.observe(detection(T0 + minutes(40), model="m", version="v2"))
    [cmd] = commands_for(ev, playbooks())
    assert cmd.actions[0].model_dump() == {"action": "rollback", "to_version": "v1"}
    eng2 = IncidentEngine(policy(), playbooks())
    eng2.record_deploy("m", "v9", T0)  # no previous version known
    [ev2] = eng2.observe(detection(T0 + minutes(40), model="m", version="v9"))
    [cmd2] = commands_for(ev2, playbooks())
    assert cmd2.actions == ()
    assert "previous_version" in cmd2.skipped[0]


def test_updates_replays_and_actionless_playbooks_give_no_commands() -> None:
    [t, _] = _lifecycle(SignalKind.INPUT_DRIFT)
    assert commands_for(t, playbooks()) == []
    [rt, _] = _lifecycle(SignalKind.DOWNVOTE_RATE, replay=True)
    assert commands_for(rt, playbooks()) == []


def test_measures_of_two_incidents_on_one_model_are_independent() -> None:
    [a, ra] = _lifecycle(SignalKind.DOWNVOTE_RATE)
    [b, _] = _lifecycle(SignalKind.PROMPT_INJECTION_RATE)
    pbs = playbooks()
    st = fold(commands_for(a, pbs) + commands_for(b, pbs) + commands_for(ra, pbs))
    snap = st.snapshot("support-bot")
    assert snap is not None
    assert [m.incident_id for m in snap.measures] == [b.incident_id]


def test_a_resolve_releases_what_is_in_force_though_its_playbook_no_longer_contains() -> None:
    """The release used to follow the playbook as it is now: with its containment taken out
    (or its file removed) before the incident resolved, the measures stayed for good."""
    trig, res = _lifecycle(SignalKind.CRITICAL_EVENT, "self_harm")
    pbs = playbooks()
    state, [applied] = handle_containment_event(trig, ContainmentState(), pbs, dry_run=False)
    assert len(applied.measures) == 2
    edited = {n: p for n in pbs.names() if (p := pbs.get(n)) is not None}
    edited["critical_event"] = edited["critical_event"].model_copy(update={"containment": ()})
    removed = {n: p for n, p in edited.items() if n != "critical_event"}
    for now in (PlaybookSet(edited), PlaybookSet(removed)):
        after, [released] = handle_containment_event(res, state, now, dry_run=False)
        assert released.measures == ()
        # an incident with nothing in force: its resolve publishes nothing
        assert handle_containment_event(res, after, now, dry_run=False) == (after, [])


def test_a_trigger_read_again_after_its_release_is_not_applied_again() -> None:
    """A worker's at-least-once redelivery, or a containment group that re-read the alerts
    topic, switched a long-resolved incident's fallback on again, for good."""
    trig, res = _lifecycle(SignalKind.CRITICAL_EVENT, "self_harm")
    pbs = playbooks()
    state = ContainmentState()
    for event in (trig, res):
        state, _ = handle_containment_event(event, state, pbs, dry_run=False)
    snap = state.snapshot("support-bot")
    assert snap is not None
    assert snap.measures == ()
    assert snap.released == {trig.incident_id: res.sequence}
    # restarted: the state comes back from the control topic's snapshot
    restored, bad = fold_control([snap.to_json_bytes()])
    assert bad == 0
    assert handle_containment_event(trig, restored, pbs, dry_run=False) == (restored, [])
    # a reopening of the incident is a new trigger, a later step than the release (though
    # stamped earlier: a detection's event time can trail a wall-clock tick's resolve)
    reopened = trig.model_copy(
        update={"sequence": 4, "emitted_at": res.emitted_at - minutes(10), "event_id": "e4"}
    )
    _, [again] = handle_containment_event(reopened, restored, pbs, dry_run=False)
    assert len(again.measures) == 2


# ---- kafka loops with fake clients ---------------------------------------------------


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes | None


class FakeConsumer:
    def __init__(self, records: list[Rec]) -> None:
        self.pending = list(records)
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self.closed = False

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Rec]]:
        batch, self.pending = self.pending[:2], self.pending[2:]
        return {("t", 0): batch} if batch else {}

    def commit(self, offsets: Any = None) -> None:
        self.commits.append(offsets)

    def seek(self, partition: Any, offset: int) -> None:
        raise AssertionError("the containment loop never seeks")

    def close(self) -> None:
        self.closed = True


class Future:
    def get(self, timeout: float | None = None) -> None:
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Future:
        self.sent.append((topic, key, value))
        return Future()

    def flush(self, timeout: float | None = None) -> None:
        return None


class OkTransport:
    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[bytes] = []
        self.fail = fail_first

    def post(self, request: HttpRequest) -> HttpResponse:
        if self.fail:
            self.fail -= 1
            return HttpResponse(status=422)
        self.bodies.append(request.body)
        return HttpResponse(status=200)


def _stop_when_empty(c: FakeConsumer) -> Any:
    return lambda: not c.pending


def test_notify_loop_commits_each_record_after_delivery_or_dead_letter() -> None:
    [t, r] = _lifecycle(SignalKind.DOWNVOTE_RATE)
    recs = [
        Rec("alerts", 0, 10, t.to_json_bytes()),
        Rec("alerts", 0, 11, b"{not json"),
        Rec("alerts", 0, 12, t.to_json_bytes()),  # redelivered duplicate
        Rec("alerts", 0, 13, r.to_json_bytes()),
    ]
    consumer = FakeConsumer(recs)
    dead: list[FailedDelivery] = []
    raw: list[bytes] = []
    transport = OkTransport(fail_first=1)  # first event permanently rejected (422)
    runner = DeliveryRunner(
        WebhookSink("http://127.0.0.1:1/", SecretStr("k")),
        transport,
        dead_letter=dead.append,
        sleep=lambda _: None,
        clock=ManualClock(),
    )
    stats = notify_loop(
        consumer,
        runner,
        dead_letter_raw=raw.append,
        should_stop=lambda: not consumer.pending,
        clock=ManualClock(),
    )
    assert stats.outcomes == {"dead_lettered": 1, "undecodable": 1, "duplicate": 1, "delivered": 1}
    assert [next(iter(c.values())).offset for c in consumer.commits] == [11, 12, 13, 14]
    assert dead[0].event == t
    assert b'"offset": 11' in raw[0]
    assert [IncidentEvent.model_validate_json(b) for b in transport.bodies] == [r]


def test_notify_loop_does_not_commit_when_dead_letter_fails() -> None:
    [t, _] = _lifecycle(SignalKind.DOWNVOTE_RATE)
    consumer = FakeConsumer([Rec("alerts", 0, 5, t.to_json_bytes())])

    def broken(_: FailedDelivery) -> None:
        raise ConnectionError("dlq unavailable")

    runner = DeliveryRunner(
        WebhookSink("http://127.0.0.1:1/", SecretStr("k")),
        OkTransport(fail_first=1),
        dead_letter=broken,
        sleep=lambda _: None,
        clock=ManualClock(),
    )
    with pytest.raises(ConnectionError):
        notify_loop(
            consumer,
            runner,
            dead_letter_raw=lambda _: None,
            should_stop=lambda: False,
            clock=ManualClock(),
        )
    assert consumer.commits == []


def test_containment_loop_publishes_snapshots_keyed_by_model_and_dry_run_does_not() -> None:
    [t, r] = _lifecycle(SignalKind.PROMPT_INJECTION_RATE)
    recs = [Rec("alerts", 0, 0, t.to_json_bytes()), Rec("alerts", 0, 1, r.to_json_bytes())]
    consumer = FakeConsumer(recs)
    producer = FakeProducer()
    state = containment_loop(
        consumer,
        producer,
        "control",
        playbooks(),
        state=ContainmentState(),
        dry_run=False,
        should_stop=lambda: not consumer.pending,
        clock=ManualClock(),
    )
    assert [(topic, key) for topic, key, _ in producer.sent] == [
        ("control", b"support-bot"),
        ("control", b"support-bot"),
    ]
    first = ModelContainment.model_validate_json(producer.sent[0][2] or b"")
    assert first.measures[0].action.action == "enable_filter"
    last = ModelContainment.model_validate_json(producer.sent[1][2] or b"")
    assert last.measures == ()
    assert len(consumer.commits) == 2
    assert state.snapshot("support-bot") == last
    # the compacted topic restores the same state
    restored = restore_containment_state(
        FakeConsumer([Rec("control", 0, i, v) for i, (_, _, v) in enumerate(producer.sent)]),
        idle_polls=1,
    )
    assert restored == state
    # dry run: same state, nothing published
    consumer2 = FakeConsumer(recs)
    dry = containment_loop(
        consumer2,
        None,
        "control",
        playbooks(),
        state=ContainmentState(),
        dry_run=True,
        should_stop=lambda: not consumer2.pending,
        clock=ManualClock(),
    )
    snap = dry.snapshot("support-bot")
    assert snap is not None
    assert snap.last_command is not None
    assert snap.last_command.dry_run
    assert len(consumer2.commits) == 2


def test_a_snapshot_without_releases_reads_as_before() -> None:
    """``released`` is left out while empty: a reader of the snapshot's earlier shape (the
    previous release's status and console, a serving platform with a strict schema) reads
    every snapshot of a model that never had a release."""
    trig, _ = _lifecycle(SignalKind.CRITICAL_EVENT, "self_harm")
    _, [snap] = handle_containment_event(trig, ContainmentState(), playbooks(), dry_run=False)
    assert "released" not in json.loads(snap.to_json_bytes())
