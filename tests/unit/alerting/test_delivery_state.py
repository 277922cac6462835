"""Delivery state per sink (issue 18 item 5): what the runner reports, how the topic's
records fold, and what ``sentinel status`` prints."""

from __future__ import annotations

from datetime import timedelta

from pydantic import SecretStr

from alerting.delivery import (
    DeliveryOutcome,
    DeliveryRunner,
    HandledSequences,
    RetryPolicy,
    handled_sequences,
)
from alerting.delivery_state import (
    DeliveryState,
    DeliveryStatus,
    fold_delivery_states,
    problems,
    render_delivery,
)
from alerting.engine import IncidentEngine
from alerting.model import IncidentEvent
from alerting.sinks import WebhookSink
from alerting.status import fold_open_incidents

from .helpers import T0, ManualClock, detection, minutes, playbooks, policy, signal
from .test_delivery import ScriptedTransport


def _events() -> list[IncidentEvent]:
    eng = IncidentEngine(policy(), playbooks())
    first = eng.observe(detection(T0))
    upd = eng.observe(detection(T0 + minutes(3), sig=signal(effect=1.5, p_value=1e-9,
                                                            last_index=5)))  # fmt: skip
    return first + upd


def _run(script: list[int | Exception], event: IncidentEvent) -> list[DeliveryState]:
    states: list[DeliveryState] = []
    clock = ManualClock()

    def sleep(seconds: float) -> None:
        clock.t += timedelta(seconds=seconds)

    runner = DeliveryRunner(
        WebhookSink("http://127.0.0.1:1/hook", SecretStr("s")),
        ScriptedTransport(script),
        dead_letter=lambda _: None,
        sleep=sleep,
        clock=clock,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=1, max_backoff_s=5, retry_for_s=0),
        on_state=states.append,
    )
    runner.deliver(event)
    return states


def test_runner_reports_retrying_then_delivered_or_dead_lettered() -> None:
    ev = _events()[0]
    ok = _run([503, 200], ev)
    assert [s.status for s in ok] == [DeliveryStatus.RETRYING, DeliveryStatus.DELIVERED]
    assert [s.attempts for s in ok] == [1, 2]
    assert ok[0].reason.startswith("HTTP 503")
    assert ok[1].reason == ""
    assert {s.key() for s in ok} == {f"webhook|{ev.incident_id}".encode()}
    dead = _run([503, 503, 503], ev)
    assert [s.status for s in dead][-1] is DeliveryStatus.DEAD_LETTERED
    assert "retries exhausted after 3 attempts" in dead[-1].reason


def test_fold_keeps_the_latest_state_of_the_newest_event_per_sink() -> None:
    first, upd = _events()
    delivered_upd = DeliveryState.of("webhook", upd, DeliveryStatus.DELIVERED, 1, T0)
    late_retry_of_first = DeliveryState.of("webhook", first, DeliveryStatus.RETRYING, 2, T0)
    slack = DeliveryState.of("slack", first, DeliveryStatus.DEAD_LETTERED, 1, T0, "HTTP 404")
    values = [s.model_dump_json().encode() for s in (delivered_upd, late_retry_of_first, slack)] + [
        b"{broken",
        None,
    ]
    states, bad = fold_delivery_states(values)
    assert bad == 1
    assert states[first.incident_id] == {"webhook": delivered_upd, "slack": slack}
    text = render_delivery([upd], states)
    lines = text.splitlines()
    assert lines[0].startswith(f"{upd.incident_id}  slack: dead_lettered (trigger seq 1")
    assert lines[0].endswith("HTTP 404; latest event is seq 2")
    assert lines[1].startswith(f"{upd.incident_id}  webhook: delivered (update seq 2, 1 attempt")
    assert render_delivery([upd], {}) == (
        f"{upd.incident_id}: not delivered yet (no sink has reported)"
    )
    assert problems(states, [upd.incident_id]) == []
    assert problems(states, []) == [slack]


def test_an_older_step_read_again_after_the_resolve_is_not_sent_even_after_a_restart() -> None:
    """A worker's at-least-once redelivery can publish an update again after the
    incident's resolve. If notify restarted in between (its delivered ids are in memory),
    that copy paged again, a trigger with nothing left to resolve it; and ``status`` and
    the Alertmanager sink's restore took the incident for open."""
    eng = IncidentEngine(policy(), playbooks())
    events = eng.observe(detection(T0))
    events += eng.observe(
        detection(T0 + minutes(3), sig=signal(effect=2.5, statistic=40.0, last_index=2000))
    )
    events += eng.tick(T0 + minutes(300))
    assert [e.action for e in events] == ["trigger", "update", "resolve"]
    trigger, update, resolve = events
    states: list[DeliveryState] = []
    transport = ScriptedTransport([])

    def runner(handled: HandledSequences | None = None) -> DeliveryRunner:
        return DeliveryRunner(
            WebhookSink("http://127.0.0.1:1/hook", SecretStr("s")),
            transport,
            dead_letter=lambda _: None,
            sleep=lambda s: None,
            clock=ManualClock(),
            handled=handled,
            on_state=states.append,
        )

    first = runner()
    assert [first.deliver(e) for e in events] == [DeliveryOutcome.DELIVERED] * 3
    group = "sentinel-notify-webhook"
    published = [s.model_copy(update={"group": group}) for s in states]
    restarted = runner(handled_sequences(published, group))
    assert restarted.deliver(update) == DeliveryOutcome.STALE
    assert restarted.deliver(trigger) == DeliveryOutcome.STALE
    assert len(transport.requests) == 3
    assert handled_sequences(published, "another-group").get(trigger.incident_id) is None
    # what status and the Alertmanager sink's restore read from the alerts topic
    assert fold_open_incidents([trigger, update, resolve, update]) == []
    # a new incident under the same dedup key, then a copy of the old one's resolve
    later = IncidentEngine(policy(), playbooks()).observe(detection(T0 + minutes(400)))
    again = [e.model_copy(update={"incident_id": "inc-later"}) for e in later]
    assert again[0].dedup_key == resolve.dedup_key
    assert fold_open_incidents([*events, *again, resolve]) == again
