"""The engine's side of grouping by cause: which tracked incident a detection belongs to,
and how it is listed there.

The pure rule of which signals one cause explains is :func:`alerting.cause.same_cause`;
this module adds time and identity (:func:`find_cause`) and keeps the incident's list of
related signals (:func:`relate`). Split from :mod:`alerting.engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from alerting.cause import family_of, nested, same_cause
from alerting.incident import IncidentRecord
from alerting.model import MAX_RELATED, DeployRef, Detection, Labels, RelatedSignal


def find_cause(
    incidents: Iterable[IncidentRecord],
    detection: Detection,
    scope: Labels,
    key: str,
    now: datetime,
    *,
    reopen: timedelta,
    fresh: DeployRef | None,
    hysteresis: Callable[[IncidentRecord], timedelta],
) -> IncidentRecord | None:
    """The open (or recently resolved, within ``reopen``) incident whose cause explains
    ``detection`` localized to ``scope`` (dedup key ``key``); the best-matching one when
    several do. ``fresh`` is the recent deploy of the scope's version, if any.

    Rules beyond :func:`same_cause`: only the same identity reopens a resolved incident,
    though a detection with evidence from before its cause ended joins it as evidence
    (:meth:`IncidentRecord.reports_past`); a fresh deploy is a cause of its own, named by
    its version (it joins only its own incident); a signal of another family joins only an
    incident whose cause was still firing (within its quiet period) when the signal's episode began.
    """
    family = family_of(detection.incident_type)
    started = detection.window_start or detection.at
    best: tuple[tuple[bool, bool, bool, bool, datetime], IncidentRecord] | None = None
    for rec in incidents:
        if rec.labels.model != scope.model:
            continue
        if not rec.active and (
            rec.resolved_at is None
            or now - rec.resolved_at > reopen
            or (rec.dedup_key != key and not rec.reports_past(detection))
        ):
            continue  # only the same identity reopens, or evidence of its cause joins, it
        if rec.dedup_key == key:
            pass
        elif fresh is not None and (rec.deploy is None or rec.deploy.version != fresh.version):
            continue  # a fresh deploy is a cause of its own, named by its version
        elif (
            family not in rec.families
            and rec.deploy is None
            and started > rec.last_seen + hysteresis(rec)
        ):
            continue  # another signal whose episode began after this cause went quiet
        elif not same_cause(
            rec.labels,
            [rec.incident_type, *rec.families, *(r.incident_type for r in rec.related)],
            rec.deploy is not None,
            scope,
            detection.labels,
            detection.incident_type,
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


def relate(rec: IncidentRecord, detection: Detection) -> None:
    """List the detection among the incident's related signals (one entry per key and
    type, with its latest statistics and a count), the entry it touched first. A detection
    out of event-time order (older than its entry) is counted; the entry keeps the newer
    statistics."""
    sig = detection.signal

    def same(r: RelatedSignal) -> bool:
        return r.labels == detection.labels and r.incident_type == detection.incident_type

    old = next((r for r in rec.related if same(r)), None)
    count = 1 + (old.count if old is not None else 0)
    if old is not None and old.at > detection.at:
        entry = old.model_copy(update={"count": count})
    else:
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
    rec.related = [entry, *(r for r in rec.related if not same(r))][:MAX_RELATED]
