"""Delivering incident events to HTTP sinks: retries, backoff, dead letters, no duplicates.

A :class:`alerting.sinks.Sink` turns an :class:`IncidentEvent` into an
:class:`alerting.transport.HttpRequest`; an :class:`alerting.transport.HttpTransport`
sends it; a :class:`DeliveryRunner` (here) owns the policy:

* retry on transport errors, 408, 429 and 5xx with exponential backoff (``Retry-After``
  honoured, capped), sleeping through an injected ``sleep``;
* any other 4xx is permanent, and so is running out of attempts: the event goes to the
  injected dead-letter callback with the reason. An event is either delivered or
  dead-lettered, never dropped; if the dead-letter callback raises, the exception
  propagates so the caller does not commit the input offset;
* event ids already delivered (or dead-lettered) are skipped, so at-least-once input is
  not sent twice; so is an event of an incident older than one already handled (a lower
  ``sequence``: a copy of an update that a worker's at-least-once redelivery published
  after the incident's resolve would page it again, and nothing would resolve that). The
  highest sequence per incident is taken up from the delivery-state topic at start
  (:func:`handled_sequences`), so this holds across restarts;
* replayed incidents are not sent to paging sinks.

No log line includes a request URL, header or body.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from alerting.clock import Clock
from alerting.delivery_state import DeliveryState, DeliveryStatus
from alerting.model import IncidentEvent, UtcDatetime
from alerting.sinks import AcceptingSink, ReferencingSink, RefreshingSink, Sink
from alerting.transport import HttpRequest, HttpTransport, TransportError

log = logging.getLogger(__name__)

_CFG = ConfigDict(frozen=True, extra="forbid")


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
        try:
            base = self.initial_backoff_s * self.multiplier ** (attempt - 1)
        except OverflowError:  # (a short cap and a long outage: past 1e308 s, the cap)
            base = math.inf if self.initial_backoff_s > 0 else 0.0
        if retry_after_s is not None:
            base = max(base, retry_after_s)
        return min(base, self.max_backoff_s)


def is_retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


class DeliveryOutcome(enum.StrEnum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    STALE = "stale"
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


class HandledSequences:
    """Bounded map of incident id -> the highest ``sequence`` of its events a sink has
    handled (delivered, dead-lettered or skipped as a replay), oldest incidents forgotten
    first."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._top: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._top)

    def get(self, incident_id: str) -> int | None:
        return self._top.get(incident_id)

    def add(self, incident_id: str, sequence: int) -> None:
        self._top[incident_id] = max(sequence, self._top.get(incident_id, sequence))
        self._top.move_to_end(incident_id)
        while len(self._top) > self.capacity:
            self._top.popitem(last=False)

    def covers(self, event: IncidentEvent) -> bool:
        """Whether an event of ``event``'s incident at its sequence or later was handled."""
        top = self._top.get(event.incident_id)
        return top is not None and event.sequence <= top


def handled_sequences(states: Iterable[DeliveryState], group: str) -> HandledSequences:
    """What the notify group ``group`` handled in earlier runs, from its delivery states
    (:mod:`alerting.delivery_state`): delivered or dead-lettered, not still retrying."""
    out = HandledSequences()
    for state in states:
        if state.group == group and state.status is not DeliveryStatus.RETRYING:
            out.add(state.incident_id, state.sequence)
    return out


@dataclass(frozen=True)
class _Failure:
    """One failed attempt: why, the HTTP status if one came, and whether to retry
    (honouring the receiver's ``Retry-After`` when it sent one)."""

    reason: str
    status: int | None
    retryable: bool
    retry_after_s: float | None = None


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
        handled: HandledSequences | None = None,
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
        self.handled = handled if handled is not None else HandledSequences()

    def deliver(self, event: IncidentEvent) -> DeliveryOutcome:
        """Deliver ``event`` once: retried while :attr:`retry` allows, else dead-lettered."""
        if event.event_id in self.delivered:
            return DeliveryOutcome.DUPLICATE
        if self.handled.covers(event):
            log.info(
                "%s: skipped %s (%s seq %d): seq %d of that incident was handled already",
                self.sink.name,
                event.event_id,
                event.incident_id,
                event.sequence,
                self.handled.get(event.incident_id),
            )
            return DeliveryOutcome.STALE
        if event.replay and self.sink.pages:
            self._handled(event)
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
            failure = self._post(event, request)
            if failure is None:
                return self._delivered(event, attempt)
            reason, last_status = failure.reason, failure.status
            if not failure.retryable:
                break
            waited = (self.clock.now() - started).total_seconds()
            if not self.retry.keep_trying(attempt, waited):
                reason = (
                    f"retries exhausted after {attempt} attempts over {waited:.0f} s; "
                    f"last: {reason}"
                )
                break
            self._back_off(event, attempt, reason, failure.retry_after_s)
        return self._dead_lettered(event, reason, attempt, last_status)

    def _post(self, event: IncidentEvent, request: HttpRequest) -> _Failure | None:
        """Send one attempt; None when the receiver took it, else why not and whether a
        retry may help (transport errors, 408, 429, 5xx; a 2xx that an
        :class:`AcceptingSink` reads as refused is permanent)."""
        try:
            response = self.transport.post(request)
        except TransportError as exc:
            return _Failure(f"transport error: {exc}", status=None, retryable=True)
        except ValueError as exc:  # the HTTP client refused to send it (a header it cannot
            # encode): it never will. Not the message: it quotes the header's value.
            return _Failure(
                f"the HTTP client refused the request ({type(exc).__name__})",
                status=None,
                retryable=False,
            )
        if 200 <= response.status < 300:
            refused = (
                self.sink.accepted(event, response)
                if isinstance(self.sink, AcceptingSink)
                else None
            )
            if refused is None:
                return None
            return _Failure(refused.reason, status=response.status, retryable=refused.retryable)
        retryable = is_retryable(response.status)
        reason = f"HTTP {response.status}" + ("" if retryable else " (permanent)")
        if response.detail:
            reason += f": {response.detail}"
        return _Failure(
            reason,
            status=response.status,
            retryable=retryable,
            retry_after_s=response.retry_after_s if retryable else None,
        )

    def _back_off(
        self, event: IncidentEvent, attempt: int, reason: str, retry_after_s: float | None
    ) -> None:
        """Log and report the failed attempt, then sleep before the next one."""
        delay = self.retry.backoff(attempt, retry_after_s)
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

    def _delivered(self, event: IncidentEvent, attempt: int) -> DeliveryOutcome:
        """Record a delivery (never sent again), report and log it."""
        self._handled(event)
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

    def _dead_lettered(
        self, event: IncidentEvent, reason: str, attempts: int, last_status: int | None
    ) -> DeliveryOutcome:
        """Hand the event to the dead-letter callback (its exception propagates: the
        caller must not commit), then record, report and log it."""
        self.dead_letter(
            FailedDelivery(
                sink=self.sink.name,
                reason=reason,
                attempts=attempts,
                last_status=last_status,
                failed_at=self.clock.now(),
                event=event,
            )
        )
        self._handled(event)
        self._report(event, DeliveryStatus.DEAD_LETTERED, attempts, reason)
        log.error("%s: dead-lettered %s: %s", self.sink.name, event.event_id, reason)
        return DeliveryOutcome.DEAD_LETTERED

    def _handled(self, event: IncidentEvent) -> None:
        """``event`` is done with: neither it nor an older step of its incident goes out."""
        self.delivered.add(event.event_id)
        self.handled.add(event.incident_id, event.sequence)

    def _report(
        self, event: IncidentEvent, status: DeliveryStatus, attempts: int, reason: str = ""
    ) -> None:
        if self.on_state is not None:
            sink = self.sink
            ref = sink.ref_of(event.incident_id) if isinstance(sink, ReferencingSink) else ""
            now = self.clock.now()
            self.on_state(DeliveryState.of(sink.name, event, status, attempts, now, reason, ref))

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
