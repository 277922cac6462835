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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from alerting.alertmanager import (
    ENDS_AFTER_REFRESHES,
    AlertmanagerState,
    PostableAlert,
    alerts_body,
    alerts_url,
    is_resolve,
    postable_alert,
)
from alerting.clock import Clock
from alerting.delivery_state import DeliveryState, DeliveryStatus
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
from alerting.redact import escape_control

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
    detail: str = Field(
        default="",
        description="The start of the receiver's error body (e.g. Alertmanager's reason for "
        "a 400), control characters escaped; kept in the dead letter's reason.",
    )
    body: bytes = Field(
        default=b"",
        repr=False,
        description="A 2xx answer's body (up to RESPONSE_BODY_MAX bytes), for sinks that read "
        "it (Slack's chat.postMessage returns the message's ts).",
    )


RESPONSE_BODY_MAX = 65_536
ERROR_DETAIL_MAX = 500
"""Characters of a receiver's error body kept in a dead letter's reason."""


def error_detail(body: bytes) -> str:
    """A receiver's error body as one printable line: decoded leniently, control
    characters escaped (it goes into logs), cut at :data:`ERROR_DETAIL_MAX`."""
    escaped = escape_control(body.decode("utf-8", errors="replace").strip())
    return escaped[:ERROR_DETAIL_MAX] + ("..." if len(escaped) > ERROR_DETAIL_MAX else "")


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
                return HttpResponse(status=resp.status, body=resp.read(RESPONSE_BODY_MAX))
        except urllib.error.HTTPError as exc:
            retry = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            try:
                detail = error_detail(exc.read(4 * ERROR_DETAIL_MAX))
            except OSError:
                detail = ""
            return HttpResponse(status=exc.code, retry_after_s=retry, detail=detail)
        except (urllib.error.URLError, OSError) as exc:
            # The message of a URLError may contain the URL; keep only the class name.
            raise TransportError(type(exc).__name__) from None


# ---- sinks ------------------------------------------------------------------------------


class Sink(Protocol):
    name: str
    pages: bool
    """True for sinks that page people: replayed incidents are never sent to them."""

    def build(self, event: IncidentEvent, now: datetime) -> HttpRequest: ...


@runtime_checkable
class AcceptingSink(Protocol):
    """A sink that reads the receiver's 2xx answer (Slack's Web API answers 200 with
    ``ok: false`` when it refuses a message, and with the thread ``ts`` when it posts)."""

    def accepted(self, event: IncidentEvent, response: HttpResponse) -> str | None:
        """None: delivered; else why the receiver refused it (not retried)."""
        ...


WebhookFormat = Literal["incident", "alertmanager-webhook-v4"]
"""``incident``: the IncidentEvent JSON; ``alertmanager-webhook-v4``: the body Alertmanager
sends to its ``webhook_configs`` receivers, for receivers written for Alertmanager."""


class WebhookSink:
    """A POST per incident event, HMAC-SHA256 signed (see :func:`alerting.payloads.verify`);
    the body is the IncidentEvent JSON or, with ``format="alertmanager-webhook-v4"``,
    Alertmanager's webhook v4 JSON."""

    def __init__(
        self,
        url: str,
        secret: SecretStr,
        *,
        name: str = "webhook",
        format: WebhookFormat = "incident",
        receiver: str = "sentinel",
        external_url: str = "",
    ) -> None:
        self.name = name
        self.pages = False
        self._url = url
        self._secret = secret
        self._format = format
        self._receiver = receiver
        self._external_url = external_url

    def build(self, event: IncidentEvent, now: datetime) -> HttpRequest:
        if self._format == "alertmanager-webhook-v4":
            payload = alertmanager_webhook(
                event, receiver=self._receiver, external_url=self._external_url
            )
            body = json.dumps(payload, separators=(",", ":")).encode()
        else:
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
    """Alertmanager's API v2 (``POST /api/v2/alerts``), as Prometheus pushes to it; see
    :mod:`alerting.alertmanager`. Stateful: it knows which alerts fire, re-posts them every
    ``refresh_s`` (:meth:`refresh_request`) and ends superseded and resolved ones."""

    def __init__(
        self,
        url: str,
        *,
        refresh_s: float = 60.0,
        console_url: str | None = None,
        playbook_base_url: str | None = None,
        name: str = "alertmanager",
    ) -> None:
        self.name = name
        self.pages = True
        self.refresh_s = refresh_s
        self._url = alerts_url(url)
        self._public_url = console_url or ""
        self._playbook_base_url = playbook_base_url
        self._state = AlertmanagerState()
        self._next_refresh: datetime | None = None

    @property
    def ends_after(self) -> timedelta:
        return timedelta(seconds=self.refresh_s * ENDS_AFTER_REFRESHES)

    @property
    def firing(self) -> int:
        """How many incidents this sink keeps firing in Alertmanager."""
        return len(self._state.firing)

    def _alert(self, event: IncidentEvent, now: datetime) -> PostableAlert:
        return postable_alert(
            event, now, public_url=self._public_url, playbook_base_url=self._playbook_base_url
        )

    def build(self, event: IncidentEvent, now: datetime) -> HttpRequest:
        """Apply ``event`` to the alert state (idempotent for the same event) and post the
        incident's alert with every ended alert not yet confirmed."""
        alert = self._alert(event, now)
        self._state.apply(event, alert, now)
        firing = [self._state.firing[event.dedup_key]] if not is_resolve(event) else []
        body = alerts_body(firing, self._state.ended_alerts(), now, self.ends_after)
        return HttpRequest(url=self._url, body=body, headers={"Content-Type": _JSON})

    def restore(self, events: Iterable[IncidentEvent], now: datetime) -> None:
        """Take the open incidents (latest event per incident, e.g. folded from the alerts
        topic at start) as firing; the next :meth:`refresh_request` posts them."""
        for event in events:
            if not event.replay and not is_resolve(event):
                self._state.apply(event, self._alert(event, now), now)
        self._next_refresh = None

    def refresh_request(self, now: datetime) -> RefreshRequest | None:
        """Every firing alert with ``endsAt`` moved ahead, and the ended ones, once
        ``refresh_s`` has passed since the last refresh (at once after start)."""
        if self._next_refresh is not None and now < self._next_refresh:
            return None
        self._next_refresh = now + timedelta(seconds=self.refresh_s)
        ended = self._state.ended_alerts()
        if not self._state.firing and not ended:
            return None
        body = alerts_body(self._state.firing.values(), ended, now, self.ends_after)
        return RefreshRequest(
            request=HttpRequest(url=self._url, body=body, headers={"Content-Type": _JSON}),
            ended=tuple(a.label_key() for a in ended),
            alerts=len(self._state.firing) + len(ended),
        )

    def refreshed(self, refresh: RefreshRequest) -> None:
        """Alertmanager accepted ``refresh``: its ended alerts need not be sent again."""
        self._state.forget_ended(refresh.ended)


@dataclass(frozen=True)
class RefreshRequest:
    """A periodic re-post of a sink's alerts (see :meth:`AlertmanagerSink.refresh_request`)."""

    request: HttpRequest
    ended: tuple[tuple[tuple[str, str], ...], ...]
    alerts: int


@runtime_checkable
class RefreshingSink(Protocol):
    """A sink whose alerts expire unless re-posted (the notify loop drives it)."""

    name: str

    def refresh_request(self, now: datetime) -> RefreshRequest | None: ...

    def refreshed(self, refresh: RefreshRequest) -> None: ...

    def restore(self, events: Iterable[IncidentEvent], now: datetime) -> None: ...


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


SLACK_POST_MESSAGE_URL: Final = "https://slack.com/api/chat.postMessage"
SLACK_MAX_THREADS: Final = 10_000
"""Incidents whose Slack thread is remembered (oldest forgotten first)."""


class SlackThreadSink:
    """Slack through its Web API: one thread per incident.

    ``chat.postMessage`` (``POST https://slack.com/api/chat.postMessage`` with a bot token)
    answers with the message's ``ts``. The incident's first message starts a thread; every
    later event of the incident (update, escalation, resolve) replies in that thread with
    ``thread_ts``, and a resolve is also shown in the channel (``reply_broadcast``), so a
    channel shows one message per cause. An incoming webhook cannot do this: it returns no
    ``ts``, so with ``webhook_url`` each event is its own channel message (see
    docs/operations.md).

    The Web API answers HTTP 200 with ``{"ok": false, "error": ...}`` when it refuses a
    message; :meth:`SlackThreadSink.accepted` turns that into a failed delivery. The threads
    (incident id -> ``ts``) are kept in memory, bounded: after a restart of
    ``sentinel notify`` an open incident's next event starts a new thread.
    """

    def __init__(
        self,
        token: SecretStr,
        channel: str,
        *,
        url: str = SLACK_POST_MESSAGE_URL,
        playbook_base_url: str | None = None,
        console_url: str | None = None,
        name: str = "slack",
    ) -> None:
        self.name = name
        self.pages = True
        self._token = token
        self._channel = channel
        self._url = url
        self._playbook_base_url = playbook_base_url
        self._console_url = console_url
        self._threads: OrderedDict[str, str] = OrderedDict()

    def thread_of(self, incident_id: str) -> str | None:
        """The ``ts`` of the incident's thread (None: no message posted yet)."""
        return self._threads.get(incident_id)

    def build(self, event: IncidentEvent, now: datetime) -> HttpRequest:
        body = slack_message(event, playbook_base_url=self._playbook_base_url)
        add_console_link(body, event, self._console_url, "slack")
        body["channel"] = self._channel
        thread = self._threads.get(event.incident_id)
        if thread is not None:
            body["thread_ts"] = thread
            if is_resolve(event):
                body["reply_broadcast"] = True
        return HttpRequest(
            url=self._url,
            body=json.dumps(body, separators=(",", ":")).encode(),
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Authorization": f"Bearer {self._token.get_secret_value()}",
            },
        )

    def accepted(self, event: IncidentEvent, response: HttpResponse) -> str | None:
        """Read Slack's answer to a 2xx: None when the message was posted (a first
        message's ``ts`` starts the incident's thread), else why it was refused."""
        try:
            answer = json.loads(response.body or b"{}")
        except ValueError:
            return "Slack answered with a body that is not JSON"
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error", "unknown") if isinstance(answer, dict) else "unknown"
            return f"Slack API refused the message: {error}"
        ts = answer.get("ts")
        if event.incident_id not in self._threads and isinstance(ts, str):
            self._threads[event.incident_id] = ts
            while len(self._threads) > SLACK_MAX_THREADS:
                self._threads.popitem(last=False)
        return None


# ---- sink configuration (for the CLI) ----------------------------------------------------

_CFG = ConfigDict(frozen=True, extra="forbid")


class WebhookSinkConfig(BaseModel):
    model_config = _CFG
    type: Literal["webhook"]
    url: str
    secret: SecretStr
    format: WebhookFormat = "incident"
    receiver: str = Field(default="sentinel", description="webhook v4 ``receiver`` field")
    external_url: str = Field(default="", description="webhook v4 ``externalURL`` field")


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
    url: str = Field(description="Alertmanager's URL (``/api/v2/alerts`` is appended)")
    refresh_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Re-post firing alerts this often; keep it well below Alertmanager's "
        "resolve_timeout (5 min by default). endsAt is 4 refreshes ahead.",
    )
    console_url: str | None = Field(
        default=None,
        description="console.public_url: generatorURL <console_url>/incidents/<id>, and the "
        "playbook URL <console_url>/playbooks/<name> unless playbook_base_url is set",
    )
    playbook_base_url: str | None = None


class SlackSinkConfig(BaseModel):
    """An incoming webhook (``webhook_url``: one channel message per event) or the Web API
    (``token`` and ``channel``: one thread per incident, :mod:`alerting.slack`)."""

    model_config = _CFG
    type: Literal["slack"]
    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    channel: str | None = None
    api_url: str = SLACK_POST_MESSAGE_URL
    playbook_base_url: str | None = None
    console_url: str | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> SlackSinkConfig:
        api = self.token is not None and bool(self.channel)
        if api == (self.webhook_url is not None):
            raise ValueError("slack: set either webhook_url, or token and channel")
        return self


SinkConfig = Annotated[
    WebhookSinkConfig | PagerDutySinkConfig | AlertmanagerSinkConfig | SlackSinkConfig,
    Field(discriminator="type"),
]


def make_sink(cfg: SinkConfig) -> Sink:
    if isinstance(cfg, WebhookSinkConfig):
        return WebhookSink(
            cfg.url,
            cfg.secret,
            format=cfg.format,
            receiver=cfg.receiver,
            external_url=cfg.external_url,
        )
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
            refresh_s=cfg.refresh_s,
            console_url=cfg.console_url,
            playbook_base_url=cfg.playbook_base_url,
        )
    if cfg.webhook_url is None:
        assert cfg.token is not None  # both checked by SlackSinkConfig
        assert cfg.channel is not None
        return SlackThreadSink(
            cfg.token,
            cfg.channel,
            url=cfg.api_url,
            playbook_base_url=cfg.playbook_base_url,
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
        on_state: Callable[[DeliveryState], None] | None = None,
    ) -> None:
        """``on_state`` hears every change of a delivery's state (retrying, delivered,
        dead-lettered): ``sentinel notify`` publishes them for ``sentinel status``."""
        self.sink = sink
        self.on_state = on_state
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
                refused = (
                    self.sink.accepted(event, response)
                    if 200 <= response.status < 300 and isinstance(self.sink, AcceptingSink)
                    else None
                )
                if refused is not None:
                    reason = refused
                    break
                if 200 <= response.status < 300:
                    self.delivered.add(event.event_id)
                    self._report(event, DeliveryStatus.DELIVERED, attempt)
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
                if response.detail:
                    reason += f": {response.detail}"
                if not is_retryable(response.status):
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
                self._report(event, DeliveryStatus.RETRYING, attempt, reason)
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
        self._report(event, DeliveryStatus.DEAD_LETTERED, attempt, reason)
        log.error("%s: dead-lettered %s: %s", self.sink.name, event.event_id, reason)
        return DeliveryOutcome.DEAD_LETTERED

    def _report(
        self, event: IncidentEvent, status: DeliveryStatus, attempts: int, reason: str = ""
    ) -> None:
        if self.on_state is not None:
            self.on_state(
                DeliveryState.of(self.sink.name, event, status, attempts, self.clock.now(), reason)
            )

    def refresh(self) -> None:
        """Re-post a refreshing sink's alerts when due (:class:`RefreshingSink`); called
        by the notify loop between polls. One attempt: a failure is logged and the next
        refresh tries again (a firing alert's endsAt is several refreshes ahead)."""
        sink = self.sink
        if not isinstance(sink, RefreshingSink):
            return
        refresh = sink.refresh_request(self.clock.now())
        if refresh is None:
            return
        try:
            response = self.transport.post(refresh.request)
        except TransportError as exc:
            log.warning("%s: refresh of %d alert(s) failed: %s", sink.name, refresh.alerts, exc)
            return
        if 200 <= response.status < 300:
            sink.refreshed(refresh)
            log.debug("%s: refreshed %d alert(s)", sink.name, refresh.alerts)
        else:
            log.warning(
                "%s: refresh of %d alert(s) failed: HTTP %d %s",
                sink.name,
                refresh.alerts,
                response.status,
                response.detail,
            )
