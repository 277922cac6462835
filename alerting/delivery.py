"""Delivering incident events to HTTP sinks: retries, backoff, dead letters, no duplicates.

A :class:`Sink` turns an :class:`IncidentEvent` into an :class:`HttpRequest` (payload
built by :mod:`alerting.payloads`); an :class:`HttpTransport` sends it; a
:class:`DeliveryRunner` owns the policy:

* retry on transport errors, 408, 429 and 5xx with exponential backoff (``Retry-After``
  honoured, capped), sleeping through an injected ``sleep``;
* any other 4xx is permanent, and so is running out of attempts: the event goes to the
  injected dead-letter callback with the reason. An event is either delivered or
  dead-lettered, never dropped; if the dead-letter callback raises, the exception
  propagates so the caller does not commit the input offset;
* event ids already delivered (or dead-lettered) are skipped, so at-least-once input is
  not sent twice;
* replayed incidents are not sent to paging sinks.

Secrets (HMAC key, routing key, Slack URL) are ``SecretStr``; no log line includes a
request URL, header or body.
"""

from __future__ import annotations

import enum
import json
import logging
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from alerting.clock import Clock
from alerting.model import IncidentEvent, UtcDatetime
from alerting.payloads import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    add_console_link,
    alertmanager_webhook,
    pagerduty_event,
    sign,
    slack_message,
)

log = logging.getLogger(__name__)

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_JSON = "application/json"


class HttpRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    body: bytes = Field(repr=False)


class HttpResponse(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    status: int
    retry_after_s: float | None = None


class TransportError(Exception):
    """The request did not get an HTTP response (connection refused, timeout, DNS)."""


class HttpTransport(Protocol):
    def post(self, request: HttpRequest) -> HttpResponse: ...


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


class UrllibTransport:
    """A small real transport on the standard library (blocking; call from a thread)."""

    def __init__(self, timeout_s: float = 10.0, *, use_env_proxy: bool = True) -> None:
        self.timeout_s = timeout_s
        self.use_env_proxy = use_env_proxy
        handlers = [] if use_env_proxy else [urllib.request.ProxyHandler({})]
        self._opener = urllib.request.build_opener(*handlers)

    def post(self, request: HttpRequest) -> HttpResponse:
        req = urllib.request.Request(
            request.url, data=request.body, headers=request.headers, method="POST"
        )
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                resp.read()
                return HttpResponse(status=resp.status)
        except urllib.error.HTTPError as exc:
            retry = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            return HttpResponse(status=exc.code, retry_after_s=retry)
        except (urllib.error.URLError, OSError) as exc:
            # The message of a URLError may contain the URL; keep only the class name.
            raise TransportError(type(exc).__name__) from None


# ---- sinks ------------------------------------------------------------------------------


class Sink(Protocol):
    name: str
    pages: bool
    """True for sinks that page people: replayed incidents are never sent to them."""

    def build(self, event: IncidentEvent, now: datetime) -> HttpRequest: ...


class WebhookSink:
    """The IncidentEvent JSON, HMAC-SHA256 signed (see :func:`alerting.payloads.verify`)."""

    def __init__(self, url: str, secret: SecretStr, *, name: str = "webhook") -> None:
        self.name = name
        self.pages = False
        self._url = url
        self._secret = secret

    def build(self, event: IncidentEvent, now: datetime) -> HttpRequest:
        body = event.to_json_bytes()
        ts = str(int(now.timestamp()))
        return HttpRequest(
            url=self._url,
            body=body,
            headers={
                "Content-Type": _JSON,
                TIMESTAMP_HEADER: ts,
                SIGNATURE_HEADER: sign(self._secret.get_secret_value().encode(), ts, body),
                EVENT_ID_HEADER: event.event_id,
            },
        )


def _json_request(url: str, payload: object) -> HttpRequest:
    return HttpRequest(
        url=url,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        headers={"Content-Type": _JSON},
    )


class PagerDutySink:
    def __init__(
        self,
        routing_key: SecretStr,
        *,
        url: str = PAGERDUTY_EVENTS_URL,
        playbook_base_url: str | None = None,
        console_url: str | None = None,
        name: str = "pagerduty",
    ) -> None:
        self.name = name
        self.pages = True
        self._routing_key = routing_key
        self._url = url
        self._playbook_base_url = playbook_base_url
        self._console_url = console_url

    def build(self, event: IncidentEvent, now: datetime) -> HttpRequest:
        body = pagerduty_event(
            event,
            self._routing_key.get_secret_value(),
            playbook_base_url=self._playbook_base_url,
        )
        add_console_link(body, event, self._console_url, "pagerduty")
        return _json_request(self._url, body)


class AlertmanagerSink:
    def __init__(
        self,
        url: str,
        *,
        receiver: str,
        external_url: str,
        console_url: str | None = None,
        name: str = "alertmanager",
    ) -> None:
        self.name = name
        self.pages = True
        self._url = url
        self._receiver = receiver
        self._external_url = external_url
        self._console_url = console_url

    def build(self, event: IncidentEvent, now: datetime) -> HttpRequest:
        body = alertmanager_webhook(event, receiver=self._receiver, external_url=self._external_url)
        add_console_link(body, event, self._console_url, "alertmanager")
        return _json_request(self._url, body)


class SlackSink:
    def __init__(
        self,
        webhook_url: SecretStr,
        *,
        playbook_base_url: str | None = None,
        console_url: str | None = None,
        name: str = "slack",
    ) -> None:
        self.name = name
        self.pages = True
        self._webhook_url = webhook_url
        self._playbook_base_url = playbook_base_url
        self._console_url = console_url

    def build(self, event: IncidentEvent, now: datetime) -> HttpRequest:
        body = slack_message(event, playbook_base_url=self._playbook_base_url)
        add_console_link(body, event, self._console_url, "slack")
        return _json_request(self._webhook_url.get_secret_value(), body)


# ---- sink configuration (for the CLI) ----------------------------------------------------

_CFG = ConfigDict(frozen=True, extra="forbid")


class WebhookSinkConfig(BaseModel):
    model_config = _CFG
    type: Literal["webhook"]
    url: str
    secret: SecretStr


class PagerDutySinkConfig(BaseModel):
    model_config = _CFG
    type: Literal["pagerduty"]
    routing_key: SecretStr
    url: str = PAGERDUTY_EVENTS_URL
    playbook_base_url: str | None = None
    console_url: str | None = None


class AlertmanagerSinkConfig(BaseModel):
    model_config = _CFG
    type: Literal["alertmanager"]
    url: str
    receiver: str = "sentinel"
    external_url: str = ""
    console_url: str | None = None


class SlackSinkConfig(BaseModel):
    model_config = _CFG
    type: Literal["slack"]
    webhook_url: SecretStr
    playbook_base_url: str | None = None
    console_url: str | None = None


SinkConfig = Annotated[
    WebhookSinkConfig | PagerDutySinkConfig | AlertmanagerSinkConfig | SlackSinkConfig,
    Field(discriminator="type"),
]


def make_sink(cfg: SinkConfig) -> Sink:
    if isinstance(cfg, WebhookSinkConfig):
        return WebhookSink(cfg.url, cfg.secret)
    if isinstance(cfg, PagerDutySinkConfig):
        return PagerDutySink(
            cfg.routing_key,
            url=cfg.url,
            playbook_base_url=cfg.playbook_base_url,
            console_url=cfg.console_url,
        )
    if isinstance(cfg, AlertmanagerSinkConfig):
        return AlertmanagerSink(
            cfg.url,
            receiver=cfg.receiver,
            external_url=cfg.external_url,
            console_url=cfg.console_url,
        )
    return SlackSink(
        cfg.webhook_url, playbook_base_url=cfg.playbook_base_url, console_url=cfg.console_url
    )


# ---- the runner -------------------------------------------------------------------------


class RetryPolicy(BaseModel):
    model_config = _CFG

    max_attempts: int = Field(default=8, ge=1)
    initial_backoff_s: float = Field(default=0.5, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    max_backoff_s: float = Field(default=60.0, ge=0)
    retry_for_s: float = Field(
        default=1800.0,
        ge=0,
        description="A transient failure (5xx, 408, 429, connection error) is retried "
        "for at least this long, so an endpoint down for minutes loses nothing; only "
        "then, and after max_attempts, does the event go to the dead-letter topic.",
    )

    def keep_trying(self, attempts: int, waited_s: float) -> bool:
        """Whether to retry after ``attempts`` failed attempts over ``waited_s`` seconds."""
        return attempts < self.max_attempts or waited_s < self.retry_for_s

    def backoff(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = self.initial_backoff_s * self.multiplier ** (attempt - 1)
        if retry_after_s is not None:
            base = max(base, retry_after_s)
        return min(base, self.max_backoff_s)


def is_retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


class DeliveryOutcome(enum.StrEnum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"
    SKIPPED_REPLAY = "skipped_replay"


class FailedDelivery(BaseModel):
    """What goes to the dead-letter topic: the event and why it could not be delivered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sink: str
    reason: str
    attempts: int
    last_status: int | None
    failed_at: UtcDatetime
    event: IncidentEvent


class DeliveredLog:
    """Bounded, insertion-ordered set of event ids already handled by a sink."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def get_state(self) -> list[str]:
        return list(self._ids)

    def set_state(self, ids: list[str]) -> None:
        self._ids = OrderedDict((i, None) for i in ids[-self.capacity :])


class DeliveryRunner:
    """Deliver events to one sink; see the module docstring for the guarantees."""

    def __init__(
        self,
        sink: Sink,
        transport: HttpTransport,
        *,
        dead_letter: Callable[[FailedDelivery], None],
        sleep: Callable[[float], None],
        clock: Clock,
        retry: RetryPolicy | None = None,
        delivered: DeliveredLog | None = None,
    ) -> None:
        self.sink = sink
        self.transport = transport
        self.dead_letter = dead_letter
        self.sleep = sleep
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.delivered = delivered if delivered is not None else DeliveredLog()

    def deliver(self, event: IncidentEvent) -> DeliveryOutcome:
        if event.event_id in self.delivered:
            return DeliveryOutcome.DUPLICATE
        if event.replay and self.sink.pages:
            self.delivered.add(event.event_id)
            return DeliveryOutcome.SKIPPED_REPLAY
        last_status: int | None = None
        reason = ""
        attempt = 0
        started = self.clock.now()
        while True:
            attempt += 1
            try:
                request = self.sink.build(event, self.clock.now())
            except Exception as exc:  # a payload that cannot be built will never be
                reason = f"payload build failed: {type(exc).__name__}: {exc}"
                break
            retry_after: float | None = None
            try:
                response = self.transport.post(request)
            except TransportError as exc:
                reason = f"transport error: {exc}"
                last_status = None
            else:
                last_status = response.status
                if 200 <= response.status < 300:
                    self.delivered.add(event.event_id)
                    log.info(
                        "%s: delivered %s (%s seq %d) after %d attempt(s)",
                        self.sink.name,
                        event.event_id,
                        event.incident_id,
                        event.sequence,
                        attempt,
                    )
                    return DeliveryOutcome.DELIVERED
                reason = f"HTTP {response.status}"
                if not is_retryable(response.status):
                    reason += " (permanent)"
                    break
                retry_after = response.retry_after_s
            waited = (self.clock.now() - started).total_seconds()
            if self.retry.keep_trying(attempt, waited):
                delay = self.retry.backoff(attempt, retry_after)
                log.warning(
                    "%s: attempt %d for %s failed (%s); retrying in %.2fs",
                    self.sink.name,
                    attempt,
                    event.event_id,
                    reason,
                    delay,
                )
                self.sleep(delay)
            else:
                reason = (
                    f"retries exhausted after {attempt} attempts over {waited:.0f} s; "
                    f"last: {reason}"
                )
                break
        self.dead_letter(
            FailedDelivery(
                sink=self.sink.name,
                reason=reason,
                attempts=attempt,
                last_status=last_status,
                failed_at=self.clock.now(),
                event=event,
            )
        )
        self.delivered.add(event.event_id)
        log.error("%s: dead-lettered %s: %s", self.sink.name, event.event_id, reason)
        return DeliveryOutcome.DEAD_LETTERED
