"""The incident engine: detections in, idempotent incident events out.

``observe(detection)`` opens, updates or escalates an incident; ``tick(now)`` resolves
incidents whose detector has stayed quiet for the hysteresis period, escalates incidents
still unresolved at their playbook deadline, expires silences and un-mutes incidents whose
mute has lifted. The engine is deterministic: its output depends only on its state, the
inputs and the ``now`` it is given (no clock inside), so replaying the same inputs from the
same state produces the same events with the same ids.

Idempotency. Every event id is ``hash(incident_id, sequence)`` and the incident id is
``hash(dedup_key, first detection time)``. Observing a detection already seen (same
fingerprint) is a no-op; if the pipeline crashed after emitting but before saving state,
re-observing from the older state re-emits events with the *same* ids, which consumers drop.

Muting (after Alertmanager's ``notify/mute.go``): silences and inhibition share one
``Muter`` interface. A muted incident is still tracked, but its trigger and updates are not
emitted; its trigger goes out at the first tick after the mute lifts. A resolve is emitted
only for an incident whose trigger was emitted.

Flapping: a re-trigger within ``reopen_window`` of resolving reopens the same incident and
multiplies the quiet period needed to resolve it again by ``flap_hysteresis_factor``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from alerting.cause import family_of, nested, same_cause
from alerting.model import (
    MAX_RELATED,
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
    dedup_key_of,
    event_id_of,
    iso_utc,
    require_utc,
    stable_hash,
)
from alerting.playbooks import Playbook, PlaybookSet
from alerting.policy import AlertingPolicy, Silence, score_severity

log = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_FINGERPRINTS = 256
MAX_PROBES = 8
BAD_DEPLOY_PLAYBOOK = "bad_deploy"


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

    @property
    def active(self) -> bool:
        return self.status != IncidentStatus.RESOLVED

    def summary(self) -> str:
        s = self.evidence.signal
        where = f" [{s.feature}]" if s.feature and ":" not in self.incident_type else ""
        return (
            f"{self.severity.value} {self.incident_type}{where} on {self.labels.describe()}: "
            f"{s.baseline:.4g} -> {s.observed:.4g} ({s.direction.value}, "
            f"effect {s.effect_size:.3g}, n={s.n_observations})"
        )


class EngineState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    incidents: list[IncidentRecord] = Field(default_factory=list)
    silences: list[Silence] = Field(default_factory=list)
    deploys: list[DeployRef] = Field(default_factory=list)
    current_versions: dict[str, str] = Field(default_factory=dict)
    held: int = 0


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


def _cause_verdict(rec: IncidentRecord, health: Mapping[str, bool] | None) -> bool | None:
    """True: the cause persists (a probe is alarmed); False: every probe reads back at
    baseline; None: no probes or no readings for them (fall back to the quiet rule)."""
    if health is None or not rec.probes:
        return None
    readings = [health[p.id] for p in rec.probes if p.id in health]
    if any(readings):
        return True
    if len(readings) < len(rec.probes):
        return None
    return False


def _minutes(m: float) -> timedelta:
    return timedelta(minutes=m)


ESCALATION_REASON = "not recovered by the"


def _kept_reasons(
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


def _specificity(labels: Labels) -> int:
    return (labels.version is not None) + len(labels.segment)


class IncidentEngine:
    """Turns detections into incident events; see the module docstring."""

    def __init__(
        self, policy: AlertingPolicy, playbooks: PlaybookSet, *, replay: bool = False
    ) -> None:
        self.policy = policy
        self.playbooks = playbooks
        self.replay = replay
        self._incidents: dict[str, IncidentRecord] = {}
        self._silences: dict[str, Silence] = {s.id: s for s in policy.silences}
        self._deploys: list[DeployRef] = []
        self._current_versions: dict[str, str] = {}
        self._held = 0

    # ---- state -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """JSON-compatible state, safe to store in a changelog-backed table."""
        return EngineState(
            incidents=list(self._incidents.values()),
            silences=list(self._silences.values()),
            deploys=self._deploys,
            current_versions=self._current_versions,
            held=self._held,
        ).model_dump(mode="json")

    def set_state(self, state: dict[str, Any]) -> None:
        st = EngineState.model_validate(state)
        if st.version != STATE_VERSION:
            raise ValueError(f"unsupported engine state version {st.version}")
        self._incidents = {i.dedup_key: i for i in st.incidents}
        self._silences = {s.id: s for s in st.silences}
        self._deploys = list(st.deploys)
        self._current_versions = dict(st.current_versions)
        self._held = st.held

    # ---- read-only views ---------------------------------------------------------------

    def incidents(self, *, active_only: bool = True) -> list[IncidentRecord]:
        return [
            i.model_copy(deep=True) for i in self._incidents.values() if i.active or not active_only
        ]

    def silences(self) -> list[Silence]:
        return list(self._silences.values())

    @property
    def held_count(self) -> int:
        """Detections held back because a fresh version had too little data."""
        return self._held

    # ---- silences and deploys ------------------------------------------------------------

    def add_silence(self, silence: Silence) -> None:
        """Add or replace (by id) a silence at runtime; it expires at ``ends_at``."""
        self._silences[silence.id] = silence

    def remove_silence(self, silence_id: str) -> bool:
        return self._silences.pop(silence_id, None) is not None

    def record_deploy(
        self,
        model: str,
        version: str,
        deployed_at: datetime,
        previous_version: str | None = None,
    ) -> DeployRef:
        """Note that ``version`` of ``model`` went live (it warms up from now).

        ``previous_version`` defaults to the last version recorded for the model, which is
        what a ``bad_deploy`` playbook's ``rollback(to_version="$previous_version")`` uses.
        """
        prev = previous_version or self._current_versions.get(model)
        if prev == version:
            prev = None
        ref = DeployRef(
            model=model,
            version=version,
            previous_version=prev,
            deployed_at=require_utc(deployed_at),
        )
        self._deploys = [d for d in self._deploys if (d.model, d.version) != (model, version)]
        self._deploys.append(ref)
        self._current_versions[model] = version
        return ref

    def recent_deploy(self, labels: Labels, now: datetime) -> DeployRef | None:
        """The deploy of ``labels``' version if it is recent enough to be a bad-deploy
        suspect (within ``bad_deploy_window_minutes``)."""
        d = self._deploy_of(labels)
        window = _minutes(self.policy.warmup.bad_deploy_window_minutes)
        return d if d is not None and now - d.deployed_at < window else None

    def _deploy_of(self, labels: Labels) -> DeployRef | None:
        if labels.version is None:
            return None
        for d in reversed(self._deploys):
            if d.model == labels.model and d.version == labels.version:
                return d
        return None

    # ---- policy lookups ----------------------------------------------------------------

    def _hysteresis(self, rec: IncidentRecord) -> timedelta:
        lc = self.policy.lifecycle
        pb = self._playbook_of(rec)
        base = lc.hysteresis_minutes
        if pb is not None and pb.detection.hysteresis_minutes is not None:
            base = pb.detection.hysteresis_minutes
        damped = base * lc.flap_hysteresis_factor**rec.flap_count
        return _minutes(min(max(base, lc.max_hysteresis_minutes), damped))

    def _playbook_of(self, rec: IncidentRecord) -> Playbook | None:
        return self.playbooks.get(rec.playbook.name) if rec.playbook else None

    def _choose_playbook(self, incident_type: str, deploy: DeployRef | None) -> Playbook | None:
        if deploy is not None:
            bad = self.playbooks.get(BAD_DEPLOY_PLAYBOOK)
            if bad is not None:
                return bad
        return self.playbooks.for_type(incident_type)

    def _muters(self) -> list[Muter]:
        return [SilenceMuter(self._silences.values()), InhibitionMuter(self._incidents.values())]

    def _mute_reason(self, rec: IncidentRecord, now: datetime) -> str | None:
        for m in self._muters():
            reason = m.mutes(rec, now)
            if reason:
                return reason
        return None

    # ---- observe ------------------------------------------------------------------------

    def observe(self, detection: Detection, now: datetime | None = None) -> list[IncidentEvent]:
        """Fold one detection in; return the events to publish (possibly none).

        ``now`` is the processing time used for silences and deadlines; it defaults to the
        detection's event time, which is right when the stream is processed in real time
        and during replays.

        With grouping on (the policy's ``[grouping]``), a detection that an open incident's
        cause explains (:func:`alerting.cause.same_cause`) is folded into it as a related
        signal: an update, not a new page. Otherwise it opens an incident labelled with its
        localized scope (:attr:`Detection.scope`).
        """
        now = require_utc(now) if now is not None else detection.at
        fp = detection.fingerprint()
        if any(fp in r.fingerprints for r in self._incidents.values()):
            return []  # at-least-once redelivery of a detection already folded in

        grouping = self.policy.grouping.enabled
        labels, signal = detection.labels, detection.signal
        scope = detection.scope if grouping else labels
        key = dedup_key_of(scope, detection.incident_type)
        deploy = self._deploy_of(labels)
        warm = self.policy.warmup
        if deploy is not None and now - deploy.deployed_at < _minutes(warm.warmup_minutes):
            pb = self.playbooks.for_type(detection.incident_type)
            min_obs = warm.min_observations
            if pb is not None and pb.detection.min_observations is not None:
                min_obs = pb.detection.min_observations
            if signal.n_observations < min_obs:
                self._held += 1
                log.info(
                    "held %s on %s: version warming up, n=%d < %d",
                    detection.incident_type,
                    labels.describe(),
                    signal.n_observations,
                    min_obs,
                )
                return []
        scope_deploy = self._deploy_of(scope) or deploy
        recent_deploy = (
            scope_deploy
            if scope_deploy is not None
            and now - scope_deploy.deployed_at < _minutes(warm.bad_deploy_window_minutes)
            else None
        )

        playbook = self._choose_playbook(detection.incident_type, recent_deploy)
        floor = playbook.detection.severity_floor if playbook else None
        severity, reasons = score_severity(
            self.policy.severity, signal, detection.blast_radius, floor
        )
        if recent_deploy is not None:
            age = (now - recent_deploy.deployed_at).total_seconds() / 60
            reasons = (
                *reasons,
                f"version {recent_deploy.version} deployed {age:.0f} min ago "
                f"(n={signal.n_observations} observations: enough evidence despite warm-up)",
            )
        evidence = Evidence(
            signal=signal,
            ranges=detection.ranges,
            sample_request_ids=detection.sample_request_ids,
            window_start=detection.window_start,
            window_end=detection.at,
            blast_radius=detection.blast_radius,
            localization=detection.localization,
        )
        pref = PlaybookRef(name=playbook.name, path=playbook.path) if playbook else None
        deadline = _minutes(
            playbook.deadline_minutes
            if playbook
            else self.policy.lifecycle.default_deadline_minutes
        )
        lc = self.policy.lifecycle
        replay = self.replay or detection.replay

        if grouping:
            rec = self._find_cause(detection, scope, key, now)
        else:
            rec = self._incidents.get(key)
            if (
                rec is not None
                and not rec.active
                and rec.resolved_at is not None
                and now - rec.resolved_at > _minutes(lc.reopen_window_minutes)
            ):
                rec = None
        family = family_of(detection.incident_type)
        if rec is None:
            rec = IncidentRecord(
                incident_id="inc-" + stable_hash(key, iso_utc(detection.at), length=20),
                dedup_key=key,
                labels=scope,
                incident_type=detection.incident_type,
                status=IncidentStatus.FIRING,
                severity=severity,
                severity_reasons=reasons,
                evidence=evidence,
                first_seen=detection.window_start or detection.at,
                last_seen=detection.at,
                opened_at=now,
                deadline_at=now + deadline,
                playbook=pref,
                deploy=recent_deploy,
                replay=replay,
                families=[family],
            )
            self._incidents[key] = rec
            self._relate(rec, detection)
            note = "new incident"
            if detection.localization is not None:
                note += f"; localized: {detection.localization.reason}"
            events = self._emit(rec, IncidentAction.TRIGGER, now, note)
        elif not rec.active:
            rec.flap_count += 1
            rec.status = IncidentStatus.FIRING
            rec.escalated = False
            rec.resolved_at = None
            rec.recovered_at = None
            rec.notified = False
            if severity.rank <= rec.severity.rank:
                rec.severity, rec.severity_reasons = severity, reasons
            rec.evidence = evidence
            rec.last_seen = max(rec.last_seen, detection.at)
            rec.opened_at = now
            rec.deadline_at = now + deadline
            if pref is not None and (rec.playbook is None or recent_deploy is not None):
                rec.playbook = pref
            rec.deploy = rec.deploy or recent_deploy
            self._relate(rec, detection)
            events = self._emit(
                rec,
                IncidentAction.TRIGGER,
                now,
                f"reopened: {detection.incident_type} on {labels.describe()} re-fired within "
                f"{lc.reopen_window_minutes:g} min of resolving "
                f"(flap {rec.flap_count}; quiet period now {self._hysteresis(rec)})",
            )
        else:
            primary = detection.incident_type == rec.incident_type and nested(rec.labels, labels)
            if primary:
                rec.evidence = evidence
            rec.last_seen = max(rec.last_seen, detection.at)
            rec.recovered_at = None
            self._relate(rec, detection)
            related = (
                "" if primary else f" (related: {detection.incident_type} on {labels.describe()})"
            )
            if primary and severity.rank >= rec.severity.rank:
                rec.severity_reasons = _kept_reasons(rec, severity, reasons)
            if severity.rank < rec.severity.rank:
                old = rec.severity
                why = f"{detection.incident_type} on {labels.describe()}"
                rec.severity = severity
                rec.severity_reasons = (
                    *reasons,
                    f"escalated by {why}: {old.value} -> {severity.value}",
                )
                events = self._emit(
                    rec,
                    IncidentAction.UPDATE,
                    now,
                    f"re-scored: {old.value} -> {severity.value} (by {why})",
                )
            elif not rec.notified:
                events = self._emit(rec, IncidentAction.TRIGGER, now, "new incident")
            elif rec.last_emitted_at is None or now - rec.last_emitted_at >= _minutes(
                lc.update_interval_minutes
            ):
                events = self._emit(
                    rec, IncidentAction.UPDATE, now, "still firing: re-scored" + related
                )
            else:
                events = []
        if family not in rec.families:
            rec.families.append(family)
        for probe in detection.probes:
            if probe not in rec.probes and len(rec.probes) < MAX_PROBES:
                rec.probes.append(probe)
        rec.fingerprints = [*rec.fingerprints, fp][-MAX_FINGERPRINTS:]
        return events

    def _find_cause(
        self, detection: Detection, scope: Labels, key: str, now: datetime
    ) -> IncidentRecord | None:
        """The open (or recently resolved, within the reopen window) incident whose cause
        explains ``detection``; the best-matching one when several do."""
        reopen = _minutes(self.policy.lifecycle.reopen_window_minutes)
        family = family_of(detection.incident_type)
        fresh = self.recent_deploy(scope, now) if not scope.segment else None
        started = detection.window_start or detection.at
        best: tuple[tuple[bool, bool, bool, bool, datetime], IncidentRecord] | None = None
        for rec in self._incidents.values():
            if rec.labels.model != scope.model:
                continue
            if not rec.active and (
                rec.dedup_key != key or rec.resolved_at is None or now - rec.resolved_at > reopen
            ):
                continue  # only the same identity reopens a resolved incident
            if rec.dedup_key == key:
                pass
            elif fresh is not None and (rec.deploy is None or rec.deploy.version != fresh.version):
                continue  # a fresh deploy is a cause of its own, named by its version
            elif (
                family not in rec.families
                and rec.deploy is None
                and started > rec.last_seen + self._hysteresis(rec)
            ):
                continue  # another signal whose episode began after this cause went quiet
            elif not same_cause(
                rec.labels,
                rec.families or [family_of(rec.incident_type)],
                rec.deploy is not None,
                scope,
                detection.labels,
                family,
            ):
                continue
            rank = (
                rec.active,
                rec.dedup_key == key,
                family in rec.families,
                nested(rec.labels, scope),
                rec.last_seen,
            )
            if best is None or rank > best[0]:
                best = (rank, rec)
        return best[1] if best is not None else None

    @staticmethod
    def _relate(rec: IncidentRecord, detection: Detection) -> None:
        """List the detection among the incident's related signals (one entry per key and
        type, with its latest statistics and a count)."""
        sig = detection.signal
        count = 1
        kept: list[RelatedSignal] = []
        for r in rec.related:
            if r.labels == detection.labels and r.incident_type == detection.incident_type:
                count += r.count
            else:
                kept.append(r)
        entry = RelatedSignal(
            labels=detection.labels,
            incident_type=detection.incident_type,
            at=detection.at,
            count=count,
            baseline=sig.baseline,
            observed=sig.observed,
            effect_size=sig.effect_size,
            statistic=sig.statistic,
            threshold=sig.threshold,
            n_observations=sig.n_observations,
        )
        rec.related = [entry, *kept][:MAX_RELATED]

    def probes(self) -> list[Probe]:
        """The probes of the active incidents (the pipeline reads them before ``tick``)."""
        out: dict[str, Probe] = {}
        for rec in self._incidents.values():
            if rec.active:
                for p in rec.probes:
                    out[p.id] = p
        return list(out.values())

    # ---- tick ---------------------------------------------------------------------------

    def tick(self, now: datetime, health: Mapping[str, bool] | None = None) -> list[IncidentEvent]:
        """Advance time: expire silences, resolve incidents whose cause is over, escalate
        overdue ones, emit triggers whose mute lifted, forget long-resolved incidents.

        ``health`` maps :attr:`Probe.id` to whether that detector's episode is still
        alarmed (the quantity still away from its baseline). An incident with probes
        resolves only once every probe reads back at baseline and a quiet period
        (hysteresis) has passed since; while any probe is alarmed it stays open however
        long its detectors stay quiet, and escalates at its playbook deadline. Without
        probes or health readings (drift tests, or a caller that has none) the rule is the
        detector's quiet period since the last detection.
        """
        now = require_utc(now)
        self._silences = {k: s for k, s in self._silences.items() if s.ends_at > now}
        keep_deploys = _minutes(
            max(self.policy.warmup.warmup_minutes, self.policy.warmup.bad_deploy_window_minutes)
        )
        self._deploys = [d for d in self._deploys if now - d.deployed_at < keep_deploys]

        events: list[IncidentEvent] = []
        # General keys first, so a model-wide resolve un-inhibits its children this tick.
        order = sorted(
            self._incidents.values(), key=lambda r: (_specificity(r.labels), r.dedup_key)
        )
        for rec in order:
            if not rec.active:
                continue
            hyst = self._hysteresis(rec)
            verdict = _cause_verdict(rec, health)
            if verdict is None:
                due = now - rec.last_seen >= hyst
                why = f"detector quiet for {hyst} since {iso_utc(rec.last_seen)}"
            elif verdict:
                rec.recovered_at = None
                due = False
                why = ""
            else:
                if rec.recovered_at is None:
                    rec.recovered_at = now
                due = now - rec.recovered_at >= hyst and now - rec.last_seen >= hyst / 3
                why = (
                    f"back at baseline since {iso_utc(rec.recovered_at)} (every probe's "
                    f"episode statistic returned to zero), then quiet for {hyst}"
                )
            if due:
                rec.status = IncidentStatus.RESOLVED
                rec.resolved_at = now
                events += self._emit(rec, IncidentAction.RESOLVE, now, why)
            elif now >= rec.deadline_at and not rec.escalated:
                rec.escalated = True
                rec.status = IncidentStatus.ESCALATED
                old = rec.severity
                rec.severity = Severity.from_rank(old.rank - 1)
                pb_name = rec.playbook.name if rec.playbook else "policy default"
                reason = (
                    f"{ESCALATION_REASON} {pb_name} deadline "
                    f"({iso_utc(rec.deadline_at)}): {old.value} -> {rec.severity.value}"
                )
                rec.severity_reasons = (*rec.severity_reasons, reason)
                events += self._emit(rec, IncidentAction.UPDATE, now, f"escalated: {reason}")
            elif not rec.notified and now - rec.last_seen <= hyst / 3:
                # Page a formerly muted incident only while its detector is still firing;
                # a stale one resolves quietly, or pages on its next detection.
                events += self._emit(rec, IncidentAction.TRIGGER, now, "mute lifted")
        forget = _minutes(self.policy.lifecycle.reopen_window_minutes)
        self._incidents = {
            k: r
            for k, r in self._incidents.items()
            if r.active or (r.resolved_at is not None and now - r.resolved_at <= forget)
        }
        return events

    # ---- emission -----------------------------------------------------------------------

    def _emit(
        self, rec: IncidentRecord, action: IncidentAction, now: datetime, note: str
    ) -> list[IncidentEvent]:
        if action == IncidentAction.RESOLVE:
            if not rec.notified:
                return []  # never paged, nothing to close
        else:
            reason = self._mute_reason(rec, now)
            rec.muted_by = reason
            if reason is not None:
                log.info("muted %s %s: %s", action.value, rec.incident_id, reason)
                return []
            if action == IncidentAction.UPDATE and not rec.notified:
                action = IncidentAction.TRIGGER
        rec.sequence += 1
        if action == IncidentAction.TRIGGER:
            rec.notified = True
        rec.last_emitted_at = now
        return [
            IncidentEvent(
                event_id=event_id_of(rec.incident_id, rec.sequence),
                incident_id=rec.incident_id,
                dedup_key=rec.dedup_key,
                sequence=rec.sequence,
                action=action,
                status=rec.status,
                severity=rec.severity,
                severity_reasons=rec.severity_reasons,
                labels=rec.labels,
                incident_type=rec.incident_type,
                summary=rec.summary(),
                evidence=rec.evidence.model_copy(update={"related": tuple(rec.related)}),
                first_seen=rec.first_seen,
                last_seen=rec.last_seen,
                emitted_at=now,
                playbook=rec.playbook,
                deploy=rec.deploy,
                note=note,
                flap_count=rec.flap_count,
                replay=rec.replay,
            )
        ]
