"""What ``sentinel status`` shows: open incidents folded from the alerts topic.

The alerts topic is keyed by dedup key, so every step of one incident identity lives in one
partition, in order. The latest event per dedup key is the incident's current state; it is
open unless that event's status is ``resolved``. A worker's at-least-once redelivery can
publish a step again after later ones: an event whose incident already had that step or a
later one (``sequence``) is a copy and does not count. Pure functions, no Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable

from alerting.model import IncidentEvent, IncidentStatus, time_text


def fold_open_incidents(events: Iterable[IncidentEvent]) -> list[IncidentEvent]:
    """Latest event per dedup key (events in log order; an older step of an incident
    read again is skipped), keeping the unresolved ones, worst severity first, then
    oldest first."""
    latest: dict[str, IncidentEvent] = {}
    top: dict[str, int] = {}
    for ev in events:
        if ev.sequence <= top.get(ev.incident_id, 0):
            continue  # a copy of a step already read: not the incident's state
        top[ev.incident_id] = ev.sequence
        latest[ev.dedup_key] = ev
    open_ = [e for e in latest.values() if e.status != IncidentStatus.RESOLVED]
    return sorted(open_, key=lambda e: (e.severity.rank, e.first_seen, e.dedup_key))


def render_incidents(events: list[IncidentEvent]) -> str:
    """One line per open incident: id, type, labels, severity, status, since."""
    if not events:
        return "no open incidents"
    rows = [("ID", "TYPE", "LABELS", "SEVERITY", "STATUS", "SINCE")]
    rows += [
        (
            e.incident_id,
            e.incident_type,
            e.labels.describe(),
            e.severity.value,
            e.status.value,
            time_text(e.first_seen),
        )
        for e in events
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(col.ljust(w) for col, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )
