"""The real HTTP transport against local receivers that misbehave: a redirect, an answer
that is not HTTP, a request the HTTP client cannot send."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from alerting.delivery import DeliveryOutcome, DeliveryRunner, FailedDelivery, RetryPolicy
from alerting.engine import IncidentEngine
from alerting.sinks import WebhookSink
from alerting.transport import REDIRECT_DETAIL, HttpRequest, TransportError, UrllibTransport

from .helpers import ManualClock, detection, playbooks, policy


@contextmanager
def _redirecting() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A receiver whose /hook answers 302 to /moved (which would answer 200)."""
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append((self.command, self.path))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if self.path == "/hook":
                self.send_response(302)
                self.send_header("Location", "/moved")
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _answer  # noqa: N815 (http.server's names)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _runner(url: str, dead: list[FailedDelivery]) -> DeliveryRunner:
    return DeliveryRunner(
        WebhookSink(url, SecretStr("s3cret")),
        UrllibTransport(timeout_s=5.0, use_env_proxy=False),
        dead_letter=dead.append,
        sleep=lambda s: None,
        clock=ManualClock(),
        retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.0, retry_for_s=0.0),
    )


def test_a_redirect_is_not_followed_and_the_page_is_dead_lettered_not_lost() -> None:
    """urllib turned the redirected POST into a GET without a body, whose 200 counted as
    delivered: the page was gone, and nothing said so."""
    [event] = IncidentEngine(policy(), playbooks()).observe(detection())
    dead: list[FailedDelivery] = []
    with _redirecting() as (base, seen):
        outcome = _runner(f"{base}/hook", dead).deliver(event)
    assert seen == [("POST", "/hook")]
    assert outcome == DeliveryOutcome.DEAD_LETTERED
    [letter] = dead
    assert letter.last_status == 302
    assert letter.attempts == 1
    assert letter.reason == f"HTTP 302 (permanent): {REDIRECT_DETAIL}"
    assert "/moved" not in letter.reason


@contextmanager
def _not_http() -> Iterator[str]:
    """A receiver that answers every connection with a line that is not HTTP."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HELLO THERE\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()


def test_an_answer_that_is_not_http_is_a_transport_error_retried_not_a_crash() -> None:
    with _not_http() as url:
        with pytest.raises(TransportError, match="BadStatusLine"):
            UrllibTransport(timeout_s=5.0, use_env_proxy=False).post(
                HttpRequest(url=url, body=b"{}")
            )
        [event] = IncidentEngine(policy(), playbooks()).observe(detection())
        dead: list[FailedDelivery] = []
        assert _runner(url, dead).deliver(event) == DeliveryOutcome.DEAD_LETTERED
    [letter] = dead
    assert letter.attempts == 2  # retried, then out of attempts
    assert "BadStatusLine" in letter.reason


@pytest.mark.parametrize("event_id", ["evt-1\nX-Injected: 1", "evt-€"])
def test_a_header_the_client_cannot_send_dead_letters_that_event_and_delivery_goes_on(
    event_id: str,
) -> None:
    """The webhook sends the event id as a header; one http.client refuses (a line break,
    a character outside latin-1) raised out of the runner, and notify stopped on that
    record at every restart."""
    [event] = IncidentEngine(policy(), playbooks()).observe(detection())
    dead: list[FailedDelivery] = []
    with _redirecting() as (base, seen):
        runner = _runner(f"{base}/moved", dead)
        bad = event.model_copy(update={"event_id": event_id})
        assert runner.deliver(bad) == DeliveryOutcome.DEAD_LETTERED
        nxt = event.model_copy(update={"incident_id": "inc-next"})  # the next record's
        assert runner.deliver(nxt) == DeliveryOutcome.DELIVERED
    assert seen == [("POST", "/moved")]
    [letter] = dead
    assert letter.reason.startswith("the HTTP client refused the request (")
    assert "Injected" not in letter.reason


def test_a_url_the_client_cannot_use_is_dead_lettered_at_once_not_retried() -> None:
    [event] = IncidentEngine(policy(), playbooks()).observe(detection())
    dead: list[FailedDelivery] = []
    assert _runner("http://127.0.0.1:not-a-port/hook", dead).deliver(event) == (
        DeliveryOutcome.DEAD_LETTERED
    )
    [letter] = dead
    assert letter.attempts == 1
    assert letter.reason == "the HTTP client refused the request (ValueError)"
