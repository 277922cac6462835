"""Playbooks: per incident type, what to do when it fires.

One TOML file per incident type in ``config/playbooks/<name>.toml``. A playbook holds
detection overrides, containment actions, runbook steps, owners, the escalation deadline,
and the user-notification template (the notification phase of incident response). Files
are validated at load; unknown keys are errors that name the key.

Action parameters and notification templates are :class:`string.Template` strings, so one
playbook serves every model: ``fallback_model = "${model}-fallback"``. Placeholders are
checked at load against :data:`ACTION_FIELDS` / :data:`NOTIFICATION_FIELDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from string import Template
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alerting.model import IncidentEvent, Severity, iso_utc
from alerting.policy import ConfigError, format_validation_error, read_toml

_FROZEN = ConfigDict(frozen=True, extra="forbid")

# Action placeholders; also ``segment_<label>`` for any segment label (e.g. segment_feature).
ACTION_FIELDS = frozenset({"model", "version", "previous_version", "feature", "segment"})
NOTIFICATION_FIELDS = frozenset(
    {
        "incident_id",
        "model",
        "version",
        "segment",
        "incident_type",
        "severity",
        "first_seen",
        "last_seen",
        "summary",
        "owners",
        "affected",
    }
)


@dataclass(frozen=True)
class Impact:
    """Who an incident reached, from its localized scope's evidence: the first affected
    (flagged) event, the end of the window (the resolve, or the last detection while
    open), and the distinct requests and users among the flagged events."""

    first_affected: datetime
    until: datetime
    requests: int
    users: int | None = None

    def describe(self) -> str:
        """The flagged requests (and users): a lower bound on those affected, since an
        affected answer need not be flagged."""
        who = f"at least {self.requests} request{'s' if self.requests != 1 else ''}"
        if self.users is not None:
            who += f" from {self.users} user{'s' if self.users != 1 else ''}"
        return who


def _check_template(text: str, allowed: frozenset[str], where: str) -> None:
    tpl = Template(text)
    if not tpl.is_valid():
        raise ValueError(f"{where}: invalid template (a bare '$'? write '$$')")
    unknown = {i for i in tpl.get_identifiers() if i not in allowed}
    if allowed is ACTION_FIELDS:
        unknown = {i for i in unknown if not i.startswith("segment_")}
    if unknown:
        raise ValueError(
            f"{where}: unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )


class RouteToFallback(BaseModel):
    model_config = _FROZEN
    action: Literal["route_to_fallback"]
    fallback_model: str = Field(min_length=1)


class Rollback(BaseModel):
    model_config = _FROZEN
    action: Literal["rollback"]
    to_version: str = Field(min_length=1)


class DisableFeature(BaseModel):
    model_config = _FROZEN
    action: Literal["disable_feature"]
    feature: str = Field(min_length=1)


class EnableFilter(BaseModel):
    model_config = _FROZEN
    action: Literal["enable_filter"]
    filter: Literal["keyword", "classifier"]
    name: str = Field(min_length=1)
    keywords: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _keywords(self) -> Self:
        if self.filter == "keyword" and not self.keywords:
            raise ValueError("a keyword filter needs 'keywords'")
        return self


class SwitchRetrievalSource(BaseModel):
    """Answer from another retrieval source (index, corpus snapshot): the containment for
    hallucinations caused by a stale or broken index."""

    model_config = _FROZEN
    action: Literal["switch_retrieval_source"]
    source: str = Field(min_length=1)


ContainmentAction = Annotated[
    RouteToFallback | Rollback | DisableFeature | EnableFilter | SwitchRetrievalSource,
    Field(discriminator="action"),
]

_TEMPLATED = {
    "route_to_fallback": ("fallback_model",),
    "rollback": ("to_version",),
    "disable_feature": ("feature",),
    "enable_filter": ("name",),
    "switch_retrieval_source": ("source",),
}


def resolve_action(action: ContainmentAction, fields: Mapping[str, str]) -> ContainmentAction:
    """Fill the action's template parameters for one incident.

    Raises ``KeyError`` naming the placeholder when the incident lacks the value (e.g.
    ``$previous_version`` on an incident without a recorded deploy) or it is empty.
    ``$segment_<label>`` placeholders take the incident's segment label of that name.
    """
    updates: dict[str, str] = {}
    for name in _TEMPLATED[action.action]:
        tpl = Template(getattr(action, name))
        for ident in tpl.get_identifiers():
            if not fields.get(ident):
                raise KeyError(ident)
        updates[name] = tpl.substitute(fields)
    return action.model_copy(update=updates)


class DetectionOverrides(BaseModel):
    """Per-incident-type overrides of the policy defaults."""

    model_config = _FROZEN

    hysteresis_minutes: float | None = Field(default=None, gt=0)
    min_observations: int | None = Field(default=None, ge=1)
    severity_floor: Severity | None = None


class Notification(BaseModel):
    """User-notification template; ``$field`` placeholders from NOTIFICATION_FIELDS."""

    model_config = _FROZEN

    audience: str = "affected users"
    subject: str
    body: str

    @model_validator(mode="after")
    def _templates(self) -> Self:
        _check_template(self.subject, NOTIFICATION_FIELDS, "notification.subject")
        _check_template(self.body, NOTIFICATION_FIELDS, "notification.body")
        return self


class Playbook(BaseModel):
    model_config = _FROZEN

    name: str = Field(min_length=1, description="Incident type (kind) this playbook is for.")
    title: str
    owners: tuple[str, ...] = Field(min_length=1)
    deadline_minutes: float = Field(
        gt=0, description="Escalate if the detector has not recovered by then."
    )
    detection: DetectionOverrides = DetectionOverrides()
    containment: tuple[ContainmentAction, ...] = ()
    runbook: tuple[str, ...] = Field(min_length=1)
    notification: Notification
    path: str = Field(default="", description="Set by the loader: where the file lives.")

    @model_validator(mode="after")
    def _action_templates(self) -> Self:
        for i, act in enumerate(self.containment):
            for name in _TEMPLATED[act.action]:
                _check_template(getattr(act, name), ACTION_FIELDS, f"containment.{i}.{name}")
        return self

    def render_notification(
        self, event: IncidentEvent, impact: Impact | None = None
    ) -> tuple[str, str]:
        """The (subject, body) of the user notification for an incident.

        With ``impact`` (the post-mortem reads it from the evidence), ``$first_seen`` ..
        ``$last_seen`` is the affected window (first affected event to resolve) and
        ``$affected`` counts requests and users; without it, the incident's detection
        window and "some requests"."""
        fields = {
            "incident_id": event.incident_id,
            "model": event.labels.model,
            "version": event.labels.version or "all versions",
            "segment": ", ".join(f"{k}={v}" for k, v in sorted(event.labels.segment.items()))
            or "all users",
            "incident_type": event.incident_type,
            "severity": event.severity.value,
            "first_seen": iso_utc(event.first_seen),
            "last_seen": iso_utc(event.last_seen),
            "summary": event.summary,
            "owners": ", ".join(self.owners),
            "affected": "some requests",
        }
        if impact is not None:
            fields["first_seen"] = iso_utc(impact.first_affected)
            fields["last_seen"] = iso_utc(impact.until)
            fields["affected"] = impact.describe()
        n = self.notification
        return Template(n.subject).substitute(fields), Template(n.body).substitute(fields)


def playbook_key(incident_type: str) -> str:
    """``critical_event:self_harm`` is served by ``critical_event:self_harm`` if present,
    else ``critical_event``; see :meth:`PlaybookSet.for_type`."""
    return incident_type.split(":", 1)[0]


class PlaybookSet:
    """All playbooks, looked up by incident type (most specific name first)."""

    def __init__(self, playbooks: Mapping[str, Playbook]) -> None:
        self._by_name = dict(playbooks)

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> Playbook | None:
        return self._by_name.get(name)

    def for_type(self, incident_type: str) -> Playbook | None:
        return self._by_name.get(incident_type) or self._by_name.get(playbook_key(incident_type))


def load_playbook(path: Path | str) -> Playbook:
    p = Path(path)
    data = read_toml(p)
    try:
        if "path" in data:
            raise ConfigError(f"{p}: 'path' is set by the loader, not in the file")
        pb = Playbook.model_validate({**data, "path": str(p)})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(p, exc)) from exc
    if pb.name != p.stem:
        raise ConfigError(f"{p}: name '{pb.name}' must match the file name '{p.stem}'")
    return pb


def load_playbooks(directory: Path | str) -> PlaybookSet:
    """Load every ``*.toml`` in ``directory``; any invalid file fails the whole load."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: playbook directory does not exist")
    return PlaybookSet({p.stem: load_playbook(p) for p in sorted(d.glob("*.toml"))})
