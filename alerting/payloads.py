"""Payload builders for the systems SREs already run, with the field names they define.

* PagerDuty Events API v2 (``POST https://events.pagerduty.com/v2/enqueue``).
* Alertmanager webhook v4 (the JSON Alertmanager posts to a ``webhook_config`` receiver);
  Sentinel speaks it so any receiver written for Alertmanager accepts its incidents.
* Slack incoming webhook / ``chat.postMessage`` body: ``text`` fallback plus ``blocks``.
* A generic webhook: the IncidentEvent JSON, signed (see :func:`sign` / :func:`verify`).

Builders are pure functions of an :class:`IncidentEvent`; secrets are passed in and are
never part of any log line.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Any, Literal

from alerting.model import IncidentAction, IncidentEvent, IncidentStatus, iso_utc, stable_hash

PD_SUMMARY_MAX = 1024
ALERTMANAGER_ZERO_TIME = "0001-01-01T00:00:00Z"
SLACK_HEADER_MAX = 150
SLACK_TEXT_MAX = 3000

SIGNATURE_HEADER = "X-Sentinel-Signature"
TIMESTAMP_HEADER = "X-Sentinel-Timestamp"
EVENT_ID_HEADER = "X-Sentinel-Event-Id"


def _custom_details(event: IncidentEvent) -> dict[str, Any]:
    ev = event.evidence
    return {
        "incident_id": event.incident_id,
        "incident_type": event.incident_type,
        "sentinel_severity": event.severity.value,
        "severity_reasons": list(event.severity_reasons),
        "labels": event.labels.canonical(),
        "signal": ev.signal.model_dump(mode="json"),
        "event_ranges": [r.model_dump(mode="json") for r in ev.ranges],
        "sample_request_ids": list(ev.sample_request_ids),
        "window_start": iso_utc(ev.window_start) if ev.window_start else None,
        "window_end": iso_utc(ev.window_end),
        "blast_radius": ev.blast_radius.model_dump(mode="json") if ev.blast_radius else None,
        "first_seen": iso_utc(event.first_seen),
        "last_seen": iso_utc(event.last_seen),
        "note": event.note,
        "flap_count": event.flap_count,
        "playbook": event.playbook.model_dump() if event.playbook else None,
        "sequence": event.sequence,
        "event_id": event.event_id,
    }


def _playbook_url(event: IncidentEvent, playbook_base_url: str | None) -> str | None:
    if event.playbook is None or not playbook_base_url:
        return None
    return f"{playbook_base_url.rstrip('/')}/{event.playbook.name}.toml"


def pagerduty_event(
    event: IncidentEvent,
    routing_key: str,
    *,
    source: str = "sentinel",
    playbook_base_url: str | None = None,
) -> dict[str, Any]:
    """PagerDuty Events v2 body. Updates re-send ``trigger`` with the same ``dedup_key``
    (PagerDuty folds them into the open alert); resolves send only what resolve needs."""
    if event.action == IncidentAction.RESOLVE:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": event.dedup_key}
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": event.dedup_key,
        "payload": {
            "summary": event.summary[:PD_SUMMARY_MAX],
            "source": f"{source}/{event.labels.model}",
            "severity": event.severity.pagerduty,
            "timestamp": iso_utc(event.last_seen),
            "component": event.labels.model,
            "group": event.labels.version or "all-versions",
            "class": event.incident_type,
            "custom_details": _custom_details(event),
        },
        "links": [],
        "images": [],
    }
    url = _playbook_url(event, playbook_base_url)
    if url and event.playbook is not None:
        body["links"].append({"href": url, "text": f"Playbook: {event.playbook.name}"})
    return body


def alertmanager_labels(event: IncidentEvent) -> dict[str, str]:
    labels = {
        "alertname": f"sentinel_{event.incident_type.replace(':', '_')}",
        "incident_type": event.incident_type,
        "severity": event.severity.pagerduty,
        "sentinel_severity": event.severity.value,
        **event.labels.flat(),
    }
    return labels


SEVERITY_LABELS = frozenset({"severity", "sentinel_severity"})


def _fingerprint(labels: dict[str, str]) -> str:
    """The alert's identity: its labels except severity, so an escalation (an update of the
    same incident) stays the same alert for the receiver."""
    return stable_hash(
        sorted((k, v) for k, v in labels.items() if k not in SEVERITY_LABELS), length=16
    )


def alertmanager_webhook(
    event: IncidentEvent,
    *,
    receiver: str,
    external_url: str,
    generator_url: str = "",
    ends_at: datetime | None = None,
) -> dict[str, Any]:
    """Alertmanager webhook v4 body for one incident (one alert per group).

    Firing alerts carry Alertmanager's zero time as ``endsAt``; resolved ones the resolve
    time (``emitted_at``) unless given.
    """
    resolved = event.action == IncidentAction.RESOLVE or event.status == IncidentStatus.RESOLVED
    status = "resolved" if resolved else "firing"
    labels = alertmanager_labels(event)
    annotations = {
        "summary": event.summary,
        "description": "; ".join(event.severity_reasons),
        "incident_id": event.incident_id,
        "note": event.note,
    }
    if event.playbook is not None:
        annotations["playbook"] = event.playbook.path
    group_labels = {"alertname": labels["alertname"], "model": event.labels.model}
    end = iso_utc(ends_at or event.emitted_at) if resolved else ALERTMANAGER_ZERO_TIME
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{labels["alertname"]}", model="{event.labels.model}"}}'
        f"/{event.dedup_key}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": iso_utc(event.first_seen),
                "endsAt": end,
                "generatorURL": generator_url,
                "fingerprint": _fingerprint(labels),
            }
        ],
    }


_SLACK_EMOJI = {"SEV1": ":red_circle:", "SEV2": ":large_orange_circle:", "SEV3": ":warning:"}


def slack_message(event: IncidentEvent, *, playbook_base_url: str | None = None) -> dict[str, Any]:
    """Slack message body (``text`` is the notification fallback; ``blocks`` the layout)."""
    if event.action == IncidentAction.RESOLVE:
        head = f":white_check_mark: Resolved: {event.incident_type} on {event.labels.model}"
    else:
        emoji = _SLACK_EMOJI.get(event.severity.value, ":information_source:")
        verb = "Triggered" if event.action == IncidentAction.TRIGGER else "Updated"
        head = (
            f"{emoji} {event.severity.value} {verb}: {event.incident_type} on {event.labels.model}"
        )
    ev = event.evidence
    fields = [
        {"type": "mrkdwn", "text": f"*Scope*\n{event.labels.describe()}"},
        {"type": "mrkdwn", "text": f"*Status*\n{event.status.value}"},
        {
            "type": "mrkdwn",
            "text": f"*Change*\n{ev.signal.baseline:.4g} -> {ev.signal.observed:.4g}",
        },
        {"type": "mrkdwn", "text": f"*First seen*\n{iso_utc(event.first_seen)}"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:SLACK_HEADER_MAX]}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": event.summary[:SLACK_TEXT_MAX]},
            "fields": fields,
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    "*Why this severity*\n" + "\n".join(f"• {r}" for r in event.severity_reasons)
                )[:SLACK_TEXT_MAX],
            },
        },
    ]
    context = [f"incident `{event.incident_id}`", f"seq {event.sequence}"]
    url = _playbook_url(event, playbook_base_url)
    if url and event.playbook is not None:
        context.append(f"<{url}|playbook {event.playbook.name}>")
    elif event.playbook is not None:
        context.append(f"playbook `{event.playbook.path}`")
    if event.note:
        context.append(event.note)
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " | ".join(context)}]}
    )
    return {"text": head, "blocks": blocks}


def add_console_link(
    body: dict[str, Any],
    event: IncidentEvent,
    console_url: str | None,
    kind: Literal["pagerduty", "alertmanager", "slack"],
) -> dict[str, Any]:
    """Point a built payload at the incident's page in the operator console
    (``console.public_url`` + ``/incidents/<id>``): a PagerDuty ``links`` entry, each
    Alertmanager alert's ``generatorURL``, a Slack button. No URL configured: unchanged."""
    if not console_url:
        return body
    url = f"{console_url.rstrip('/')}/incidents/{event.incident_id}"
    if kind == "pagerduty" and "links" in body:
        body["links"].insert(0, {"href": url, "text": "Sentinel console"})
    elif kind == "alertmanager":
        for alert in body.get("alerts", []):
            alert["generatorURL"] = url
    elif kind == "slack":
        button = {"type": "button", "text": {"type": "plain_text", "text": "Open in console"}}
        body["blocks"].append({"type": "actions", "elements": [button | {"url": url}]})
    return body


# ---- generic webhook signing ------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, f"{timestamp}." + body).

    Signing the timestamp with the body lets receivers reject replays of old requests.
    """
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: bytes,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    now: datetime,
    tolerance: timedelta = timedelta(minutes=5),
) -> bool:
    """How a receiver checks a Sentinel webhook.

    1. Read the raw body bytes (before any JSON parsing) and the ``X-Sentinel-Timestamp``
       (Unix seconds) and ``X-Sentinel-Signature`` headers.
    2. Reject if the timestamp is further than ``tolerance`` from the receiver's clock.
    3. Recompute :func:`sign` and compare in constant time (``hmac.compare_digest``).
    4. Drop duplicates by ``X-Sentinel-Event-Id`` (delivery is at-least-once).
    """
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now.timestamp() - ts) > tolerance.total_seconds():
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
