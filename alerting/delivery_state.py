"""Each incident's delivery state per sink: what ``sentinel notify`` publishes and
``sentinel status`` shows (issue 18 item 5).

``notify`` publishes a :class:`DeliveryState` to the compacted topic
``<topics.alerts>.delivery`` (:func:`delivery_topic`) whenever a delivery changes state:
``retrying`` before each back-off, then ``delivered`` or ``dead_lettered``. A sink is
named by its kind and the notify consumer group that runs it (two webhook sinks are two
groups). The record key is ``<group>|<incident id>``, so compaction keeps the latest state
of every incident per sink and one key's records stay in order in one partition. The
dead-letter topic keeps the full failed event; this topic is the small, current view.
Pure models and folds, no Kafka.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alerting.model import IncidentAction, IncidentEvent, UtcDatetime, iso_utc

DELIVERY_SUFFIX = ".delivery"


def delivery_topic(alerts_topic: str) -> str:
    """Name of the delivery-state topic derived from the alerts topic."""
    return alerts_topic + DELIVERY_SUFFIX


class DeliveryStatus(enum.StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD_LETTERED = "dead_lettered"


class DeliveryState(BaseModel):
    """One incident's delivery to one sink, as of its latest event (``sequence``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sink: str = Field(min_length=1)
    group: str = Field(default="", description="The notify consumer group delivering it.")
    incident_id: str = Field(min_length=1)
    event_id: str
    sequence: int
    action: IncidentAction
    status: DeliveryStatus
    attempts: int = Field(ge=1)
    reason: str = Field(default="", description="Why the last attempt failed (if it did).")
    at: UtcDatetime
    ref: str = Field(
        default="",
        description="The receiver's own reference for the incident (Slack: the ts of its "
        "thread), so that a restarted notify carries on with it.",
    )

    @classmethod
    def of(
        cls,
        sink: str,
        event: IncidentEvent,
        status: DeliveryStatus,
        attempts: int,
        at: UtcDatetime,
        reason: str = "",
        ref: str = "",
    ) -> DeliveryState:
        return cls(
            ref=ref,
            sink=sink,
            incident_id=event.incident_id,
            event_id=event.event_id,
            sequence=event.sequence,
            action=event.action,
            status=status,
            attempts=attempts,
            reason=reason,
            at=at,
        )

    @property
    def label(self) -> str:
        """The sink as status names it: ``webhook (group sentinel-notify-webhook)``."""
        return f"{self.sink} (group {self.group})" if self.group else self.sink

    def key(self) -> bytes:
        return f"{self.group or self.sink}|{self.incident_id}".encode()

    def describe(self) -> str:
        """``delivered (update seq 2, 1 attempt, 2025-01-01T00:00:00Z)`` and the reason."""
        plural = "" if self.attempts == 1 else "s"
        text = (
            f"{self.status.value} ({self.action.value} seq {self.sequence}, "
            f"{self.attempts} attempt{plural}, {iso_utc(self.at)})"
        )
        return f"{text}: {self.reason}" if self.reason else text


DeliveryMap = dict[str, dict[str, DeliveryState]]
"""Incident id -> sink label (:attr:`DeliveryState.label`) -> latest state."""


def fold_delivery_states(values: Iterable[bytes | None]) -> tuple[DeliveryMap, int]:
    """Latest state per (incident, sink) from the topic's values in log order, and the
    number of undecodable values skipped. A later state replaces an earlier one, except
    that a state of an older event (lower sequence) never hides a newer one's."""
    out: DeliveryMap = {}
    bad = 0
    for value in values:
        if value is None:
            continue  # a tombstone
        try:
            state = DeliveryState.model_validate_json(value)
        except (ValidationError, ValueError):
            bad += 1
            continue
        sinks = out.setdefault(state.incident_id, {})
        prev = sinks.get(state.label)
        if prev is None or state.sequence >= prev.sequence:
            sinks[state.label] = state
    return out, bad


def refs_of(states: DeliveryMap, group: str) -> dict[str, str]:
    """Incident id -> the receiver's reference (:attr:`DeliveryState.ref`) of the latest
    states the notify group ``group`` published."""
    return {
        incident_id: state.ref
        for incident_id, sinks in states.items()
        for state in sinks.values()
        if state.group == group and state.ref
    }


def render_delivery(incidents: Iterable[IncidentEvent], states: DeliveryMap) -> str:
    """Per incident, one line per sink with its delivery state; ``not delivered yet`` when
    no sink has reported (no ``notify`` running, or it has not reached the event). A sink
    whose state is of an older event than the incident's latest says so."""
    lines: list[str] = []
    for event in incidents:
        sinks = states.get(event.incident_id, {})
        if not sinks:
            lines.append(f"{event.incident_id}: not delivered yet (no sink has reported)")
            continue
        for sink, state in sorted(sinks.items()):
            behind = (
                f"; latest event is seq {event.sequence}" if state.sequence < event.sequence else ""
            )
            lines.append(f"{event.incident_id}  {sink}: {state.describe()}{behind}")
    return "\n".join(lines) if lines else "no open incidents"


def problems(states: DeliveryMap, open_ids: Iterable[str]) -> list[DeliveryState]:
    """States of incidents that are no longer open whose last delivery did not succeed
    (a resolve that was dead-lettered, or is still retrying): status shows them too."""
    skip = set(open_ids)
    return sorted(
        (
            s
            for iid, sinks in states.items()
            if iid not in skip
            for s in sinks.values()
            if s.status is not DeliveryStatus.DELIVERED
        ),
        key=lambda s: (s.at, s.incident_id, s.sink),
    )
