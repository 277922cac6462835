from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from pydantic import SecretStr

from alerting.delivery import (
    DeliveredLog,
    DeliveryOutcome,
    DeliveryRunner,
    FailedDelivery,
    RetryPolicy,
)
from alerting.engine import IncidentEngine
from alerting.model import IncidentEvent
from alerting.payloads import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from alerting.sinks import PagerDutySink, SlackSink, WebhookSink
from alerting.transport import HttpRequest, HttpResponse, TransportError

from .helpers import T0, ManualClock, detection, playbooks, policy


class ScriptedTransport:
    """Returns the scripted statuses in order (an exception instance is raised)."""

    def __init__(self, script: list[int | Exception]) -> None:
        self.script = list(script)
        self.requests: list[HttpRequest] = []

    def post(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, Exception):
            raise step
        return HttpResponse(status=step, retry_after_s=7.0 if step == 429 else None)


def _event(replay: bool = False) -> IncidentEvent:
    [ev] = IncidentEngine(policy(), playbooks()).observe(detection(replay=replay))
    return ev


def _runner(
    script: list[int | Exception],
    sink: object | None = None,
    max_attempts: int = 5,
    retry_for_s: float = 0.0,
) -> tuple[DeliveryRunner, ScriptedTransport, list[float], list[FailedDelivery]]:
    transport = ScriptedTransport(script)
    sleeps: list[float] = []
    dead: list[FailedDelivery] = []
    clock = ManualClock()

    def sleep(seconds: float) -> None:  # time passes while the runner waits
        sleeps.append(seconds)
        clock.t += timedelta(seconds=seconds)

    runner = DeliveryRunner(
        sink or WebhookSink("http://127.0.0.1:1/hook", SecretStr("s3cret")),  # type: ignore[arg-type]
        transport,
        dead_letter=dead.append,
        sleep=sleep,
        clock=clock,
        retry=RetryPolicy(
            max_attempts=max_attempts,
            initial_backoff_s=1,
            max_backoff_s=5,
            retry_for_s=retry_for_s,
        ),
    )
    return runner, transport, sleeps, dead


def test_retries_with_exponential_backoff_then_delivers_once() -> None:
    runner, transport, sleeps, dead = _runner([503, TransportError("ConnectionRefused"), 500])
    ev = _event()
    assert runner.deliver(ev) == DeliveryOutcome.DELIVERED
    assert sleeps == [1, 2, 4]
    assert len(transport.requests) == 4
    assert dead == []
    assert runner.deliver(ev) == DeliveryOutcome.DUPLICATE
    assert len(transport.requests) == 4


def test_retry_after_is_honoured_and_capped() -> None:
    runner, _, sleeps, _ = _runner([429, 408])
    assert runner.deliver(_event()) == DeliveryOutcome.DELIVERED
    assert sleeps == [5, 2]  # 7s Retry-After capped at 5; then 2^1


def test_permanent_4xx_dead_letters_without_retry() -> None:
    runner, transport, sleeps, dead = _runner([400])
    ev = _event()
    assert runner.deliver(ev) == DeliveryOutcome.DEAD_LETTERED
    assert len(transport.requests) == 1
    assert sleeps == []
    [dl] = dead
    assert dl.event == ev
    assert dl.last_status == 400
    assert "permanent" in dl.reason
    assert runner.deliver(ev) == DeliveryOutcome.DUPLICATE


def test_exhausted_retries_dead_letter() -> None:
    runner, transport, sleeps, dead = _runner([503] * 10, max_attempts=3)
    assert runner.deliver(_event()) == DeliveryOutcome.DEAD_LETTERED
    assert len(transport.requests) == 3
    assert sleeps == [1, 2]
    assert "retries exhausted after 3 attempts" in dead[0].reason


def test_an_endpoint_down_for_minutes_loses_nothing() -> None:
    """Ten minutes of 503s and refused connections (simulated time), then it recovers:
    with the default retry_for_s (30 min) the event waits and is delivered once."""
    outage: list[int | Exception] = [503, TransportError("ConnectionRefused")] * 65
    runner, transport, sleeps, dead = _runner([*outage, 200], retry_for_s=1800.0)
    assert runner.deliver(_event()) == DeliveryOutcome.DELIVERED
    assert dead == []
    assert sum(sleeps) >= 600
    assert len(transport.requests) == len(outage) + 1


def test_an_outage_longer_than_retry_for_s_dead_letters() -> None:
    runner, _, sleeps, dead = _runner([503] * 1000, max_attempts=3, retry_for_s=60.0)
    assert runner.deliver(_event()) == DeliveryOutcome.DEAD_LETTERED
    assert 60 <= sum(sleeps) <= 65
    assert "retries exhausted" in dead[0].reason


def test_failing_dead_letter_propagates_and_event_is_not_marked() -> None:
    transport = ScriptedTransport([400, 200])

    def broken(_: FailedDelivery) -> None:
        raise RuntimeError("dlq down")

    runner = DeliveryRunner(
        WebhookSink("http://127.0.0.1:1/", SecretStr("k")),
        transport,
        dead_letter=broken,
        sleep=lambda _: None,
        clock=ManualClock(),
    )
    ev = _event()
    with pytest.raises(RuntimeError, match="dlq down"):
        runner.deliver(ev)
    assert ev.event_id not in runner.delivered
    assert runner.deliver(ev) == DeliveryOutcome.DELIVERED


def test_replayed_events_never_page_but_reach_the_generic_webhook() -> None:
    ev = _event(replay=True)
    pd, pd_t, _, _ = _runner([], sink=PagerDutySink(SecretStr("rk")))
    assert pd.deliver(ev) == DeliveryOutcome.SKIPPED_REPLAY
    assert pd_t.requests == []
    hook, hook_t, _, _ = _runner([])
    assert hook.deliver(ev) == DeliveryOutcome.DELIVERED
    assert len(hook_t.requests) == 1


def test_webhook_request_is_signed_and_secrets_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    runner, transport, _, _ = _runner([503])
    assert runner.deliver(_event()) == DeliveryOutcome.DELIVERED
    req = transport.requests[-1]
    assert verify(
        b"s3cret", req.body, req.headers[TIMESTAMP_HEADER], req.headers[SIGNATURE_HEADER], now=T0
    )
    slack, _, _, _ = _runner([500], sink=SlackSink(SecretStr("https://hooks.slack.test/T/B/XYZ")))
    slack.deliver(_event())
    pd, pd_t, _, _ = _runner([500], sink=PagerDutySink(SecretStr("rk-secret")))
    pd.deliver(_event())
    assert b"rk-secret" in pd_t.requests[-1].body  # it is sent...
    text = (
        caplog.text + repr(pd_t.requests[-1]) + repr(PagerDutySink(SecretStr("rk-secret")).__dict__)
    )
    for secret in ("s3cret", "XYZ", "rk-secret"):  # ...but never logged or repr'd
        assert secret not in text


def test_delivered_log_is_bounded_and_round_trips() -> None:
    log = DeliveredLog(capacity=3)
    for i in range(5):
        log.add(f"e{i}")
    assert "e0" not in log
    assert "e4" in log
    other = DeliveredLog(capacity=3)
    other.set_state(log.get_state())
    assert other.get_state() == ["e2", "e3", "e4"]


def test_a_backoff_capped_short_does_not_overflow_in_a_long_outage() -> None:
    """With a one-second cap, a 30-minute outage makes over a thousand attempts: the
    2.0 ** attempt behind the backoff overflowed, and notify died mid-outage."""
    retry = RetryPolicy(max_backoff_s=1.0)
    assert retry.backoff(1) == 0.5
    assert retry.backoff(5_000) == 1.0
    assert RetryPolicy(initial_backoff_s=0.0, max_backoff_s=1.0).backoff(5_000) == 0.0
