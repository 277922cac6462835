"""Slack's Web API mode: one thread per incident (issue 12 item 5)."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr, ValidationError

from alerting.delivery import DeliveryOutcome, DeliveryRunner, FailedDelivery
from alerting.delivery_state import DeliveryState, fold_delivery_states, refs_of
from alerting.engine import IncidentEngine
from alerting.model import IncidentEvent
from alerting.sink_config import SlackSinkConfig, make_sink
from alerting.sinks import SlackThreadSink
from alerting.transport import HttpRequest, HttpResponse
from streams.cli.notify_config import NotifyFile, SlackSection, sink_config

from .helpers import T0, ManualClock, detection, minutes, playbooks, policy, signal


class SlackLike:
    """Answers as chat.postMessage does: 200 with ok and the new message's ts (or a
    scripted error), numbering messages 1, 2, ..."""

    def __init__(self, errors: list[str] | None = None) -> None:
        self.errors = list(errors or [])
        self.requests: list[HttpRequest] = []

    def post(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        if self.errors:
            return HttpResponse(
                status=200, body=json.dumps({"ok": False, "error": self.errors.pop(0)}).encode()
            )
        ts = f"1700000000.{len(self.requests):06d}"
        return HttpResponse(status=200, body=json.dumps({"ok": True, "ts": ts}).encode())


def _runner(transport: SlackLike) -> tuple[DeliveryRunner, list[FailedDelivery]]:
    dead: list[FailedDelivery] = []
    sink = SlackThreadSink(SecretStr("xoxb-test"), "#incidents", url="http://127.0.0.1:1/api")
    runner = DeliveryRunner(
        sink,
        transport,
        dead_letter=dead.append,
        sleep=lambda s: None,
        clock=ManualClock(),
    )
    return runner, dead


def _lifecycle() -> list[IncidentEvent]:
    """Trigger, escalation by a worse detection, resolve: one incident's events."""
    eng = IncidentEngine(policy(), playbooks())
    events = eng.observe(detection(T0))
    events += eng.observe(
        detection(T0 + minutes(5), sig=signal(effect=2.5, statistic=40.0, last_index=2000))
    )
    events += eng.tick(T0 + minutes(60))
    return events


def test_one_incident_is_one_thread_and_the_resolve_is_broadcast() -> None:
    events = _lifecycle()
    assert [e.action for e in events] == ["trigger", "update", "resolve"]
    slack = SlackLike()
    runner, dead = _runner(slack)
    assert [runner.deliver(e) for e in events] == [DeliveryOutcome.DELIVERED] * 3
    assert dead == []
    bodies = [json.loads(r.body) for r in slack.requests]
    assert all(b["channel"] == "#incidents" for b in bodies)
    assert "thread_ts" not in bodies[0]
    assert [b.get("thread_ts") for b in bodies[1:]] == ["1700000000.000001"] * 2
    assert "reply_broadcast" not in bodies[1]
    assert bodies[2]["reply_broadcast"] is True
    assert slack.requests[0].headers["Authorization"] == "Bearer xoxb-test"


def test_a_refusal_in_a_200_answer_is_a_failed_delivery_naming_slacks_error() -> None:
    [trigger] = IncidentEngine(policy(), playbooks()).observe(detection(T0))
    runner, dead = _runner(SlackLike(errors=["channel_not_found"]))
    assert runner.deliver(trigger) == DeliveryOutcome.DEAD_LETTERED
    [letter] = dead
    assert "channel_not_found" in letter.reason


def test_config_takes_a_webhook_or_a_token_and_channel_never_both() -> None:
    with pytest.raises(ValidationError, match="either webhook_url, or token and channel"):
        SlackSinkConfig(type="slack")
    with pytest.raises(ValidationError):
        SlackSinkConfig(
            type="slack", webhook_url=SecretStr("https://h/x"), token=SecretStr("t"), channel="#c"
        )
    cfg = sink_config(
        "slack",
        NotifyFile(slack=SlackSection(channel="#incidents")),
        url=None,
        environ={"SENTINEL_NOTIFY_SLACK_TOKEN": "xoxb-1"},
        source="notify.toml",
    )
    assert isinstance(make_sink(cfg), SlackThreadSink)


def test_threads_go_out_with_the_delivery_states_and_come_back_after_a_restart() -> None:
    """The thread ts travels in each delivery state (``ref``); a new sink (a restarted
    notify) given the refs of its group replies in the incident's thread."""
    events = _lifecycle()
    states: list[DeliveryState] = []
    transport = SlackLike()
    runner, _ = _runner(transport)
    runner.on_state = states.append
    assert runner.deliver(events[0]) is DeliveryOutcome.DELIVERED
    thread = "1700000000.000001"
    assert states[-1].ref == thread
    grouped = [s.model_copy(update={"group": "notify-a"}) for s in states]
    other = states[-1].model_copy(update={"group": "notify-b", "ref": "1700000000.999999"})
    folded, bad = fold_delivery_states(s.model_dump_json().encode() for s in [*grouped, other])
    assert bad == 0
    refs = refs_of(folded, "notify-a")
    assert refs == {events[0].incident_id: thread}

    restarted, _ = _runner(transport)
    assert isinstance(restarted.sink, SlackThreadSink)
    restarted.sink.restore_refs(refs)
    assert restarted.deliver(events[-1]) is DeliveryOutcome.DELIVERED
    last = json.loads(transport.requests[-1].body)
    assert last["thread_ts"] == thread
    assert last["reply_broadcast"] is True


def test_a_momentary_slack_failure_is_retried_not_dead_lettered() -> None:
    """Slack answers 200 with ``ok: false`` for its own momentary failures too
    (``internal_error``, ``service_unavailable``, ...): each was dead-lettered at once."""
    transport = SlackLike(errors=["internal_error", "service_unavailable"])
    runner, dead = _runner(transport)
    [event] = _lifecycle()[:1]
    assert runner.deliver(event) == DeliveryOutcome.DELIVERED
    assert len(transport.requests) == 3
    assert dead == []
