"""What an operator's click publishes: the same records the CLI commands publish.

* acknowledge / resolve by hand: an :class:`alerting.operator.OperatorAction` on
  ``<control>.operator`` (who, why, on which engine event);
* silence: a :class:`alerting.silences.SilenceRecord` on ``<control>.silences``, exactly
  what ``sentinel silence add`` publishes (the worker folds it and mutes the next matching
  detection), plus an operator action naming the silence;
* re-learn: a :class:`alerting.relearn.RelearnRecord` on ``<control>.relearn`` for the
  incident's scope and signal kind, exactly what ``sentinel relearn add --incident``
  publishes (each worker's detectors of that kind in the scope learn a new baseline), plus
  an operator action naming it;
* contain: the playbook's containment snapshot on the control topic, computed by
  :func:`streams.runtime.consumers.handle_containment_event` from the incident's trigger, exactly
  what ``sentinel contain`` publishes for it, plus an operator action.

Every write waits for the broker's acknowledgement (``acks=all``) before the console
answers, so a page reload after an action shows it. Inputs are validated here and bad
ones raise :class:`ActionError` with a message for the operator: every record an action
publishes (its audit record too) is built and checked before the first one is published,
so a refused action publishes nothing and a retry does not publish twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError

from alerting.clock import parse_duration
from alerting.containment import describe_action
from alerting.model import IncidentAction, IncidentEvent
from alerting.operator import ActionName, OperatorAction, new_action
from alerting.playbooks import PlaybookSet
from alerting.relearn import RelearnRecord, new_relearn, relearn_topic
from alerting.silences import SilenceRecord, new_silence
from streams.console.state import ConsoleState
from streams.contract.scope import (
    ScopeError,
    check_incident_type,
    check_label_key,
    check_label_value,
    check_name,
)
from streams.runtime.consumers import handle_containment_event

SEND_TIMEOUT_S: Final = 30.0
READ_OWN_WRITE_S: Final = 10.0
"""How long an action waits for the console's own follower to fold what it published."""
MAX_SILENCE: Final = timedelta(days=30)


class ActionError(ValueError):
    """An action that cannot be taken as asked; the message is shown to the operator."""


Send = Callable[[str, bytes, bytes], tuple[int, int] | None]
"""Publish ``(topic, key, value)``, wait for the broker's acknowledgement, and return the
record's (partition, offset) when known."""


def kafka_sender(producer: Any) -> Send:
    def send(topic: str, key: bytes, value: bytes) -> tuple[int, int] | None:
        meta = producer.send(topic, key=key, value=value).get(timeout=SEND_TIMEOUT_S)
        return int(meta.partition), int(meta.offset)

    return send


def duration_of(text: str) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise ActionError(str(exc)) from None
    if value > MAX_SILENCE:
        raise ActionError(f"a silence may last at most {MAX_SILENCE.days} days; got {text!r}")
    return value


class ConsoleActions:
    """The console's writes. ``now`` is the injected clock (aware UTC)."""

    def __init__(
        self,
        state: ConsoleState,
        send: Send,
        playbooks: PlaybookSet,
        now: Callable[[], datetime],
    ) -> None:
        self.state = state
        self.send = send
        self.playbooks = playbooks
        self.now = now

    def _publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Send, then wait (bounded) until the follower folded it, so the page the
        operator sees next already shows the action."""
        where = self.send(topic, key, value)
        if where is not None:
            self.state.wait_folded(topic, where[0], where[1], READ_OWN_WRITE_S)

    def _events(self, incident_id: str) -> list[IncidentEvent]:
        with self.state.lock:
            try:
                return self.state.history(incident_id)
            except LookupError:
                raise ActionError(f"unknown incident {incident_id!r}") from None

    def _action(
        self, name: ActionName, event: IncidentEvent, by: str, reason: str, detail: str = ""
    ) -> OperatorAction:
        """The audit record of an action, validated (a reason of at most 2000 characters):
        built before anything is published, so that a refused one publishes nothing."""
        try:
            return new_action(name, event, by=by, reason=reason, at=self.now(), detail=detail)
        except (ValueError, ValidationError) as exc:
            raise ActionError(_first_error(exc)) from None

    def _publish_action(self, action: OperatorAction) -> OperatorAction:
        self._publish(self.state.sources.operator, action.key(), action.to_json_bytes())
        return action

    def acknowledge(self, incident_id: str, *, by: str, reason: str) -> OperatorAction:
        events = self._events(incident_id)
        if events[-1].action == IncidentAction.RESOLVE:
            raise ActionError("the incident is resolved: nothing to acknowledge")
        return self._publish_action(self._action("acknowledge", events[-1], by, reason))

    def resolve(self, incident_id: str, *, by: str, reason: str) -> OperatorAction:
        events = self._events(incident_id)
        if events[-1].action == IncidentAction.RESOLVE:
            raise ActionError("the incident is already resolved")
        return self._publish_action(self._action("resolve", events[-1], by, reason))

    def silence_incident(
        self, incident_id: str, *, by: str, reason: str, duration: str
    ) -> SilenceRecord:
        """A silence for the incident's labels and type (what its next detection needs).
        The silence and its audit record are both checked before either is published."""
        latest = self._events(incident_id)[-1]
        if not reason.strip():
            raise ActionError("a reason is required (it is shown to whoever gets paged next)")
        rec = self.silence_record(
            model=latest.labels.model,
            version=latest.labels.version,
            segment=dict(latest.labels.segment),
            incident_type=latest.incident_type,
            duration=duration,
            comment=reason,
            by=by,
        )
        action = self._action("silence", latest, by, reason, detail=rec.id)
        self.publish_silence(rec)
        self._publish_action(action)
        return rec

    def publish_silence(self, rec: SilenceRecord) -> SilenceRecord:
        """Publish a silence :meth:`silence_record` made (the Add-silence form's)."""
        self._publish(self.state.sources.silences, rec.key(), rec.to_json_bytes())
        return rec

    def silence_record(
        self,
        *,
        model: str,
        version: str | None,
        segment: dict[str, str],
        incident_type: str | None,
        duration: str,
        comment: str,
        by: str,
    ) -> SilenceRecord:
        """The silence the fields ask for, checked as the CLI checks them; not published."""
        if not model.strip():
            raise ActionError("model is required")
        if not comment.strip():
            raise ActionError("a comment is required (it is shown to whoever gets paged next)")
        version, incident_type = (version or "").strip(), (incident_type or "").strip()
        try:  # the CLI's checks (streams.contract.scope): one definition of a scope
            model = check_name(model.strip())
            version = check_name(version) if version else ""
            incident_type = check_incident_type(incident_type) if incident_type else ""
            segment = {check_label_key(k): check_label_value(v) for k, v in segment.items()}
        except ScopeError as exc:
            raise ActionError(str(exc)) from None
        try:
            return new_silence(
                model=model,
                version=version or None,
                segment=segment,
                incident_type=incident_type or None,
                duration=duration_of(duration),
                now=self.now(),
                comment=comment.strip(),
                created_by=by,
            )
        except ValidationError as exc:
            raise ActionError(_first_error(exc)) from None

    def expire_silence(self, silence_id: str, *, by: str) -> SilenceRecord:
        with self.state.lock:
            current = self.state.silence_records.get(silence_id)
        if current is None:
            raise ActionError(f"no silence with id {silence_id!r}")
        now = self.now()
        if not current.is_active(now):
            raise ActionError(f"silence {silence_id} already {current.state(now)}")
        expired = current.expire(now)
        self._publish(self.state.sources.silences, expired.key(), expired.to_json_bytes())
        return expired

    def relearn(self, incident_id: str, *, by: str, reason: str) -> RelearnRecord:
        """Re-learn the incident's detector in its scope: its current level becomes the
        baseline (:mod:`alerting.relearn`)."""
        latest = self._events(incident_id)[-1]
        try:
            rec = new_relearn(
                latest.labels,
                [latest.evidence.signal.kind],
                now=self.now(),
                by=by,
                reason=reason,
                incident_id=incident_id,
            )
        except ValueError as exc:
            raise ActionError(_first_error(exc)) from None
        action = self._action("relearn", latest, by, reason, detail=rec.id)
        # The console does not follow the re-learn topic: the operator action that names
        # the record is what the page shows (and waits for).
        self.send(relearn_topic(self.state.sources.control), rec.key(), rec.to_json_bytes())
        self._publish_action(action)
        return rec

    def contain(self, incident_id: str, *, by: str, reason: str) -> OperatorAction:
        """Publish the playbook's containment for the incident, as ``sentinel contain``."""
        if not reason.strip():
            raise ActionError("a reason is required (it goes into the audit trail)")
        events = self._events(incident_id)
        latest = events[-1]
        if latest.action == IncidentAction.RESOLVE:
            raise ActionError("the incident is resolved: containment would be released")
        triggers = [e for e in events if e.action == IncidentAction.TRIGGER]
        if not triggers:
            raise ActionError("no trigger event of this incident is on the alerts topic")
        with self.state.lock:
            state = self.state.containment
        _, snapshots = handle_containment_event(triggers[-1], state, self.playbooks, dry_run=False)
        if not snapshots:
            name = latest.playbook.name if latest.playbook else latest.incident_type
            raise ActionError(f"the playbook {name!r} has no containment action for this incident")
        applied = [
            describe_action(a)
            for snap in snapshots
            if snap.last_command is not None
            for a in snap.last_command.actions
        ]
        action = self._action("contain", latest, by, reason, detail=", ".join(applied))
        for snap in snapshots:  # only now that the audit record is known to be valid
            self._publish(self.state.sources.control, snap.key(), snap.to_json_bytes())
        return self._publish_action(action)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return f"{where}: {err['msg']}" if where else str(err["msg"])
    return str(exc)
