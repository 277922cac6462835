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

Layout: the record, its stored state and the pure lifecycle rules (muters, the cause
verdict, when an incident resolves) are in :mod:`alerting.incident`; which incident a
detection belongs to is :mod:`alerting.grouping`; what a detection says on its own
(severity, evidence, playbook, deadline) is :mod:`alerting.assessment`; this module
drives them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from alerting.assessment import Assessment, assess
from alerting.cause import family_of, nested
from alerting.grouping import find_cause, relate
from alerting.incident import (
    ESCALATION_REASON,
    MAX_FINGERPRINTS,
    MAX_PROBES,
    MAX_RECURRENCES,
    STATE_VERSION,
    EngineState,
    IncidentRecord,
    InhibitionMuter,
    Muter,
    SilenceMuter,
    cause_end,
    cause_verdict,
    kept_reasons,
    minutes,
    persisting,
    resolve_due,
    specificity,
)
from alerting.model import (
    DeployRef,
    Detection,
    IncidentAction,
    IncidentEvent,
    IncidentStatus,
    Labels,
    Probe,
    Severity,
    dedup_key_of,
    iso_utc,
    minutes_text,
    require_utc,
    stable_hash,
)
from alerting.playbooks import Playbook, PlaybookSet
from alerting.policy import AlertingPolicy, Silence
from alerting.relearn import relearnable

__all__ = [
    "EngineState",
    "IncidentEngine",
    "IncidentRecord",
    "InhibitionMuter",
    "Muter",
    "SilenceMuter",
]

log = logging.getLogger(__name__)


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
        self._recurrences: dict[str, list[datetime]] = {}

    # ---- state -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """JSON-compatible state, safe to store in a changelog-backed table."""
        return EngineState(
            incidents=list(self._incidents.values()),
            silences=list(self._silences.values()),
            deploys=self._deploys,
            current_versions=self._current_versions,
            held=self._held,
            recurrences=self._recurrences,
        ).model_dump(mode="json")

    def set_state(self, state: dict[str, Any]) -> None:
        st = EngineState.model_validate(state)
        if st.version != STATE_VERSION:
            raise ValueError(f"unsupported engine state version {st.version}")
        self._incidents = {i.dedup_key: i for i in st.incidents}
        # The policy file's silences as the file has them now (a restart is how a
        # maintenance window added to it takes effect); the stored ones besides.
        self._silences = {s.id: s for s in st.silences} | {s.id: s for s in self.policy.silences}
        self._deploys = list(st.deploys)
        self._current_versions = dict(st.current_versions)
        self._held = st.held
        self._recurrences = {k: list(v) for k, v in st.recurrences.items()}

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
        window = minutes(self.policy.warmup.bad_deploy_window_minutes)
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
        cap = max(base, lc.max_hysteresis_minutes)
        factor = lc.flap_hysteresis_factor
        # Compared in logarithms: the count only grows, and the power itself would
        # overflow a float (1,024 flaps at factor 2) and stop the model's engine for good.
        if factor > 1.0 and rec.flap_count * math.log(factor) >= math.log(cap / base):
            return minutes(cap)
        return minutes(min(cap, base * factor**rec.flap_count))

    def _playbook_of(self, rec: IncidentRecord) -> Playbook | None:
        return self.playbooks.get(rec.playbook.name) if rec.playbook else None

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
        cause explains (:func:`alerting.grouping.find_cause`) is folded into it as a
        related signal: an update, not a new page. Otherwise it opens an incident labelled
        with its localized scope (:attr:`Detection.scope`).
        """
        now = require_utc(now) if now is not None else detection.at
        fp = detection.fingerprint()
        if any(fp in r.fingerprints for r in self._incidents.values()):
            return []  # at-least-once redelivery of a detection already folded in
        if self._held_back(detection, now):
            return []
        grouping = self.policy.grouping.enabled
        scope = detection.scope if grouping else detection.labels
        key = dedup_key_of(scope, detection.incident_type)
        deploy = self._deploy_of(scope) or self._deploy_of(detection.labels)
        a = assess(self.policy, self.playbooks, detection, deploy, now)
        rec = self._incident_for(detection, scope, key, now, grouping)
        if rec is None:
            rec, events = self._open(detection, scope, key, a, now)
        elif not rec.active and (rec.reports_past(detection) or detection.at <= rec.last_seen):
            events = self._late(rec, detection)
        elif not rec.active:
            events = self._reopen(rec, detection, a, now)
        else:
            events = self._update(rec, detection, a, now)
        family = family_of(detection.incident_type)
        if family not in rec.families:
            rec.families.append(family)
        for probe in detection.probes:
            if probe not in rec.probes and len(rec.probes) < MAX_PROBES:
                rec.probes.append(probe)
        rec.fingerprints = [*rec.fingerprints, fp][-MAX_FINGERPRINTS:]
        return events

    def _held_back(self, detection: Detection, now: datetime) -> bool:
        """A detection on a version still warming up, with too few observations: held
        (counted in :attr:`held_count`), not an incident. Only one judged against a
        learned baseline: a critical output is an incident on its own, on any version."""
        labels, signal = detection.labels, detection.signal
        if not relearnable(signal.kind):
            return False  # judged without a learned baseline (a critical output): no warm-up
        deploy = self._deploy_of(labels)
        warm = self.policy.warmup
        if deploy is None or now - deploy.deployed_at >= minutes(warm.warmup_minutes):
            return False
        pb = self.playbooks.for_type(detection.incident_type)
        min_obs = warm.min_observations
        if pb is not None and pb.detection.min_observations is not None:
            min_obs = pb.detection.min_observations
        if signal.n_observations >= min_obs:
            return False
        self._held += 1
        log.info(
            "held %s on %s: version warming up, n=%d < %d",
            detection.incident_type,
            labels.describe(),
            signal.n_observations,
            min_obs,
        )
        return True

    def _incident_for(
        self, detection: Detection, scope: Labels, key: str, now: datetime, grouping: bool
    ) -> IncidentRecord | None:
        """The tracked incident the detection belongs to (None: a new one)."""
        reopen = minutes(self.policy.lifecycle.reopen_window_minutes)
        if grouping:
            return find_cause(
                self._incidents.values(),
                detection,
                scope,
                key,
                now,
                reopen=reopen,
                fresh=self.recent_deploy(scope, now) if not scope.segment else None,
                hysteresis=self._hysteresis,
            )
        rec = self._incidents.get(key)
        if (
            rec is not None
            and not rec.active
            and rec.resolved_at is not None
            and now - rec.resolved_at > reopen
        ):
            return None
        return rec

    def _open(
        self, detection: Detection, scope: Labels, key: str, a: Assessment, now: datetime
    ) -> tuple[IncidentRecord, list[IncidentEvent]]:
        rec = IncidentRecord(
            incident_id="inc-" + stable_hash(key, iso_utc(detection.at), length=20),
            dedup_key=key,
            labels=scope,
            incident_type=detection.incident_type,
            status=IncidentStatus.FIRING,
            severity=a.severity,
            severity_reasons=a.reasons,
            evidence=a.evidence,
            first_seen=detection.window_start or detection.at,
            last_seen=detection.at,
            spans=[(detection.reports_from, detection.served)],
            opened_at=now,
            deadline_at=now + a.deadline,
            playbook=a.playbook,
            deploy=a.recent_deploy,
            replay=self.replay or detection.replay,
            families=[family_of(detection.incident_type)],
        )
        self._incidents[key] = rec
        relate(rec, detection)
        note = "new incident"
        if detection.localization is not None:
            note += f"; localized: {detection.localization.reason}"
        self._count_opening(rec, now)
        return rec, self._emit(rec, IncidentAction.TRIGGER, now, note)

    def _count_opening(self, rec: IncidentRecord, now: datetime) -> None:
        """Record ``rec``'s opening among those of its dedup key (the ones within
        ``recurrence_window_hours`` kept, one more than ``MAX_RECURRENCES`` at most)."""
        window = self._recurrence_window()
        if window is None:
            return
        times = [t for t in self._recurrences.get(rec.dedup_key, []) if now - t < window]
        # kept in time order (a late detection can open with an earlier time): the newest
        # are the ones kept, and the last is the newest
        self._recurrences[rec.dedup_key] = sorted([*times, now])[-(MAX_RECURRENCES + 1) :]

    def _recurring(self, rec: IncidentRecord) -> str:
        """From the second incident of ``rec``'s dedup key opened within
        ``recurrence_window_hours`` up to its own opening, the note's count of them. A key
        that keeps paging at one level after each resolve may have an unlucky or outdated
        baseline: the note names the re-learn (:mod:`alerting.relearn`), which stays a
        person's decision (for a signal kind with a learned baseline). Muted and inhibited
        incidents count too: the cause recurred whether or not anyone was paged. Every
        incident's first trigger carries it (:meth:`_emit`): at its opening, when its mute
        lifts, on a detection after a silence ends, on a reopening."""
        window = self._recurrence_window()
        if window is None:
            return ""
        count = sum(
            1
            for t in self._recurrences.get(rec.dedup_key, ())
            if timedelta(0) <= rec.opened_at - t < window
        )
        if count < 2:
            return ""
        shown = f"{MAX_RECURRENCES}+" if count > MAX_RECURRENCES else str(count)
        hours = window / timedelta(hours=1)
        return (
            f"; recurring: {shown} incidents of this type and scope in {hours:g} h"
            + _relearn_hint(rec)
        )

    def _recurrence_window(self) -> timedelta | None:
        hours = self.policy.lifecycle.recurrence_window_hours
        return timedelta(hours=hours) if hours > 0 else None

    def _reopen(
        self, rec: IncidentRecord, detection: Detection, a: Assessment, now: datetime
    ) -> list[IncidentEvent]:
        rec.flap_count += 1
        rec.status = IncidentStatus.FIRING
        rec.escalated = False
        rec.resolved_at = None
        rec.recovered_at = rec.ended_at = None
        rec.notified = False
        # Scored afresh: the escalation at the last firing's deadline was about that
        # firing; kept, each flap's deadline would raise a mild signal one more rank.
        rec.severity, rec.severity_reasons = a.severity, a.reasons
        rec.evidence = a.evidence
        rec.last_seen = max(rec.last_seen, detection.at)
        rec.fold_span(detection)
        rec.opened_at = now
        rec.deadline_at = now + a.deadline
        if a.playbook is not None and (rec.playbook is None or a.recent_deploy is not None):
            rec.playbook = a.playbook
        rec.deploy = rec.deploy or a.recent_deploy
        relate(rec, detection)
        lc = self.policy.lifecycle
        return self._emit(
            rec,
            IncidentAction.TRIGGER,
            now,
            f"reopened: {detection.incident_type} on {detection.labels.describe()} re-fired "
            f"within {lc.reopen_window_minutes:g} min of resolving "
            f"(flap {rec.flap_count}; quiet period now {minutes_text(self._hysteresis(rec))})",
        )

    def _late(self, rec: IncidentRecord, detection: Detection) -> list[IncidentEvent]:
        """A detection on a resolved incident that says nothing of the cause after it
        resolved: its evidence begins before the cause ended
        (:meth:`IncidentRecord.reports_past`), or it alarmed no later than the last
        detection folded in (out of event-time order, as a backlog across partitions can
        deliver it). Folded in as evidence; no reopen and no page."""
        relate(rec, detection)
        log.debug(
            "%s on %s at %s (evidence from %s) is not news to resolved incident %s (cause "
            "ended %s, last detection %s): folded in, not reopened",
            detection.incident_type,
            detection.labels.describe(),
            iso_utc(detection.at),
            iso_utc(detection.reports_from),
            rec.incident_id,
            iso_utc(rec.ended_at) if rec.ended_at is not None else "?",
            iso_utc(rec.last_seen),
        )
        return []

    def _update(
        self, rec: IncidentRecord, detection: Detection, a: Assessment, now: datetime
    ) -> list[IncidentEvent]:
        labels = detection.labels
        primary = detection.incident_type == rec.incident_type and nested(rec.labels, labels)
        if primary and a.evidence.window_end >= rec.evidence.window_end:
            rec.evidence = a.evidence  # (a detection out of event-time order is older)
        rec.last_seen = max(rec.last_seen, detection.at)
        if not rec.reports_past(detection):
            rec.recovered_at = rec.ended_at = None
        rec.fold_span(detection)
        relate(rec, detection)
        related = "" if primary else f" (related: {detection.incident_type} on {labels.describe()})"
        if primary and a.severity.rank >= rec.severity.rank:
            rec.severity_reasons = kept_reasons(rec, a.severity, a.reasons)
        if a.severity.rank < rec.severity.rank:
            old = rec.severity
            why = f"{detection.incident_type} on {labels.describe()}"
            rec.severity = a.severity
            rec.severity_reasons = (
                *a.reasons,
                f"escalated by {why}: {old.value} -> {a.severity.value}",
            )
            return self._emit(
                rec,
                IncidentAction.UPDATE,
                now,
                f"re-scored: {old.value} -> {a.severity.value} (by {why})",
            )
        if not rec.notified:
            return self._emit(rec, IncidentAction.TRIGGER, now, "new incident")
        interval = minutes(self.policy.lifecycle.update_interval_minutes)
        if rec.last_emitted_at is None or now - rec.last_emitted_at >= interval:
            return self._emit(rec, IncidentAction.UPDATE, now, "still firing: re-scored" + related)
        return []

    def probes(self) -> list[Probe]:
        """The probes of the active incidents (the pipeline reads them before ``tick``)."""
        out: dict[str, Probe] = {}
        for rec in self._incidents.values():
            if rec.active:
                for p in rec.probes:
                    out[p.id] = p
        return list(out.values())

    # ---- tick ---------------------------------------------------------------------------

    def tick(
        self,
        now: datetime,
        health: Mapping[str, bool] | None = None,
        ended: Mapping[str, datetime] | None = None,
    ) -> list[IncidentEvent]:
        """Advance time: expire silences, resolve incidents whose cause is over, escalate
        overdue ones, emit triggers whose mute lifted, forget long-resolved incidents.

        ``health`` maps :attr:`Probe.id` to whether the change that detector alarmed on
        persists (:func:`streams.pipeline.localize.probe_health`). An incident with probes
        resolves only once every probe reads the change as ended and a quiet period
        (hysteresis) has passed since; while any probe is alarmed it stays open however
        long its detectors stay quiet, and escalates at its playbook deadline. Without
        probes or health readings (drift tests, or a caller that has none) the rule is the
        detector's quiet period since the last detection.

        ``ended`` maps the id of a probe read as ended to when its change ended by its
        detector's estimate; the quiet period runs from the latest of an incident's
        (:func:`alerting.incident.resolve_due`).
        """
        now = require_utc(now)
        self._silences = {k: s for k, s in self._silences.items() if s.ends_at > now}
        keep_deploys = minutes(
            max(self.policy.warmup.warmup_minutes, self.policy.warmup.bad_deploy_window_minutes)
        )
        self._deploys = [d for d in self._deploys if now - d.deployed_at < keep_deploys]

        events: list[IncidentEvent] = []
        # General keys first, so a model-wide resolve un-inhibits its children this tick.
        order = sorted(self._incidents.values(), key=lambda r: (specificity(r.labels), r.dedup_key))
        for rec in order:
            if not rec.active:
                continue
            hyst = self._hysteresis(rec)
            due, why = resolve_due(
                rec, cause_verdict(rec, health), now, hyst, cause_end(rec, ended)
            )
            if due:
                rec.status = IncidentStatus.RESOLVED
                rec.resolved_at = now
                events += self._emit(rec, IncidentAction.RESOLVE, now, why)
            elif now >= rec.deadline_at and not rec.escalated and rec.recovered_at is None:
                # Not while every probe reads back at baseline (resolving): that is not
                # "not recovered by the deadline"; a probe that alarms again escalates it.
                rec.escalated = True
                rec.status = IncidentStatus.ESCALATED
                old = rec.severity
                rec.severity = Severity.from_rank(old.rank - 1)
                pb_name = rec.playbook.name if rec.playbook else "policy default"
                change = (
                    f"{old.value} -> {rec.severity.value}"
                    if rec.severity != old
                    else f"{old.value}, the highest severity already"
                )
                reason = (
                    f"{ESCALATION_REASON} {pb_name} deadline ({iso_utc(rec.deadline_at)}): {change}"
                )
                rec.severity_reasons = (*rec.severity_reasons, reason)
                note = f"escalated: {reason}{_held_by(rec, health)}{_relearn_hint(rec)}"
                events += self._emit(rec, IncidentAction.UPDATE, now, note)
            elif not rec.notified and now - rec.last_seen <= hyst / 3:
                # Page a formerly muted incident only while its detector is still firing;
                # a stale one resolves quietly, or pages on its next detection.
                events += self._emit(rec, IncidentAction.TRIGGER, now, "mute lifted")
        forget = minutes(self.policy.lifecycle.reopen_window_minutes)
        self._incidents = {
            k: r
            for k, r in self._incidents.items()
            if r.active or (r.resolved_at is not None and now - r.resolved_at <= forget)
        }
        # A key's opening times go once no incident of it is tracked and the newest is out
        # of the window: no later opening (now or after) would count them.
        recent = self._recurrence_window() or timedelta(0)
        self._recurrences = {
            k: ts
            for k, ts in self._recurrences.items()
            if ts and (k in self._incidents or now - max(ts) < recent)
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
            if not rec.notified:
                note += self._recurring(rec)  # the first page anyone sees of it
            rec.notified = True
        rec.last_emitted_at = now
        return [rec.event(action, now, note)]


def _relearn_hint(rec: IncidentRecord) -> str:
    """The operator re-learn, named where a level may be the new normal (a scope that keeps
    paging, an incident open past its deadline); empty for a signal kind without a learned
    baseline. It names the command and leaves the decision to a person."""
    if not relearnable(rec.evidence.signal.kind):
        return ""
    return (
        f"; if its level is the new normal: sentinel relearn add --incident "
        f"{rec.incident_id} --reason ..."
    )


def _held_by(rec: IncidentRecord, health: Mapping[str, bool] | None) -> str:
    """The note's account of what has not recovered: the probes still reading the change
    as persisting (empty without readings, e.g. drift tests)."""
    held = persisting(rec, health)
    if not held:
        return ""
    return "; still persisting: " + ", ".join(p.describe() for p in held)
