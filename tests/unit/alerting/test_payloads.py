from __future__ import annotations

import json
from datetime import timedelta

from alerting.engine import IncidentEngine
from alerting.model import BlastRadius, IncidentEvent
from alerting.payloads import (
    ALERTMANAGER_ZERO_TIME,
    alertmanager_webhook,
    pagerduty_event,
    sign,
    slack_message,
    verify,
)
from detectors.base import SignalKind

from .helpers import T0, detection, minutes, playbooks, policy, signal


def _trigger_and_resolve() -> tuple[IncidentEvent, IncidentEvent]:
    eng = IncidentEngine(policy(), playbooks())
    [t] = eng.observe(
        detection(
            version="v3",
            segment={"tenant": "acme"},
            sig=signal(SignalKind.CRITICAL_EVENT, feature="data_exposure"),
            blast=BlastRadius(traffic_share=0.1, distinct_users=42),
        )
    )
    [r] = eng.tick(T0 + minutes(120))
    return t, r


def test_pagerduty_trigger_and_resolve_fields() -> None:
    t, r = _trigger_and_resolve()
    body = pagerduty_event(t, "rk-123", playbook_base_url="https://git.example/pb/")
    assert set(body) == {"routing_key", "event_action", "dedup_key", "payload", "links", "images"}
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == t.dedup_key
    p = body["payload"]
    assert set(p) == {
        "summary",
        "source",
        "severity",
        "timestamp",
        "component",
        "group",
        "class",
        "custom_details",
    }
    assert p["severity"] == "critical"  # data_exposure floor SEV1
    assert p["class"] == "critical_event:data_exposure"
    assert p["component"] == "support-bot"
    assert p["group"] == "v3"
    assert p["timestamp"].endswith("Z")
    assert len(p["summary"]) <= 1024
    cd = p["custom_details"]
    assert cd["sample_request_ids"] == ["req-1", "req-2"]
    assert cd["event_ranges"][0]["topic"] == "feedback"
    assert "category data_exposure ranks at least SEV1" in cd["severity_reasons"]
    assert body["links"] == [
        {"href": "https://git.example/pb/critical_event.toml", "text": "Playbook: critical_event"}
    ]
    json.dumps(body)  # serialisable
    res = pagerduty_event(r, "rk-123")
    assert res == {"routing_key": "rk-123", "event_action": "resolve", "dedup_key": t.dedup_key}


def test_alertmanager_v4_fields() -> None:
    t, r = _trigger_and_resolve()
    body = alertmanager_webhook(t, receiver="sre", external_url="http://sentinel:8080")
    assert set(body) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["truncatedAlerts"] == 0
    [alert] = body["alerts"]
    assert set(alert) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert alert["endsAt"] == ALERTMANAGER_ZERO_TIME
    assert alert["labels"]["alertname"] == "sentinel_critical_event_data_exposure"
    assert alert["labels"]["segment_tenant"] == "acme"
    assert alert["labels"]["severity"] == "critical"
    assert all(isinstance(v, str) for v in alert["labels"].values())
    assert all(isinstance(v, str) for v in alert["annotations"].values())
    assert alert["annotations"]["playbook"].endswith("critical_event.toml")
    assert len(alert["fingerprint"]) == 16
    res = alertmanager_webhook(r, receiver="sre", external_url="")
    assert res["status"] == "resolved"
    assert res["alerts"][0]["endsAt"] == "2025-03-01T14:00:00Z"
    assert res["alerts"][0]["fingerprint"] == alert["fingerprint"]
    assert res["groupKey"] == body["groupKey"]


def test_slack_blocks() -> None:
    t, r = _trigger_and_resolve()
    msg = slack_message(t)
    assert set(msg) == {"text", "blocks"}
    assert msg["text"].startswith(":red_circle: SEV1 Triggered")
    types = [b["type"] for b in msg["blocks"]]
    assert types == ["header", "section", "section", "context"]
    assert msg["blocks"][0]["text"]["type"] == "plain_text"
    assert len(msg["blocks"][0]["text"]["text"]) <= 150
    assert "data_exposure" in msg["blocks"][2]["text"]["text"]
    assert slack_message(r)["text"].startswith(":white_check_mark: Resolved")


def test_hmac_sign_and_verify() -> None:
    body = b'{"a":1}'
    ts = str(int(T0.timestamp()))
    sig = sign(b"k", ts, body)
    assert sig.startswith("sha256=")
    assert len(sig) == 7 + 64
    assert verify(b"k", body, ts, sig, now=T0 + timedelta(seconds=30))
    assert not verify(b"other", body, ts, sig, now=T0)
    assert not verify(b"k", body + b" ", ts, sig, now=T0)
    assert not verify(b"k", body, ts, sig, now=T0 + timedelta(minutes=6))  # stale
    assert not verify(b"k", body, "not-a-number", sig, now=T0)
