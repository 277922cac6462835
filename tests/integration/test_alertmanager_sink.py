"""``sentinel notify --sink alertmanager`` against a real Prometheus Alertmanager.

Alertmanager v0.35.0 built from its Go module (:mod:`tests.integration.alertmanager_server`),
a real broker, and the ``sentinel notify`` command in its own process. One incident is
fired, escalated, held past Alertmanager's ``resolve_timeout`` (across a restart of
``sentinel notify``), and resolved; ``/api/v2/alerts`` is read after each step: one alert
per incident while it fires, with its current severity, and none after the resolve.
Then the webhook-v4 body posted to the API v2 (what the issue's user did) is refused,
and that dead letter keeps Alertmanager's reason and makes the exit status non-zero.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerting.delivery import FailedDelivery
from alerting.engine import IncidentEngine
from alerting.model import (
    IncidentAction,
    IncidentEvent,
    IncidentStatus,
    Severity,
    event_id_of,
)
from detectors.base import SignalKind
from streams.cli.ops import EXIT_DEAD_LETTERS
from streams.kafka.topics import read_topic_to_end
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.alertmanager_server import active_alerts, alertmanager
from tests.integration.incidents import publish_incidents
from tests.integration.workers import child_env, process_group, run_captured
from tests.unit.alerting.helpers import detection, playbooks, policy
from tests.unit.alerting.helpers import signal as make_signal

pytestmark = pytest.mark.integration

RESOLVE_TIMEOUT_S = 3
REFRESH_S = 2.0
"""endsAt is 4 refreshes (8 s) ahead; Alertmanager would end an alert without endsAt
after RESOLVE_TIMEOUT_S."""
PUBLIC_URL = "https://sentinel.example.com"


def _notify_cmd(url: str, config: Path, *extra: str) -> list[str]:
    code = "import sys; from streams.cli.main import main; sys.exit(main())"
    return [sys.executable, "-c", code, "notify", "--sink", *extra, "--url", url,
            "--config-file", str(config)]  # fmt: skip


def _lifecycle() -> tuple[IncidentEvent, IncidentEvent, IncidentEvent]:
    """A SEV3 downvote incident of one tenant and version, escalated to SEV1, resolved;
    timed now (Alertmanager drops alerts that ended long ago)."""
    eng = IncidentEngine(policy(), playbooks())
    now = datetime.now(UTC).replace(microsecond=0)
    [first] = eng.observe(
        detection(
            now - timedelta(minutes=3),
            version="v7",
            segment={"tenant": "acme"},
            sig=make_signal(SignalKind.DOWNVOTE_RATE),
        )
    )
    trigger = first.model_copy(update={"severity": Severity.SEV3, "emitted_at": now})

    def step(seq: int, **update: Any) -> IncidentEvent:
        return trigger.model_copy(
            update={"sequence": seq, "event_id": event_id_of(trigger.incident_id, seq)} | update
        )

    escalate = step(2, action=IncidentAction.UPDATE, severity=Severity.SEV1,
                    severity_reasons=("escalated: 3x the baseline",))  # fmt: skip
    resolve = step(3, action=IncidentAction.RESOLVE, status=IncidentStatus.RESOLVED,
                   severity=Severity.SEV1)  # fmt: skip
    return trigger, escalate, resolve


def _wait(predicate: Callable[[], bool], what: str, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; notify log:\n{log.read_text()[-3000:]}")


def _ours(url: str, dedup_key: str) -> list[dict[str, Any]]:
    return [a for a in active_alerts(url) if a["labels"].get("dedup_key") == dedup_key]


@pytest.mark.timeout(300)
def test_fire_escalate_hold_restart_resolve(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    trigger, escalate, resolve = _lifecycle()
    key = trigger.dedup_key
    config = tmp_path / "notify.toml"
    config.write_text(
        f"[alertmanager]\nrefresh_s = {REFRESH_S}\n[http]\nuse_env_proxy = false\n",
        encoding="utf-8",
    )
    console = service_settings.console.model_copy(update={"public_url": PUBLIC_URL})
    env = child_env(service_settings.model_copy(update={"console": console}))
    log = tmp_path / "notify.log"
    alerts_topic = service_settings.topics.alerts
    with alertmanager(tmp_path, resolve_timeout_s=RESOLVE_TIMEOUT_S) as am:
        cmd = _notify_cmd(am, config, "alertmanager")
        with process_group(cmd, env, log) as proc:
            # fire
            publish_incidents(kafka_broker.bootstrap, alerts_topic, [trigger])
            _wait(lambda: len(_ours(am, key)) == 1, "the firing alert", log)
            [alert] = _ours(am, key)
            labels = alert["labels"]
            assert labels["severity"] == "warning"
            assert labels["sentinel_severity"] == "SEV3"
            assert labels["model"] == trigger.labels.model
            assert labels["version"] == "v7"
            assert labels["segment_tenant"] == "acme"
            assert labels["alertname"] == "sentinel_downvote_rate"
            assert alert["status"]["state"] == "active"
            assert alert["generatorURL"] == f"{PUBLIC_URL}/incidents/{trigger.incident_id}"
            assert alert["annotations"]["incident_id"] == trigger.incident_id
            if trigger.playbook is not None:
                book = f"{PUBLIC_URL}/incidents/{trigger.incident_id}#playbook"
                assert alert["annotations"]["runbook_url"] == book

            # escalate: the same one alert, now critical; the warning one is gone
            publish_incidents(kafka_broker.bootstrap, alerts_topic, [escalate])
            _wait(
                lambda: [a["labels"]["severity"] for a in _ours(am, key)] == ["critical"],
                "one alert, escalated to critical",
                log,
            )

            # hold past resolve_timeout: refreshed, never ended
            first_end = _ours(am, key)[0]["endsAt"]
            # longer than resolve_timeout and than one endsAt ahead: only refreshes keep it
            held_until = time.monotonic() + 4 * REFRESH_S + RESOLVE_TIMEOUT_S
            while time.monotonic() < held_until:
                assert len(_ours(am, key)) == 1, log.read_text()[-3000:]
                time.sleep(0.5)
            _wait(lambda: _ours(am, key)[0]["endsAt"] > first_end, "a refreshed endsAt", log)
            assert proc.poll() is None, log.read_text()[-3000:]
        assert proc.returncode == 0, log.read_text()[-3000:]

        # a restarted notify takes the open incident up again from the alerts topic. With no
        # notify running the alert may end (endsAt is 4 refreshes ahead) before the new
        # process has started and joined its group on a busy machine: either way the
        # restarted notify must post it again with a later endsAt.
        held = _ours(am, key)
        restarted_end = held[0]["endsAt"] if held else ""
        with process_group(cmd, env, log) as proc:
            _wait(
                lambda: any(a["endsAt"] > restarted_end for a in _ours(am, key)),
                "the restarted notify refreshing the open incident",
                log,
            )
            assert [a["labels"]["severity"] for a in _ours(am, key)] == ["critical"]
            # resolve: gone
            publish_incidents(kafka_broker.bootstrap, alerts_topic, [resolve])
            _wait(lambda: _ours(am, key) == [], "the alert to end on resolve", log)
            time.sleep(2 * REFRESH_S)  # later refreshes do not bring it back
            assert _ours(am, key) == []
        assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.mark.timeout(180)
def test_webhook_v4_body_is_refused_with_alertmanagers_reason(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    trigger, _, _ = _lifecycle()
    config = tmp_path / "notify.toml"
    config.write_text(
        '[webhook]\nformat = "alertmanager-webhook-v4"\n[http]\nuse_env_proxy = false\n',
        encoding="utf-8",
    )
    env = child_env(service_settings, {"SENTINEL_NOTIFY_WEBHOOK_SECRET": "s3cret"})
    with alertmanager(tmp_path, resolve_timeout_s=RESOLVE_TIMEOUT_S) as am:
        publish_incidents(kafka_broker.bootstrap, service_settings.topics.alerts, [trigger])
        cmd = _notify_cmd(f"{am}/api/v2/alerts", config, "webhook")
        run = run_captured([*cmd, "--until-idle", "3", "--max-seconds", "60"], env, timeout_s=120)
    assert run.returncode == EXIT_DEAD_LETTERS, run.stdout + run.stderr
    assert "dead lettered 1" in run.stdout
    dead = read_topic_to_end(kafka_broker.bootstrap, service_settings.topics.dead_letter)
    [letter] = [FailedDelivery.model_validate_json(r.value or b"") for r in dead]
    assert letter.reason.startswith("HTTP 400 (permanent): "), letter.reason
    assert "models.PostableAlerts" in letter.reason, letter.reason
    assert letter.event.event_id == trigger.event_id
