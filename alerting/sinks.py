"""Sinks: how an incident event becomes the HTTP request a receiver expects.

A :class:`Sink` turns an :class:`IncidentEvent` into an :class:`HttpRequest` (payloads
built by :mod:`alerting.payloads` and :mod:`alerting.alertmanager`): a signed webhook,
PagerDuty Events v2, Alertmanager's API v2 (stateful: it re-posts firing alerts, see
:class:`RefreshingSink`) and Slack (an incoming webhook, or the Web API with one thread
per incident, see :class:`AcceptingSink`). Sending, retrying and dead-lettering are the
runner's job (:mod:`alerting.delivery`); building sinks from configuration is
:mod:`alerting.sink_config`'s.

Secrets (HMAC key, routing key, Slack URL and token) are ``SecretStr``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, Protocol, runtime_checkable

from pydantic import SecretStr

from alerting.alertmanager import (
    ENDS_AFTER_REFRESHES,
    AlertmanagerState,
    PostableAlert,
    alerts_body,
    alerts_url,
    is_resolve,
    postable_alert,
)
from alerting.model import IncidentEvent
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
from alerting.transport import HttpRequest, HttpResponse

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_JSON = "application/json"


class Sink(Protocol):
    name: str
    pages: bool
    """True for sinks that page people: replayed incidents are never sent to them."""

    def build(self, event: IncidentEvent, now: datetime) -> HttpRequest: ...


@dataclass(frozen=True)
class Refusal:
    """A receiver's 2xx answer that did not take the event: why, and whether a retry may
    help (the receiver said it failed for a moment)."""

    reason: str
    retryable: bool = False


@runtime_checkable
class AcceptingSink(Protocol):
    """A sink that reads the receiver's 2xx answer (Slack's Web API answers 200 with
    ``ok: false`` when it refuses a message, and with the thread ``ts`` when it posts)."""

    def accepted(self, event: IncidentEvent, response: HttpResponse) -> Refusal | None:
        """None: delivered; else why the receiver refused it."""
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


@runtime_checkable
class ReferencingSink(Protocol):
    """A sink whose receiver names each incident (Slack: a thread). The runner publishes
    the reference with the delivery state; a restarted notify hands them back."""

    def ref_of(self, incident_id: str) -> str: ...

    def restore_refs(self, refs: Mapping[str, str]) -> None: ...


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
SLACK_TRANSIENT: Final = frozenset(
    {"internal_error", "service_unavailable", "request_timeout", "ratelimited"}
)
"""Slack Web API errors (answered with HTTP 200 and ``ok: false``) that say the failure
was Slack's, for a moment: retried with backoff like a 5xx, not dead-lettered at once."""


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
    (incident id -> ``ts``, bounded) go out with each delivery state
    (:class:`ReferencingSink`), and a restarted ``sentinel notify`` reads them back from the
    delivery-state topic, so an open incident's next event still replies in its thread.
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

    def ref_of(self, incident_id: str) -> str:
        """The incident's thread ``ts`` ("" before its first message)."""
        return self._threads.get(incident_id, "")

    def restore_refs(self, refs: Mapping[str, str]) -> None:
        """Threads of an earlier run (incident id -> ``ts``); a thread known here wins."""
        for incident_id, ts in refs.items():
            self._threads.setdefault(incident_id, ts)
        while len(self._threads) > SLACK_MAX_THREADS:
            self._threads.popitem(last=False)

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

    def accepted(self, event: IncidentEvent, response: HttpResponse) -> Refusal | None:
        """Read Slack's answer to a 2xx: None when the message was posted (a first
        message's ``ts`` starts the incident's thread), else why it was refused; retried
        when Slack says it failed for a moment (:data:`SLACK_TRANSIENT`)."""
        try:
            answer = json.loads(response.body or b"{}")
        except ValueError:
            return Refusal("Slack answered with a body that is not JSON")
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error", "unknown") if isinstance(answer, dict) else "unknown"
            return Refusal(
                f"Slack API refused the message: {error}", retryable=error in SLACK_TRANSIENT
            )
        ts = answer.get("ts")
        if event.incident_id not in self._threads and isinstance(ts, str):
            self._threads[event.incident_id] = ts
            while len(self._threads) > SLACK_MAX_THREADS:
                self._threads.popitem(last=False)
        return None
