"""Operator actions: who did what to an incident, and why (the console's audit trail).

The incident engine owns the lifecycle on the alerts topic (trigger / update / resolve,
with hysteresis); a person's acknowledgement or manual resolution is a different fact and
is not written there, so ``sentinel notify`` keeps delivering exactly the engine's steps
and ``sentinel incidents`` keeps showing what the detectors concluded. Instead every action
taken in the console (acknowledge, silence, contain, re-learn, resolve by hand) is an
:class:`OperatorAction` on its own topic, ``<topics.control>.operator``
(:func:`operator_topic`; keyed by dedup key, time-retained like the alerts topic), and the
console folds both: :func:`overlay` says whether an incident is acknowledged or resolved by
hand *since its latest engine step*. When the detector emits again after a manual resolve,
the incident shows as open again: the detector still sees the excess.
Pure, no Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from alerting.model import IncidentAction, IncidentEvent, UtcDatetime, stable_hash

OPERATOR_SUFFIX = ".operator"
ActionName = Literal["acknowledge", "silence", "contain", "resolve", "relearn"]


def operator_topic(control_topic: str) -> str:
    """Name of the operator-action topic derived from the control topic."""
    return control_topic + OPERATOR_SUFFIX


class OperatorAction(BaseModel):
    """The value on the operator topic (key: the incident's dedup key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    action_id: str
    action: ActionName
    incident_id: str = Field(min_length=1)
    dedup_key: str = Field(min_length=1)
    by: str = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=2000)
    at: UtcDatetime
    event_id: str = Field(
        min_length=1, description="The incident's latest engine event when the action was taken."
    )
    detail: str = Field(default="", description="e.g. the silence id, the measures applied")

    def key(self) -> bytes:
        return self.dedup_key.encode()

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def new_action(
    action: ActionName,
    event: IncidentEvent,
    *,
    by: str,
    reason: str,
    at: datetime,
    detail: str = "",
) -> OperatorAction:
    """An action on the incident whose latest event is ``event``."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a reason is required (it goes into the audit trail)")
    return OperatorAction(
        action_id="op-" + stable_hash(action, event.incident_id, by, reason, at.isoformat()),
        action=action,
        incident_id=event.incident_id,
        dedup_key=event.dedup_key,
        by=by,
        reason=reason,
        at=at,
        event_id=event.event_id,
        detail=detail,
    )


@dataclass(frozen=True)
class Overlay:
    """What people did to an incident since the engine's latest step."""

    acknowledged: OperatorAction | None = None
    resolved: OperatorAction | None = None

    @property
    def label(self) -> str:
        if self.resolved is not None:
            return "resolved by hand"
        return "acknowledged" if self.acknowledged is not None else ""


def overlay(events: list[IncidentEvent], actions: Iterable[OperatorAction]) -> Overlay:
    """Acknowledgement holds from the incident's latest trigger on; a manual resolve holds
    until the engine emits another step. Both end when the engine resolves. Actions are
    placed by the engine event they were taken on (``event_id``), not by clocks: the
    engine's times are event times, which may be far from the console's wall clock."""
    if not events:
        return Overlay()
    latest = events[-1]
    if latest.action == IncidentAction.RESOLVE:
        return Overlay()
    last_trigger = max(
        (i for i, e in enumerate(events) if e.action == IncidentAction.TRIGGER), default=0
    )
    current_run = {e.event_id for e in events[last_trigger:]}
    ack: OperatorAction | None = None
    res: OperatorAction | None = None
    for a in sorted(actions, key=lambda a: a.at):
        if a.action == "acknowledge" and a.event_id in current_run:
            ack = a
        if a.action == "resolve" and a.event_id == latest.event_id:
            res = a
    return Overlay(acknowledged=ack, resolved=res)
