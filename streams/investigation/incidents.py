"""Incidents as recorded on the alerts topic: read, fold per incident id, filter, tabulate.

The alerts topic holds every lifecycle step (trigger, update, resolve) of every incident;
the latest step (highest ``sequence``) of an incident id is its current state. Records
that are not valid incident events are counted, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import ValidationError

from alerting.model import (
    IncidentAction,
    IncidentEvent,
    IncidentStatus,
    Severity,
    time_text,
)
from streams.investigation.kafka_read import KafkaHistory

StatusFilter = Literal["open", "resolved", "all"]


@dataclass
class IncidentLog:
    """All events of every incident read from a topic."""

    events: dict[str, list[IncidentEvent]] = field(default_factory=dict)
    invalid: int = 0

    def add(self, event: IncidentEvent) -> None:
        evs = self.events.setdefault(event.incident_id, [])
        if all(e.event_id != event.event_id for e in evs):  # duplicates after a crash
            evs.append(event)
            evs.sort(key=lambda e: e.sequence)

    def latest(self) -> list[IncidentEvent]:
        return [evs[-1] for evs in self.events.values()]

    def history(self, incident_id: str) -> list[IncidentEvent]:
        """The events of one incident, oldest first. Raises ``LookupError`` if unknown."""
        evs = self.events.get(incident_id)
        if not evs:
            raise LookupError(incident_id)
        return list(evs)


def read_incident_log(history: KafkaHistory, topic: str) -> IncidentLog:
    log = IncidentLog()
    for rec in history.read_topic(topic):
        try:
            if rec.value is None:
                raise ValueError("empty value")
            log.add(IncidentEvent.model_validate_json(rec.value))
        except (ValidationError, ValueError):
            log.invalid += 1
    return log


def incident_log_from_lines(lines: Iterable[str | bytes]) -> IncidentLog:
    """The same from a JSONL file (``sentinel replay --output``)."""
    log = IncidentLog()
    for line in lines:
        if not line.strip():
            continue
        try:
            log.add(IncidentEvent.model_validate_json(line))
        except ValidationError:
            log.invalid += 1
    return log


@dataclass(frozen=True)
class IncidentFilter:
    """``sentinel incidents`` filters; every one given must match."""

    model: str | None = None
    severity: Severity | None = None
    incident_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: StatusFilter = "all"

    def matches(self, latest: IncidentEvent) -> bool:
        if self.model is not None and latest.labels.model != self.model:
            return False
        if self.severity is not None and latest.severity != self.severity:
            return False
        if self.incident_type is not None and not (
            latest.incident_type == self.incident_type
            or latest.incident_type.startswith(self.incident_type + ":")
        ):
            return False
        resolved = latest.status == IncidentStatus.RESOLVED
        if self.status == "open" and resolved:
            return False
        if self.status == "resolved" and not resolved:
            return False
        # Time filters select incidents active at some point in [since, until].
        end = latest.last_seen if resolved else None
        if self.since is not None and end is not None and end < self.since:
            return False
        return not (self.until is not None and latest.first_seen > self.until)


def select(log: IncidentLog, flt: IncidentFilter) -> list[IncidentEvent]:
    """Latest event of each matching incident, newest first."""
    rows = [ev for ev in log.latest() if flt.matches(ev)]
    rows.sort(key=lambda e: (e.first_seen, e.incident_id), reverse=True)
    return rows


def opening_event(events: Sequence[IncidentEvent]) -> IncidentEvent:
    """The incident's first trigger (the detection that opened it), else its first event."""
    triggers = [e for e in events if e.action == IncidentAction.TRIGGER]
    return min(triggers, key=lambda e: e.evidence.window_end) if triggers else events[0]


def triggered_at(events: Sequence[IncidentEvent]) -> datetime:
    """Event time of the incident's first trigger (the detection that opened it)."""
    return opening_event(events).evidence.window_end


def duration_minutes(latest: IncidentEvent) -> float:
    """From first seen to resolution (or to the last detection while open), minutes."""
    return (latest.last_seen - latest.first_seen).total_seconds() / 60.0


def duration_text(latest: IncidentEvent, now: datetime) -> str:
    """The DURATION column: minutes from first seen to resolution; for an incident still
    firing, to ``now`` (at least to its last detection), marked ``+`` (it goes on).
    A firing incident of one detection used to show 0.0 (issue 17)."""
    if latest.status == IncidentStatus.RESOLVED:
        return f"{duration_minutes(latest):.1f}"
    open_for = max((now - latest.first_seen).total_seconds() / 60.0, duration_minutes(latest))
    return f"{open_for:.1f}+"


def segment_text(ev: IncidentEvent) -> str:
    seg = ",".join(f"{k}={v}" for k, v in sorted(ev.labels.segment.items()))
    return seg or "-"


HEADERS = (
    "INCIDENT",
    "STATUS",
    "SEV",
    "TYPE",
    "MODEL",
    "VERSION",
    "SEGMENT",
    "FIRST SEEN (UTC)",
    "LAST SEEN (UTC)",
    "DURATION (min)",
    "REPLAY",
)


def table_rows(events: Sequence[IncidentEvent], now: datetime) -> list[tuple[str, ...]]:
    return [
        (
            ev.incident_id,
            ev.status.value,
            ev.severity.value,
            ev.incident_type,
            ev.labels.model,
            ev.labels.version or "*",
            segment_text(ev),
            time_text(ev.first_seen),
            time_text(ev.last_seen),
            duration_text(ev, now),
            "yes" if ev.replay else "no",
        )
        for ev in events
    ]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
