"""``sentinel postmortem``: a Markdown root-cause-analysis draft for one incident.

Facts come from the records, not from memory: the timeline from the incident's events on
the alerts topic, containment from the control topic (the commands whose incident id is
this one; the topic is compacted per model, so older commands may be gone, and the draft
says so), the playbook from ``detection.playbooks_dir``. What only people know (root
cause, impact on users, follow-ups) is left as marked questions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from alerting.containment import ContainmentCommand, ModelContainment, describe_action
from alerting.model import (
    IncidentAction,
    IncidentEvent,
    IncidentStatus,
    effect_text,
    iso_utc,
    values_text,
)
from alerting.playbooks import Impact, Playbook, load_playbooks
from alerting.policy import ConfigError
from streams.investigation.audit import Investigation
from streams.investigation.incidents import triggered_at
from streams.investigation.kafka_read import KafkaHistory, Record
from streams.investigation.report import merged_ranges


@dataclass(frozen=True)
class ControlRecord:
    at: datetime
    command: ContainmentCommand
    topic: str
    partition: int
    offset: int


def containment_for(records: Iterable[Record], incident_id: str) -> list[ControlRecord]:
    """Containment commands for ``incident_id`` found in control-topic records."""
    out: dict[str, ControlRecord] = {}
    for rec in records:
        if rec.value is None:
            continue
        try:
            snap = ModelContainment.model_validate_json(rec.value)
        except ValidationError:
            continue
        cmd = snap.last_command
        if cmd is not None and cmd.incident_id == incident_id and cmd.command_id not in out:
            out[cmd.command_id] = ControlRecord(
                cmd.issued_at, cmd, rec.topic, rec.partition, rec.offset
            )
    return sorted(out.values(), key=lambda c: (c.at, c.command.command_id))


def read_containment(history: KafkaHistory, topic: str, incident_id: str) -> list[ControlRecord]:
    return containment_for(history.read_topic(topic), incident_id)


def find_playbook(events: Sequence[IncidentEvent], playbooks_dir: str) -> Playbook | None:
    latest = events[-1]
    try:
        playbooks = load_playbooks(playbooks_dir)
    except ConfigError:
        return None
    if latest.playbook is not None:
        found = playbooks.get(latest.playbook.name)
        if found is not None:
            return found
    return playbooks.for_type(latest.incident_type)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_postmortem(
    events: Sequence[IncidentEvent],
    containment: Sequence[ControlRecord],
    playbook: Playbook | None,
    *,
    control_topic: str,
    generated_at: datetime,
    impact: Impact | None = None,
) -> str:
    """The Markdown draft: one section after another, each from the incident's events.

    ``impact`` (from :func:`impact_of` over the evidence records) dates the user
    notification from the first affected event and counts the affected requests/users."""
    lines = _header(events, generated_at)
    lines += _timeline(events, containment)
    lines += _evidence(events, impact)
    lines += _containment(containment, playbook, control_topic)
    lines += _playbook(events[-1], playbook, impact)
    lines += [
        "",
        "## Root cause",
        "",
        "**TODO**: the change that caused it (deploy, data, "
        "prompt, retrieval corpus, upstream classifier) and how it was confirmed.",
        "",
    ]
    lines += ["## Open questions", ""]
    lines += [f"- {q}" for q in open_questions(events, containment, playbook)]
    lines += [
        "",
        "## Action items",
        "",
        "| Action | Owner | Due |",
        "|---|---|---|",
        "| **TODO** | | |",
        "",
    ]
    return "\n".join(lines)


def impact_of(events: Sequence[IncidentEvent], inv: Investigation) -> Impact | None:
    """The affected window and counts from the localized scope's evidence.

    The evidence (events in the incident's ranges that carry its labels, in stream order)
    starts at the detector's change-point estimate, so its first flagged events can be
    ordinary baseline ones. The failure starts where the flagged rate rises for good from
    the signal's baseline towards its observed rate: the last minimum of
    ``sum(flagged - reference)`` with the reference halfway between the two (Page's CUSUM
    change point). Affected = the flagged events from there, to the resolve (or the last
    detection while open). ``None`` when none is flagged."""
    entries = sorted(inv.evidence, key=lambda e: (e.time, e.coords.offset))
    if not any(e.flagged for e in entries):
        return None
    sig = events[-1].evidence.signal
    ref = (sig.baseline + max(sig.observed, sig.baseline)) / 2.0
    total, low, start = 0.0, 0.0, 0
    for k, e in enumerate(entries):
        total += (1.0 if e.flagged else 0.0) - ref
        if total <= low:
            low, start = total, k + 1
    hit = [e for e in entries[start:] if e.flagged] or [e for e in entries if e.flagged]
    users = {e.user_hash for e in hit if e.user_hash is not None}
    return Impact(
        first_affected=hit[0].time,
        until=resolved_at(events) or events[-1].last_seen,
        requests=len({e.request_id for e in hit}),
        users=len(users) if users else None,
    )


def resolved_at(events: Sequence[IncidentEvent]) -> datetime | None:
    """When the incident was resolved, as emitted: the last resolve event's time, if the
    incident is resolved now."""
    if events[-1].status != IncidentStatus.RESOLVED:
        return None
    resolves = [e.emitted_at for e in events if e.action == IncidentAction.RESOLVE]
    return resolves[-1] if resolves else events[-1].emitted_at


def escalated_at(events: Sequence[IncidentEvent]) -> datetime | None:
    """When the incident first escalated, as emitted (``None`` if it never did)."""
    for ev in events:
        if ev.status == IncidentStatus.ESCALATED:
            return ev.emitted_at
    return None


def _header(events: Sequence[IncidentEvent], generated_at: datetime) -> list[str]:
    latest = events[-1]
    sig = latest.evidence.signal
    worst = latest.severity
    for ev in events:
        worst = worst.worse_of(ev.severity)
    trig = triggered_at(events)
    detected = min(
        (e.emitted_at for e in events if e.action == IncidentAction.TRIGGER),
        default=events[0].emitted_at,
    )
    resolved = resolved_at(events)
    escalated = escalated_at(events)
    end = resolved or latest.last_seen
    lines = [
        f"# Postmortem draft: {latest.summary}",
        "",
        f"*Draft generated {iso_utc(generated_at)} by `sentinel postmortem` from the alerts "
        f"and control topics. Sections marked **TODO** need a human.*",
        "",
    ]
    if latest.replay:
        lines += ["> This incident comes from a replay: it never paged anyone.", ""]
    return [
        *lines,
        "| | |",
        "|---|---|",
        f"| Incident | `{latest.incident_id}` (dedup key `{latest.dedup_key}`) |",
        f"| Type | {latest.incident_type} |",
        f"| Scope | {_md(latest.labels.describe())} |",
        f"| Severity | {latest.severity.value} now, worst {worst.value} |",
        f"| Status | {latest.status.value} |",
        f"| First seen (UTC) | {iso_utc(latest.first_seen)} |",
        f"| Triggered (UTC) | {iso_utc(trig)} (detection's event time) |",
        f"| Detected (UTC) | {iso_utc(detected)} (trigger emitted) |",
        f"| Escalated (UTC) | {iso_utc(escalated) if escalated else 'never'} |",
        f"| {'Resolved' if resolved else 'Last seen'} (UTC) | {iso_utc(end)} |",
        f"| Duration | {(end - latest.first_seen).total_seconds() / 60:.1f} min "
        f"(first seen to {'resolve' if resolved else 'last detection'}) |",
        "",
        "## Summary",
        "",
        f"**TODO**: what happened, to whom, for how long. Detector facts: {sig.detector} saw "
        f"{values_text(sig)} (effect {effect_text(sig)}) over {sig.n_observations} "
        "observations.",
        "",
    ]


def _timeline(events: Sequence[IncidentEvent], containment: Sequence[ControlRecord]) -> list[str]:
    lines = ["## Timeline (UTC)", "", "| Time | What | Severity | Note |", "|---|---|---|---|"]
    rows: list[tuple[datetime, str, str, str]] = []
    for ev in events:
        # Each event at the time it was emitted; a detection also at its event time.
        what = f"{ev.action.value} (#{ev.sequence}, {ev.status.value})"
        if ev.action == IncidentAction.TRIGGER:
            what += f"; window from {iso_utc(ev.evidence.window_start or ev.first_seen)}"
        rows.append((ev.emitted_at, what, ev.severity.value, ev.note or ev.summary))
        detection = ev.action == IncidentAction.TRIGGER or (
            ev.action == IncidentAction.UPDATE and ev.status != IncidentStatus.ESCALATED
        )
        if detection and ev.evidence.window_end != ev.emitted_at:
            rows.append((ev.evidence.window_end, f"detection behind event #{ev.sequence}", "", ""))
    for c in containment:
        acts = ", ".join(describe_action(a) for a in c.command.actions) or "no actions"
        rows.append((c.at, f"containment {c.command.op}: {acts}", "", ""))
    rows.sort(key=lambda r: r[0])
    return lines + [f"| {iso_utc(t)} | {_md(w)} | {s} | {_md(n)} |" for t, w, s, n in rows]


def _evidence(events: Sequence[IncidentEvent], impact: Impact | None) -> list[str]:
    latest = events[-1]
    sig = latest.evidence.signal
    lines = [
        "",
        "## Evidence",
        "",
        f"- Detector: `{sig.detector}` ({sig.kind.value}"
        f"{', ' + sig.feature if sig.feature else ''}), direction {sig.direction.value}",
        f"- Statistic {sig.statistic:.3f} crossed threshold {sig.threshold:.3f}"
        + (f" (p = {sig.p_value:.2g})" if sig.p_value is not None else ""),
        f"- {values_text(sig)}, effect size {effect_text(sig)}, {sig.n_observations} observations",
    ]
    if impact is not None:
        lines.append(
            f"- Affected: {impact.describe()} flagged in the evidence, from "
            f"{iso_utc(impact.first_affected)} to {iso_utc(impact.until)}"
        )
    br = latest.evidence.blast_radius
    if br is not None and br.traffic_share is not None:
        lines.append(f"- Blast radius: {br.traffic_share:.0%} of the model's traffic")
    lines.append("- Severity reasons: " + "; ".join(latest.severity_reasons))
    lines.append("- Records (topic[partition] first..last offset):")
    merged = merged_ranges(r for ev in events for r in ev.evidence.ranges)
    lines += [f"  - `{t}[{p}]` {a}..{b}" for t, p, a, b in merged]
    samples = latest.evidence.sample_request_ids
    lines.append("- Sample request ids: " + (", ".join(f"`{s}`" for s in samples) or "none"))
    lines.append(
        f"- Reproduce: `sentinel investigate {latest.incident_id} --plot {latest.incident_id}.png`"
    )
    if latest.deploy is not None:
        d = latest.deploy
        lines.append(
            f"- Deploy: {d.model} {d.version} (from {d.previous_version or '?'}) at "
            f"{iso_utc(d.deployed_at)}"
        )
    return lines


def _containment(
    containment: Sequence[ControlRecord], playbook: Playbook | None, control_topic: str
) -> list[str]:
    lines = ["", "## Containment", ""]
    if containment:
        for c in containment:
            acts = ", ".join(describe_action(a) for a in c.command.actions) or "no actions"
            extra = f" (skipped: {'; '.join(c.command.skipped)})" if c.command.skipped else ""
            dry = " [dry run]" if c.command.dry_run else ""
            lines.append(
                f"- {iso_utc(c.at)} {c.command.op}{dry}: {acts}{extra} "
                f"(`{c.topic}[{c.partition}]@{c.offset}`)"
            )
    else:
        lines.append(
            f"- No containment command for this incident on `{control_topic}` (none was "
            "issued, it was a replay, or compaction removed it). **TODO**: record manual actions."
        )
    if playbook is not None and playbook.containment:
        planned = ", ".join(describe_action(a) for a in playbook.containment)
        lines.append(f"- Playbook containment: {planned}")
    return lines


def _playbook(latest: IncidentEvent, playbook: Playbook | None, impact: Impact | None) -> list[str]:
    lines = ["", "## Playbook", ""]
    if playbook is None:
        return [*lines, f"No playbook found for `{latest.incident_type}`."]
    lines += [
        f"[{playbook.title}]({playbook.path}) (`{playbook.name}`); owners: "
        + ", ".join(playbook.owners)
        + f"; escalation deadline {playbook.deadline_minutes:g} min.",
        "",
        "Runbook (tick what was done):",
        "",
    ]
    lines += [f"- [ ] {_md(step)}" for step in playbook.runbook]
    subject, body = playbook.render_notification(latest, impact)
    return [
        *lines,
        "",
        f"User notification ({playbook.notification.audience}), draft:",
        "",
        f"> **{_md(subject)}**",
        ">",
        "> " + " ".join(body.split()),
    ]


def open_questions(
    events: Sequence[IncidentEvent],
    containment: Sequence[ControlRecord],
    playbook: Playbook | None,
) -> list[str]:
    latest = events[-1]
    qs = [
        "Which change started it? Compare the retrieved documents, system-instruction "
        "hashes and versions of flagged vs other events (`sentinel investigate`).",
        f"How many users were affected between {iso_utc(latest.first_seen)} and "
        f"{iso_utc(resolved_at(events) or latest.last_seen)}, and must they be notified?",
    ]
    if not containment and not latest.replay:
        qs.append("No automatic containment was recorded: was anything done by hand, and when?")
    if any(c.command.skipped for c in containment):
        qs.append("Some playbook actions were skipped (see Containment): is the playbook right?")
    if latest.status != IncidentStatus.RESOLVED:
        qs.append("The incident is still open: what is needed to resolve it?")
    if sum(1 for e in events if e.action == IncidentAction.TRIGGER) > 1:
        qs.append("It re-triggered after resolving: was containment released too early?")
    if latest.severity != events[0].severity:
        qs.append(
            f"Severity moved from {events[0].severity.value} to {latest.severity.value}: "
            "was the escalation handled within the deadline?"
        )
    if playbook is None:
        qs.append(f"There is no playbook for {latest.incident_type}: should there be?")
    if latest.deploy is not None:
        qs.append(f"Was the deploy of {latest.deploy.version} rolled back, and is it safe now?")
    qs.append(
        "Would a different detector setting have caught it earlier without more false "
        "pages? (`sentinel backtest --compare`)"
    )
    return qs
