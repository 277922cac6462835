"""The generic webhook sink against a real local HTTP server that fails, then recovers.

A ThreadingHTTPServer on 127.0.0.1 (ephemeral port) answers 503 to the first requests and
200 afterwards; it verifies every HMAC signature and records the bodies. The incident
events of several incidents, each fed twice (at-least-once input), must arrive exactly once
each and in order, with real urllib transport and bounded retries.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from alerting.clock import SystemClock
from alerting.delivery import DeliveryOutcome, DeliveryRunner, FailedDelivery, RetryPolicy
from alerting.engine import IncidentEngine
from alerting.model import IncidentEvent
from alerting.sinks import WebhookSink
from alerting.transport import UrllibTransport
from detectors.base import SignalKind
from tests.integration.webhook_receiver import Recorder, serve
from tests.unit.alerting.helpers import T0, detection, minutes, playbooks, policy, signal

SECRET = b"integration-secret"
FAIL_FIRST = 5


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder(SECRET, fail_first=FAIL_FIRST)
    with serve(rec, "/sentinel") as url:
        yield url, rec


def _events() -> list[IncidentEvent]:
    eng = IncidentEngine(policy(), playbooks())
    out: list[IncidentEvent] = []
    for i, kind in enumerate([SignalKind.DOWNVOTE_RATE, SignalKind.INPUT_DRIFT]):
        out += eng.observe(detection(T0 + minutes(i), sig=signal(kind)))
    out += eng.observe(
        detection(T0 + minutes(3), sig=signal(effect=1.5, p_value=1e-9, last_index=5))
    )
    out += eng.tick(T0 + minutes(300))
    return out


@pytest.mark.timeout(60)
def test_webhook_sink_survives_outage_without_loss_or_duplicates(
    server: tuple[str, Recorder],
) -> None:
    url, rec = server
    events = _events()
    assert [e.action.value for e in events] == [
        "trigger",
        "trigger",
        "update",
        "resolve",
        "resolve",
    ]
    dead: list[FailedDelivery] = []
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        time.sleep(s)

    runner = DeliveryRunner(
        WebhookSink(url, SecretStr(SECRET.decode())),
        UrllibTransport(timeout_s=5, use_env_proxy=False),
        dead_letter=dead.append,
        sleep=sleep,
        clock=SystemClock(),
        retry=RetryPolicy(max_attempts=10, initial_backoff_s=0.01, max_backoff_s=0.2),
    )
    outcomes = [runner.deliver(e) for e in events + events]  # at-least-once input
    assert outcomes[: len(events)] == [DeliveryOutcome.DELIVERED] * len(events)
    assert outcomes[len(events) :] == [DeliveryOutcome.DUPLICATE] * len(events)
    assert dead == []
    assert rec.bad_signatures == 0
    assert rec.requests == len(events) + FAIL_FIRST
    assert len(sleeps) == FAIL_FIRST
    assert sleeps == sorted(sleeps)  # exponential backoff
    received = [IncidentEvent.model_validate_json(b) for b in rec.accepted]
    assert received == events  # every event exactly once, in order


@pytest.mark.timeout(60)
def test_webhook_sink_dead_letters_when_server_never_recovers() -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    host, port = srv.server_address[:2]
    srv.server_close()  # nothing listens on this loopback port any more
    dead: list[FailedDelivery] = []
    runner = DeliveryRunner(
        WebhookSink(f"http://{host!s}:{port}/", SecretStr("k")),
        UrllibTransport(timeout_s=2, use_env_proxy=False),
        dead_letter=dead.append,
        sleep=lambda _: None,
        clock=SystemClock(),
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0, retry_for_s=0),
    )
    ev = _events()[0]
    assert runner.deliver(ev) == DeliveryOutcome.DEAD_LETTERED
    assert dead[0].event == ev
    assert dead[0].attempts == 3
    assert "transport error" in dead[0].reason
