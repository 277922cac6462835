"""Containment: playbook actions as commands, folded into a per-model containment state.

For a ``trigger`` the incident's playbook actions (route to a fallback model, roll back,
disable a feature, enable a keyword/classifier filter) become an ``apply``
:class:`ContainmentCommand`; for a ``resolve`` (the detector recovered) a ``release`` of
whatever is in force for the incident, whatever its playbook says by then.
:class:`ContainmentState` folds commands purely and idempotently: applying the same
command twice gives the same state, and a trigger read again after its incident's release
(a worker's at-least-once redelivery, a group that re-read the alerts topic) is not applied
again (:attr:`ModelContainment.released`). The control topic is compacted and keyed by model, and
its value is the model's whole :class:`ModelContainment` snapshot (with the command that
produced it), so the latest record per model *is* the current containment state a serving
platform follows, and ``sentinel status`` can show it by reading the topic.

Escalation when containment does not help is the engine's job (playbook deadline).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alerting.model import IncidentAction, IncidentEvent, UtcDatetime, iso_utc, stable_hash
from alerting.playbooks import ContainmentAction, PlaybookSet, resolve_action

_FROZEN = ConfigDict(frozen=True, extra="forbid")

MAX_RELEASED: Final = 1000
"""Released incidents remembered per model (:attr:`ModelContainment.released`)."""


class ContainmentCommand(BaseModel):
    model_config = _FROZEN

    schema_version: Literal[1] = 1
    command_id: str
    model: str
    op: Literal["apply", "release"]
    incident_id: str
    dedup_key: str
    incident_type: str
    actions: tuple[ContainmentAction, ...] = ()
    skipped: tuple[str, ...] = Field(
        default=(), description="Actions that could not be resolved for this incident, why."
    )
    issued_at: UtcDatetime
    source_event_id: str
    dry_run: bool = False


class Measure(BaseModel):
    """One containment action in force, and the incident it is for."""

    model_config = _FROZEN

    incident_id: str
    incident_type: str
    action: ContainmentAction
    since: UtcDatetime


class ModelContainment(BaseModel):
    """The value on the control topic for one model (its key)."""

    model_config = _FROZEN

    schema_version: Literal[1] = 1
    model: str
    measures: tuple[Measure, ...] = ()
    updated_at: UtcDatetime
    last_command: ContainmentCommand | None = None
    released: dict[str, int] = Field(
        default_factory=dict,
        exclude_if=lambda released: not released,
        description="Incidents whose measures were released, with the sequence of the "
        "event that released them (the latest MAX_RELEASED): a trigger of a lower "
        "sequence is a copy read again, not applied again (a reopening's trigger has a "
        "higher one). Left out while empty, so that a reader of the shape before it "
        "still reads the snapshot.",
    )

    def key(self) -> bytes:
        return self.model.encode()

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def _fields(event: IncidentEvent) -> dict[str, str]:
    fields = {
        "model": event.labels.model,
        "segment": ",".join(f"{k}={v}" for k, v in sorted(event.labels.segment.items())),
    }
    fields.update({f"segment_{k}": v for k, v in event.labels.segment.items()})
    if event.labels.version is not None:
        fields["version"] = event.labels.version
    if event.deploy is not None and event.deploy.previous_version is not None:
        fields["previous_version"] = event.deploy.previous_version
    if event.evidence.signal.feature is not None:
        fields["feature"] = event.evidence.signal.feature
    return fields


def commands_for(
    event: IncidentEvent, playbooks: PlaybookSet, *, dry_run: bool = False
) -> list[ContainmentCommand]:
    """Containment commands for one incident event (none for updates and replays). A
    resolve releases whatever is in force for its incident even when its playbook no
    longer has containment (edited or removed since the trigger): the measures of a
    resolved incident must not stay in force for good."""
    if event.replay or event.action == IncidentAction.UPDATE:
        return []
    op: Literal["apply", "release"] = (
        "apply" if event.action == IncidentAction.TRIGGER else "release"
    )
    pb = playbooks.get(event.playbook.name) if event.playbook else None
    if op == "apply" and (pb is None or not pb.containment):
        return []
    actions: list[ContainmentAction] = []
    skipped: list[str] = []
    if op == "apply" and pb is not None:
        fields = _fields(event)
        for act in pb.containment:
            try:
                actions.append(resolve_action(act, fields))
            except KeyError as exc:
                skipped.append(f"{act.action}: incident has no value for ${exc.args[0]}")
    return [
        ContainmentCommand(
            command_id=stable_hash(event.event_id, op, length=32),
            model=event.labels.model,
            op=op,
            incident_id=event.incident_id,
            dedup_key=event.dedup_key,
            incident_type=event.incident_type,
            actions=tuple(actions),
            skipped=tuple(skipped),
            issued_at=event.emitted_at,
            source_event_id=event.event_id,
            dry_run=dry_run,
        )
    ]


class ContainmentState(BaseModel):
    """Current containment per model; :meth:`apply` is a pure, idempotent fold."""

    model_config = _FROZEN

    models: dict[str, ModelContainment] = Field(default_factory=dict)

    def apply(self, command: ContainmentCommand, sequence: int | None = None) -> ContainmentState:
        """The state after ``command`` (``sequence``: that of the incident event it came
        from, when known); this state itself when it changes nothing (a release of an
        incident with nothing in force, an apply from an event older than its incident's
        release)."""
        current = self.models.get(command.model)
        measures = current.measures if current else ()
        released = dict(current.released) if current else {}
        kept = tuple(m for m in measures if m.incident_id != command.incident_id)
        if command.op == "release":
            if len(kept) == len(measures):
                return self
            if sequence is not None:
                released.pop(command.incident_id, None)  # (the latest last)
                released[command.incident_id] = sequence
                while len(released) > MAX_RELEASED:
                    del released[next(iter(released))]
        else:
            if sequence is not None and sequence < released.get(command.incident_id, 0):
                return self
            kept += tuple(
                Measure(
                    incident_id=command.incident_id,
                    incident_type=command.incident_type,
                    action=a,
                    since=command.issued_at,
                )
                for a in command.actions
            )
        snap = ModelContainment(
            model=command.model,
            measures=kept,
            updated_at=command.issued_at,
            last_command=command,
            released=released,
        )
        return self.model_copy(update={"models": {**self.models, command.model: snap}})

    def with_snapshot(self, snapshot: ModelContainment) -> ContainmentState:
        """Restore from the control topic (latest snapshot per model wins)."""
        return self.model_copy(update={"models": {**self.models, snapshot.model: snapshot}})

    def snapshot(self, model: str) -> ModelContainment | None:
        return self.models.get(model)

    def render(self) -> str:
        """Human-readable table for ``sentinel status``."""
        lines: list[str] = []
        for name in sorted(self.models):
            snap = self.models[name]
            if not snap.measures:
                lines.append(f"{name}: no containment (since {iso_utc(snap.updated_at)})")
                continue
            lines.append(f"{name}: {len(snap.measures)} measure(s)")
            for m in snap.measures:
                lines.append(
                    f"  - {describe_action(m.action)}  [{m.incident_type} {m.incident_id}"
                    f" since {iso_utc(m.since)}]"
                )
        return "\n".join(lines) if lines else "no containment in force"


def describe_action(action: ContainmentAction) -> str:
    match action.action:
        case "route_to_fallback":
            return f"route_to_fallback({action.fallback_model})"
        case "rollback":
            return f"rollback({action.to_version})"
        case "disable_feature":
            return f"disable_feature({action.feature})"
        case "switch_retrieval_source":
            return f"switch_retrieval_source({action.source})"
        case _:
            return f"enable_filter({action.filter}:{action.name})"


def fold(
    commands: list[ContainmentCommand],
    state: ContainmentState | None = None,
) -> ContainmentState:
    st = state or ContainmentState()
    for c in commands:
        st = st.apply(c)
    return st


def fold_control(values: Iterable[bytes | None]) -> tuple[ContainmentState, int]:
    """The containment state from control-topic values in log order (latest snapshot per
    model wins; tombstones skipped), and how many values were not valid snapshots.

    The one reading of the control topic: ``sentinel contain`` and ``status``, the
    containment consumer's restore and the console all fold it here.
    """
    state = ContainmentState()
    bad = 0
    for value in values:
        if value is None:
            continue
        try:
            state = state.with_snapshot(ModelContainment.model_validate_json(value))
        except ValidationError:
            bad += 1
    return state, bad
