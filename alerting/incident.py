"""An incident's record in the engine, the engine's stored state, and the pure rules of
its lifecycle: who mutes an incident (silences, inhibition), whether its cause persists,
and which severity reasons an update keeps.

Split from :mod:`alerting.engine`, which drives these records from detections and ticks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alerting.model import (
    DeployRef,
    Detection,
    Evidence,
    IncidentAction,
    IncidentEvent,
    IncidentStatus,
    Labels,
    PlaybookRef,
    Probe,
    RelatedSignal,
    Severity,
    UtcDatetime,
    effect_text,
    event_id_of,
    iso_utc,
    minutes_text,
    values_text,
)
from alerting.policy import Silence

STATE_VERSION = 1
MAX_FINGERPRINTS = 256
MAX_PROBES = 8
MAX_SPANS = 64
MAX_RECURRENCES = 64
"""The largest recurrence count a note states exactly (more: "64+"); one more opening
time is kept per dedup key, the newest."""


class IncidentRecord(BaseModel):
    """The engine's state for one incident (one dedup key)."""

    model_config = ConfigDict(extra="forbid")

    incident_id: str
    dedup_key: str
    labels: Labels
    incident_type: str
    status: IncidentStatus
    severity: Severity
    severity_reasons: tuple[str, ...]
    evidence: Evidence
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    opened_at: UtcDatetime
    deadline_at: UtcDatetime
    resolved_at: UtcDatetime | None = None
    sequence: int = 0
    notified: bool = False
    last_emitted_at: UtcDatetime | None = None
    escalated: bool = False
    flap_count: int = 0
    fingerprints: list[str] = Field(default_factory=list)
    playbook: PlaybookRef | None = None
    deploy: DeployRef | None = None
    replay: bool = False
    muted_by: str | None = None
    families: list[str] = Field(default_factory=list)
    """Signal families folded into this incident (``toxicity_rate``, ``downvote_rate``...)."""
    related: list[RelatedSignal] = Field(default_factory=list)
    """Every key and type whose detections were folded in, latest statistics first."""
    probes: list[Probe] = Field(default_factory=list)
    """Detectors that say whether the cause persists (see ``tick``)."""
    recovered_at: UtcDatetime | None = None
    """When every probe first reported its quantity back at baseline (None: not yet)."""
    ended_at: UtcDatetime | None = None
    """When the cause ended, as the probes estimate it at ``recovered_at`` (the latest of
    their estimates, never before what a detection with evidence from after them reports
    on): the quiet period runs from it."""
    spans: list[tuple[UtcDatetime, UtcDatetime]] = Field(default_factory=list)
    """(:attr:`Detection.reports_from`, :attr:`Detection.served`) of the latest detections
    folded in, at most :data:`MAX_SPANS`: what the cause's end and the quiet period are
    judged against (:meth:`served_after`)."""

    @model_validator(mode="after")
    def _spans_of_older_state(self) -> IncidentRecord:
        """State written before spans reads as one detection whose evidence begins at its
        last detection: the rule it was written under (the end never before it)."""
        if not self.spans:
            self.spans = [(self.last_seen, self.last_seen)]
        return self

    @property
    def active(self) -> bool:
        return self.status != IncidentStatus.RESOLVED

    def fold_span(self, detection: Detection) -> None:
        """Note where ``detection``'s evidence begins and what it reports on (:attr:`spans`)."""
        span = (detection.reports_from, detection.served)
        self.spans = [*self.spans, span][-MAX_SPANS:]

    def served_after(self, end: datetime) -> datetime | None:
        """When the outputs behind the latest detection whose evidence begins after
        ``end`` were served (None: no such detection)."""
        return max((served for start, served in self.spans if start > end), default=None)

    def reports_past(self, detection: Detection) -> bool:
        """Whether ``detection``'s evidence begins before the cause's estimated end, so the
        cause explains it: feedback and evaluations trail their outputs by up to hours
        (a version rolled back at 13:12 is still judged on its 13:05 answers at 14:00),
        and a CUSUM that summed evidence while the cause lasted can cross its threshold
        after it ended. Such a detection neither says that the cause persists nor that it
        came back. One that does (a change that only eased) restarts the statistic of the
        probe it re-arms, or, elsewhere, alarms again with evidence from after the end."""
        return self.ended_at is not None and detection.reports_from <= self.ended_at

    def event(self, action: IncidentAction, now: datetime, note: str) -> IncidentEvent:
        """The incident event for the record as it is now (its current sequence)."""
        return IncidentEvent(
            event_id=event_id_of(self.incident_id, self.sequence),
            incident_id=self.incident_id,
            dedup_key=self.dedup_key,
            sequence=self.sequence,
            action=action,
            status=self.status,
            severity=self.severity,
            severity_reasons=self.severity_reasons,
            labels=self.labels,
            incident_type=self.incident_type,
            summary=self.summary(),
            evidence=self.evidence.model_copy(update={"related": tuple(self.related)}),
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            emitted_at=now,
            playbook=self.playbook,
            deploy=self.deploy,
            note=note,
            flap_count=self.flap_count,
            replay=self.replay,
        )

    def summary(self) -> str:
        s = self.evidence.signal
        where = f" [{s.feature}]" if s.feature and ":" not in self.incident_type else ""
        return (
            f"{self.severity.value} {self.incident_type}{where} on {self.labels.describe()}: "
            f"{values_text(s)} ({s.direction.value}, effect {effect_text(s)}, "
            f"n={s.n_observations})"
        )


class EngineState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    incidents: list[IncidentRecord] = Field(default_factory=list)
    silences: list[Silence] = Field(default_factory=list)
    deploys: list[DeployRef] = Field(default_factory=list)
    current_versions: dict[str, str] = Field(default_factory=dict)
    held: int = 0
    recurrences: dict[str, list[UtcDatetime]] = Field(default_factory=dict)
    """When each dedup key's recent incidents opened (``recurrence_window_hours``)."""


class Muter(Protocol):
    """Answers 'is this incident muted now, and why?' (None when not muted)."""

    def mutes(self, incident: IncidentRecord, now: datetime) -> str | None: ...


class SilenceMuter:
    def __init__(self, silences: Iterable[Silence]) -> None:
        self._silences = list(silences)

    def mutes(self, incident: IncidentRecord, now: datetime) -> str | None:
        for s in self._silences:
            if s.starts_at <= now < s.ends_at and s.matches(
                incident.labels, incident.incident_type
            ):
                return f"silenced by {s.id} until {iso_utc(s.ends_at)}"
        return None


class InhibitionMuter:
    """A notified, active incident mutes more specific incidents of the same type.

    One exception, for deploys: an incident on a freshly deployed version (canary
    analysis found it worse than the version it replaced) is never muted, and it mutes
    the incidents of the same type and model that it explains: model-wide, and
    per-segment (a segment's traffic mixes versions).
    """

    def __init__(self, incidents: Iterable[IncidentRecord]) -> None:
        self._sources = [i for i in incidents if i.active and i.notified]

    def mutes(self, incident: IncidentRecord, now: datetime) -> str | None:
        if incident.deploy is not None:
            return None  # a bad deploy names the cause: never hidden behind its symptom
        for src in self._sources:
            if src.dedup_key == incident.dedup_key or src.incident_type != incident.incident_type:
                continue
            if src.labels.covers(incident.labels):
                return f"inhibited by {src.incident_id} ({src.labels.describe()})"
            if (
                src.deploy is not None
                and incident.labels.model == src.labels.model
                and incident.labels.version in (None, src.labels.version)
            ):
                # The model-wide and per-segment symptoms of a bad deploy (segments mix
                # versions) are explained by it: one page, on the version.
                return (
                    f"explained by bad deploy {src.incident_id} "
                    f"(version {src.deploy.version} of {src.labels.model})"
                )
        return None


def cause_verdict(rec: IncidentRecord, health: Mapping[str, bool] | None) -> bool | None:
    """True: the cause persists (a probe is alarmed); False: every probe reads its change
    as ended; None: no probes or no readings for them (fall back to the quiet rule)."""
    if health is None or not rec.probes:
        return None
    readings = [health[p.id] for p in rec.probes if p.id in health]
    if any(readings):
        return True
    if len(readings) < len(rec.probes):
        return None
    return False


def persisting(rec: IncidentRecord, health: Mapping[str, bool] | None) -> list[Probe]:
    """The probes of ``rec`` whose detector reads its change as persisting (what keeps the
    incident open), in the order they joined."""
    if health is None:
        return []
    return [p for p in rec.probes if health.get(p.id)]


def cause_end(rec: IncidentRecord, ended: Mapping[str, datetime] | None) -> datetime | None:
    """When ``rec``'s cause ended by its probes' estimates (``ended``: probe id -> the
    end its detector estimates): the latest of them, or None unless every probe has one."""
    if ended is None or not rec.probes:
        return None
    ends = [ended.get(p.id) for p in rec.probes]
    return None if None in ends else max(e for e in ends if e is not None)


def resolve_due(
    rec: IncidentRecord,
    verdict: bool | None,
    now: datetime,
    hyst: timedelta,
    end: datetime | None = None,
) -> tuple[bool, str]:
    """Whether an active incident resolves at ``now``, and why, given the
    :func:`cause_verdict` of its probes, its quiet period ``hyst`` and the probes' estimate
    of when the cause ended (``end``, :func:`cause_end`): without a verdict, after ``hyst``
    without detections; with probes, once ``hyst`` has passed since the cause ended, every
    probe has read it as ended for a third of ``hyst`` and no detection came for a third
    of it. Notes when the record first read so (``recovered_at``) and the end it dates
    the quiet period from (``ended_at``: ``end``, not after ``recovered_at``; ``recovered_at``
    without an estimate). With probes, only a detection whose evidence begins after the
    estimated end counts as a detection, from when what it reports on was served: it moves
    the end to then (:meth:`IncidentRecord.served_after`, :meth:`IncidentRecord.reports_past`).
    Without a verdict there is no end to judge evidence against: the detector's own quiet
    period counts, from its last detection (``last_seen``).

    Why from the estimated end: a rare rate's recovery test needs an hour or more of a
    small tenant's traffic to read its change as over, and that hour is itself a quiet
    stretch, already weighed by the test. Counting the quiet period only from the
    reading held such incidents open for the test's drain plus the quiet period. The
    third of it that the reading must hold leaves time for a change that only eased to
    alarm again."""
    if verdict is None:
        return now - rec.last_seen >= hyst, (
            f"detector quiet for {minutes_text(hyst)} since {iso_utc(rec.last_seen)}"
        )
    if verdict:
        rec.recovered_at = rec.ended_at = None
        return False, ""
    if rec.recovered_at is None:
        rec.recovered_at = now
        rec.ended_at = now if end is None else min(now, max(end, rec.served_after(end) or end))
    ended_at = rec.ended_at or rec.recovered_at
    last = rec.served_after(ended_at) or ended_at
    due = now - ended_at >= hyst and now - rec.recovered_at >= hyst / 3 and now - last >= hyst / 3
    estimated = "" if ended_at == rec.recovered_at else "its detectors' estimate; "
    return due, (
        f"cause over since {iso_utc(ended_at)} ({estimated}every probe's detector has read "
        f"the change it alarmed on as ended since {iso_utc(rec.recovered_at)}, or its key's "
        f"traffic has stopped), then quiet for {minutes_text(hyst)}"
    )


def minutes(m: float) -> timedelta:
    return timedelta(minutes=m)


ESCALATION_REASON = "not recovered by the"


def kept_reasons(
    rec: IncidentRecord, severity: Severity, reasons: tuple[str, ...]
) -> tuple[str, ...]:
    """Severity reasons for the new evidence of a firing incident whose severity does not
    worsen: they score the signal the evidence now shows (so the effect size in the
    reasons is the one in the evidence), keep any escalation, and say when the severity
    stays worse than this evidence alone would give."""
    kept = tuple(r for r in rec.severity_reasons if r.startswith(ESCALATION_REASON))
    if severity != rec.severity and not kept:
        kept = (f"kept at {rec.severity.value}: a firing incident does not de-escalate",)
    return (*reasons, *kept)


def specificity(labels: Labels) -> int:
    return (labels.version is not None) + len(labels.segment)
