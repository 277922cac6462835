"""Pushing incidents to Prometheus Alertmanager's API v2, the way Prometheus does.

``POST <alertmanager>/api/v2/alerts`` takes a list of *postable alerts* (labels,
annotations, ``startsAt``, ``endsAt``, ``generatorURL``). Alertmanager keys an alert by its
label set and considers it firing until ``endsAt``; an alert posted without ``endsAt`` is
ended after ``resolve_timeout`` (5 min by default). So, as Prometheus does:

* **One alert per incident.** The labels are the incident's identity (alert name, type,
  model, version, segment labels, dedup key) plus its severity (``severity``, the
  PagerDuty-style level routes match on, and ``sentinel_severity``). When an incident's
  severity changes, the alert under the old label set is ended (``endsAt`` = now) in the
  same request that posts the new one, so Alertmanager shows one active alert, not two.
* **endsAt ahead, refreshed.** A firing alert gets ``endsAt`` = now + 4 x ``refresh_s``
  (Prometheus: 4 x its resend delay) and every firing alert is re-posted every
  ``refresh_s`` (:meth:`AlertmanagerApiSink.refresh_request`, driven by the notify loop's
  injected clock). Set ``refresh_s`` well below Alertmanager's ``resolve_timeout``. If
  Sentinel stops, its alerts end by themselves within 4 x ``refresh_s``; a restarted
  ``sentinel notify`` re-posts the open incidents (:meth:`AlertmanagerApiSink.restore`).
* **Resolve** posts the alert with ``endsAt`` = now: it leaves ``/api/v2/alerts`` at once.
  Ended alerts are re-sent with the next refresh until a refresh has been accepted, so a
  failed resolve does not leave an alert behind.
* ``generatorURL`` (``<public_url>/incidents/<incident_id>``, the operator console's page)
  and the playbook URL (the ``runbook_url`` and ``playbook`` annotations: the playbook
  base URL, or that page's playbook section) when ``console.public_url`` is configured.

Alertmanager and Sentinel compare ``endsAt`` with their own clocks: keep them in sync
(NTP); a resolve from a clock ahead of Alertmanager's is only seen at that time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from alerting.model import IncidentAction, IncidentEvent, IncidentStatus, iso_utc

ALERTS_PATH = "/api/v2/alerts"
ENDS_AFTER_REFRESHES = 4
"""A firing alert's ``endsAt`` is this many refresh intervals ahead (Prometheus's rule)."""
ALL_VERSIONS = "all"
"""The ``version`` label of a model-wide incident (Alertmanager treats an empty label as
absent, so a route matching ``version`` would silently skip those)."""


def alerts_url(url: str) -> str:
    """``url`` of Alertmanager (``http://am:9093``) or of its alerts endpoint -> endpoint."""
    base = url.rstrip("/")
    return base if base.endswith(ALERTS_PATH) else base + ALERTS_PATH


_NOT_IN_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


def label_name(text: str) -> str:
    """``text`` as a Prometheus label name (``[a-zA-Z_][a-zA-Z0-9_]*``): other characters
    become ``_``, as Prometheus's own translators do. Segment keys come from producers."""
    name = _NOT_IN_LABEL_NAME.sub("_", text)
    return name if name and not name[0].isdigit() else f"_{name}"


def identity_labels(event: IncidentEvent) -> dict[str, str]:
    """The labels that name the incident, without its severity. Every alert has
    ``version`` (``all`` for a model-wide incident) and one ``segment_<key>`` per segment
    label of its scope."""
    return {
        "alertname": label_name(f"sentinel_{event.incident_type}"),
        "incident_type": event.incident_type,
        "model": event.labels.model,
        "version": event.labels.version or ALL_VERSIONS,
        **{label_name(f"segment_{k}"): v for k, v in sorted(event.labels.segment.items())},
        "dedup_key": event.dedup_key,
    }


def alert_labels(event: IncidentEvent) -> dict[str, str]:
    """Identity labels plus the severity labels routes and inhibitions match on."""
    return identity_labels(event) | {
        "severity": event.severity.pagerduty,
        "sentinel_severity": event.severity.value,
    }


def playbook_url(event: IncidentEvent, base_url: str | None) -> str | None:
    if event.playbook is None or not base_url:
        return None
    return f"{base_url.rstrip('/')}/{event.playbook.name}"


@dataclass(frozen=True)
class PostableAlert:
    """One entry of the API v2 body (``models.PostableAlert``) minus its end time."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    generator_url: str = ""
    ends_at: datetime | None = field(default=None)

    def to_json(self, ends_at: datetime) -> dict[str, Any]:
        body: dict[str, Any] = {
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": iso_utc(self.starts_at),
            "endsAt": iso_utc(max(ends_at, self.starts_at)),
        }
        if self.generator_url:
            body["generatorURL"] = self.generator_url
        return body

    def label_key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.labels.items()))


def postable_alert(
    event: IncidentEvent,
    now: datetime,
    *,
    public_url: str = "",
    playbook_base_url: str | None = None,
) -> PostableAlert:
    """The alert for ``event`` (``startsAt`` is the incident's first sighting, never later
    than ``now``: Alertmanager rejects an alert that ends before it starts)."""
    annotations = {
        "summary": event.summary,
        "description": "; ".join(event.severity_reasons),
        "incident_id": event.incident_id,
        "sequence": str(event.sequence),
        "first_seen": iso_utc(event.first_seen),
        "last_seen": iso_utc(event.last_seen),
    }
    if event.note:
        annotations["note"] = event.note
    base = public_url.rstrip("/")
    page = f"{base}/incidents/{event.incident_id}" if base else ""
    book = playbook_url(event, playbook_base_url) if playbook_base_url else None
    if book is None and page and event.playbook is not None:
        book = f"{page}#playbook"  # the console's incident page shows the playbook
    if book is not None:
        annotations["playbook"] = book
        annotations["runbook_url"] = book
    elif event.playbook is not None:
        annotations["playbook"] = event.playbook.path
    return PostableAlert(
        labels=alert_labels(event),
        annotations=annotations,
        starts_at=min(event.first_seen, now),
        generator_url=page,
    )


def is_resolve(event: IncidentEvent) -> bool:
    return event.action == IncidentAction.RESOLVE or event.status == IncidentStatus.RESOLVED


def alerts_body(
    firing: Iterable[PostableAlert],
    ended: Iterable[PostableAlert],
    now: datetime,
    ends_after: timedelta,
) -> bytes:
    """The JSON request body: ended alerts (their own ``ends_at``) then firing ones."""
    items = [a.to_json(a.ends_at or now) for a in ended]
    items += [a.to_json(now + ends_after) for a in firing]
    return json.dumps(items, separators=(",", ":")).encode()


class AlertmanagerState:
    """What Alertmanager should show: the firing alert per incident (dedup key), and the
    alerts ended since the last accepted refresh (re-sent until one is accepted).

    Pure bookkeeping with times passed in; the sink turns it into requests.
    """

    def __init__(self) -> None:
        self.firing: dict[str, PostableAlert] = {}
        self.ended: dict[tuple[tuple[str, str], ...], PostableAlert] = {}

    def apply(self, event: IncidentEvent, alert: PostableAlert, now: datetime) -> None:
        """Record ``event``'s step: its alert fires (or ends, for a resolve); an earlier
        alert of the same incident under other labels (another severity) ends now."""
        key = event.dedup_key
        prev = self.firing.get(key)
        if prev is not None and prev.label_key() != alert.label_key():
            self.ended[prev.label_key()] = replace(prev, ends_at=now)
        if is_resolve(event):
            self.firing.pop(key, None)
            self.ended[alert.label_key()] = replace(alert, ends_at=now)
        else:
            if prev is not None:  # keep the incident's first startsAt
                alert = replace(alert, starts_at=min(prev.starts_at, alert.starts_at))
            self.firing[key] = alert
            self.ended.pop(alert.label_key(), None)

    def ended_alerts(self) -> list[PostableAlert]:
        return list(self.ended.values())

    def forget_ended(self, keys: Iterable[tuple[tuple[str, str], ...]]) -> None:
        for k in keys:
            self.ended.pop(k, None)
