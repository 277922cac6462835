"""The Alertmanager API v2 sink: labels, endsAt ahead, refresh, severity change, resolve.

Requests are built against an injected clock and read back as Alertmanager would; the
real Alertmanager runs in ``tests/integration/test_alertmanager_sink.py``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from alerting.alertmanager import label_name
from alerting.delivery import DeliveryRunner
from alerting.engine import IncidentEngine
from alerting.model import IncidentAction, IncidentEvent, IncidentStatus, Severity, event_id_of
from alerting.sinks import AlertmanagerSink
from alerting.transport import HttpRequest, HttpResponse

from .helpers import ManualClock, detection, playbooks, policy


class Recording:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[list[dict[str, Any]]] = []

    def post(self, request: HttpRequest) -> HttpResponse:
        assert request.url == "http://am:9093/api/v2/alerts"
        self.bodies.append(json.loads(request.body))
        return HttpResponse(status=self.status)


def _steps() -> tuple[IncidentEvent, IncidentEvent, IncidentEvent]:
    [t] = IncidentEngine(policy(), playbooks()).observe(
        detection(version=None, segment={"tenant.id": "acme"})
    )
    t = t.model_copy(update={"severity": Severity.SEV3})

    def step(seq: int, **kw: Any) -> IncidentEvent:
        return t.model_copy(
            update={"sequence": seq, "event_id": event_id_of(t.incident_id, seq)} | kw
        )

    up = step(2, action=IncidentAction.UPDATE, severity=Severity.SEV1)
    res = step(
        3, action=IncidentAction.RESOLVE, status=IncidentStatus.RESOLVED, severity=Severity.SEV1
    )
    return t, up, res


def _setup(status: int = 200) -> tuple[AlertmanagerSink, DeliveryRunner, Recording, ManualClock]:
    clock = ManualClock()
    sink = AlertmanagerSink("http://am:9093/", refresh_s=60, console_url="https://s.example/")
    rec = Recording(status)
    runner = DeliveryRunner(
        sink, rec, dead_letter=lambda d: None, sleep=lambda s: None, clock=clock
    )
    return sink, runner, rec, clock


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_firing_alert_labels_and_ends_ahead() -> None:
    t, _, _ = _steps()
    _, runner, rec, clock = _setup()
    runner.deliver(t)
    [[alert]] = rec.bodies
    labels = alert["labels"]
    assert labels["version"] == "all"  # model-wide: explicit, never an absent label
    assert labels["segment_tenant_id"] == "acme"  # a valid label name
    assert labels["severity"] == "warning"
    assert labels["dedup_key"] == t.dedup_key
    assert _at(alert["endsAt"]) == clock.t + timedelta(seconds=240)
    assert _at(alert["startsAt"]) == t.first_seen
    assert alert["generatorURL"] == f"https://s.example/incidents/{t.incident_id}"


def test_refresh_moves_ends_at_only_when_due() -> None:
    t, _, _ = _steps()
    _, runner, rec, clock = _setup()
    runner.deliver(t)
    runner.refresh()  # the first refresh after start is immediate
    assert len(rec.bodies) == 2
    clock.t += timedelta(seconds=59)
    runner.refresh()
    assert len(rec.bodies) == 2
    clock.t += timedelta(seconds=1)
    runner.refresh()
    [alert] = rec.bodies[-1]
    assert _at(alert["endsAt"]) == clock.t + timedelta(seconds=240)


def test_escalation_ends_the_old_label_set_in_the_same_request() -> None:
    t, up, _ = _steps()
    _, runner, rec, clock = _setup()
    runner.deliver(t)
    clock.t += timedelta(seconds=5)
    runner.deliver(up)
    ended, firing = rec.bodies[-1]
    assert ended["labels"]["severity"] == "warning"
    assert _at(ended["endsAt"]) == clock.t
    assert firing["labels"]["severity"] == "critical"
    assert _at(firing["startsAt"]) == t.first_seen  # the same incident, not a new one
    assert {k: v for k, v in ended["labels"].items() if "severity" not in k} == {
        k: v for k, v in firing["labels"].items() if "severity" not in k
    }


def test_resolve_ends_the_alert_and_refresh_resends_ends_until_accepted() -> None:
    t, up, res = _steps()
    sink, runner, rec, clock = _setup()
    for ev in (t, up, res):
        runner.deliver(ev)
    assert sink.firing == 0
    assert all(_at(a["endsAt"]) <= clock.t for a in rec.bodies[-1])
    rec.status = 503
    clock.t += timedelta(seconds=61)
    runner.refresh()  # refused: ended alerts stay queued
    rec.status = 200
    clock.t += timedelta(seconds=60)
    runner.refresh()
    assert all(_at(a["endsAt"]) < clock.t for a in rec.bodies[-1])
    n = len(rec.bodies)
    clock.t += timedelta(seconds=60)
    runner.refresh()  # accepted: nothing left to send
    assert len(rec.bodies) == n


def test_restore_takes_up_open_incidents() -> None:
    _, up, _ = _steps()
    sink, runner, rec, clock = _setup()
    sink.restore([up], clock.now())
    runner.refresh()
    [[alert]] = rec.bodies
    assert alert["labels"]["severity"] == "critical"


def test_label_name() -> None:
    assert label_name("segment_tenant-id") == "segment_tenant_id"
    assert label_name("9lives") == "_9lives"
    assert label_name("sentinel_critical_event:self_harm") == "sentinel_critical_event_self_harm"
