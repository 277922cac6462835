"""One cause, one page, end to end (issue 12 item 5): the incident events of one cause go
through ``sentinel notify`` on the real broker and come out as one PagerDuty dedup_key,
one Alertmanager alert (a real Alertmanager) and one Slack thread, also when ``sentinel
notify`` is restarted between the incident's events.

PagerDuty's Events API and Slack's chat.postMessage are played by the local receiver of
the sink tests (:mod:`tests.integration.webhook_receiver`), answering as those services do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerting.engine import IncidentEngine
from alerting.model import IncidentAction, IncidentEvent
from streams.cli.main import main
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.alertmanager_server import active_alerts, alertmanager
from tests.integration.incidents import publish_incidents
from tests.integration.webhook_receiver import Recorder, serve
from tests.integration.workers import use_settings_env
from tests.unit.alerting.helpers import PLAYBOOK_DIR, T0, minutes, playbooks, policy
from tests.unit.alerting.test_cause import lb, localized, tox

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _one_cause() -> list[IncidentEvent]:
    """One tenant's toxicity seen through its tenant, locale and model-wide keys and in
    several categories, escalated at its deadline, then resolved: one incident."""
    eng = IncidentEngine(policy(grouping=True), playbooks())
    acme = lb(tenant="acme")
    detections = [
        localized(acme, 0, key=lb(), sig=tox()),
        localized(acme, 1, key=acme, sig=tox("toxicity", last_index=1100)),
        localized(acme, 2, key=lb(locale="en-US"), sig=tox("toxicity", last_index=1200)),
        localized(acme, 3, key=lb(), sig=tox("harassment", last_index=1300)),
        localized(acme, 40, key=acme, sig=tox("toxicity", effect=6.0, last_index=4000)),
    ]
    events: list[IncidentEvent] = []
    for d in detections:
        events += eng.observe(d)  # type: ignore[arg-type]
    # still elevated at the playbook's 30-minute deadline: escalated (an update)
    events += eng.tick(T0 + minutes(45), {p.id: True for p in eng.probes()})
    events += eng.tick(T0 + minutes(600))
    return events


@pytest.fixture
def env(service_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    extra = {
        "SENTINEL_DETECTION__PLAYBOOKS_DIR": str(PLAYBOOK_DIR),
        "SENTINEL_NOTIFY_PAGERDUTY_ROUTING_KEY": "pd-routing-key",
        "SENTINEL_NOTIFY_SLACK_TOKEN": "xoxb-test-token",
    }
    return use_settings_env(monkeypatch, service_settings, extra)


@pytest.fixture
def receivers() -> Iterator[tuple[str, Recorder, str, Recorder]]:
    pd = Recorder(None, reply=lambda n: b'{"status":"success","message":"Event processed"}')
    slack = Recorder(
        None, reply=lambda n: json.dumps({"ok": True, "ts": f"1700000000.{n:06d}"}).encode()
    )
    with serve(pd, "/v2/enqueue") as pd_url, serve(slack, "/api/chat.postMessage") as slack_url:
        yield pd_url, pd, slack_url, slack


def _notify(sink: str, config: Path, *extra: str) -> None:
    bounded = ["--until-idle", "3", "--max-seconds", "60"]
    assert main(["notify", "--sink", sink, "--config-file", str(config), *extra, *bounded]) == 0


@pytest.mark.timeout(240)
def test_one_cause_is_one_pagerduty_incident_one_alert_and_one_slack_thread(
    kafka_broker: KafkaBroker,
    env: Settings,
    receivers: tuple[str, Recorder, str, Recorder],
    tmp_path: Path,
) -> None:
    pd_url, pd, slack_url, slack = receivers
    events = _one_cause()
    assert len({e.incident_id for e in events}) == 1, "grouping should give one incident"
    actions = [e.action for e in events]
    assert actions[0] == IncidentAction.TRIGGER
    assert actions[-1] == IncidentAction.RESOLVE
    assert len(events) >= 3
    firing, resolve = events[:-1], events[-1]
    config = tmp_path / "notify.toml"
    config.write_text(
        "[retry]\nmax_attempts = 3\ninitial_backoff_s = 0.05\nmax_backoff_s = 0.2\n"
        "[http]\ntimeout_s = 5\nuse_env_proxy = false\n"
        f'[slack]\nchannel = "#incidents"\napi_url = "{slack_url}"\n',
        encoding="utf-8",
    )
    bootstrap, topic = kafka_broker.bootstrap, env.topics.alerts

    with alertmanager(tmp_path, resolve_timeout_s=300) as am_url:
        publish_incidents(bootstrap, topic, firing)
        _notify("alertmanager", config, "--url", am_url)
        alerts = [a for a in active_alerts(am_url) if a["labels"].get("model") == "support-chat"]
        print(f"{len(firing)} firing events -> {len(alerts)} Alertmanager alert(s)")
        assert len(alerts) == 1
        assert alerts[0]["labels"]["dedup_key"] == events[0].dedup_key
        _notify("slack", config)  # the firing events start the incident's thread

        publish_incidents(bootstrap, topic, [resolve])
        _notify("alertmanager", config, "--url", am_url)
        left = [a for a in active_alerts(am_url) if a["labels"].get("model") == "support-chat"]
        assert left == [], "the resolve ends the one alert"

    _notify("pagerduty", config, "--url", pd_url)
    pages = [json.loads(b) for b in pd.accepted]
    assert len(pages) == len(events)
    assert {p["dedup_key"] for p in pages} == {events[0].dedup_key}
    assert [p["event_action"] for p in pages].count("trigger") == len(firing)
    assert pages[-1]["event_action"] == "resolve"

    _notify("slack", config)  # a restarted notify: the resolve replies in that thread
    posts = [json.loads(b) for b in slack.accepted]
    assert len(posts) == len(events)
    assert "thread_ts" not in posts[0]
    assert {p.get("thread_ts") for p in posts[1:]} == {"1700000000.000001"}
    assert posts[-1]["reply_broadcast"] is True
    print(
        f"one cause: {len(events)} events ({', '.join(a.value for a in actions)}) -> "
        f"1 PagerDuty dedup_key, 1 Alertmanager alert, 1 Slack thread of {len(posts)} messages"
    )
