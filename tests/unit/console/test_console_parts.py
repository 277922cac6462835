"""The console's parts without a broker or a browser: logins, the operator-action overlay,
folding topic records, what the actions publish, pager links, chart and heat-map helpers.
The whole console is tested in Chromium in tests/integration/test_console_browser.py."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from alerting.engine import IncidentEngine
from alerting.model import BlastRadius, IncidentEvent
from alerting.operator import OperatorAction, new_action, operator_topic, overlay
from alerting.payloads import add_console_link, pagerduty_event, slack_message
from alerting.policy import ConfigError
from alerting.relearn import RelearnRecord, relearn_topic
from alerting.silences import SilenceRecord, new_silence, silences_topic
from alerting.sink_config import AlertmanagerSinkConfig, PagerDutySinkConfig, make_sink
from detectors.base import SignalKind
from detectors.coverage import GuardrailBlockRate
from streams.console.actions import ActionError, ConsoleActions
from streams.console.auth import Authenticator, hash_password, verify_password
from streams.console.state import ConsoleState, Sources
from streams.console.views import heat_class, lifecycle_chart, model_views, svg_chart
from streams.pipeline.detectorset import FACTORIES, DetectorSet
from streams.pipeline.state import stamp
from streams.runtime.consumers import handle_containment_event
from streams.settings import ConsoleSettings, load_settings, settings_env
from tests.unit.alerting.helpers import T0, detection, minutes, playbooks, policy, signal

OPS_HASH = hash_password("s3cret", iterations=1000)


def _settings(**extra: object) -> ConsoleSettings:
    users = [
        {"name": "ops", "role": "operator", "password_hash": OPS_HASH},
        {"name": "eve", "role": "viewer", "password_hash": hash_password("v", iterations=1000)},
    ]
    return ConsoleSettings.model_validate({"users": users, **extra})


def _lifecycle() -> list[IncidentEvent]:
    """trigger, then resolve (quiet period) of one critical incident."""
    eng = IncidentEngine(policy(), playbooks())
    [t] = eng.observe(detection(sig=signal(SignalKind.CRITICAL_EVENT, feature="self_harm")))
    [r] = eng.tick(T0 + minutes(120))
    return [t, r]


# -- logins ------------------------------------------------------------------------------


def test_password_hashes_verify_only_the_password() -> None:
    stored = hash_password("s3cret", iterations=1000)
    assert stored.startswith("pbkdf2_sha256$1000$")
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret ", stored)
    assert not verify_password("s3cret", "md5$1$00$00")
    assert not verify_password("s3cret", "garbage")
    assert hash_password("s3cret") != hash_password("s3cret")  # salted
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_sessions_are_signed_expire_and_carry_the_role() -> None:
    auth = Authenticator(_settings(session_hours=1), secret=b"k" * 32)
    assert auth.login("ops", "wrong") is None
    assert auth.login("nobody", "s3cret") is None
    session = auth.login("ops", "s3cret")
    assert session is not None
    assert session.can_act
    cookie = auth.cookie(session, now_s=1000)
    back = auth.from_cookie(cookie, now_s=1000 + 3599)
    assert back is not None
    assert back.user == "ops"
    assert auth.from_cookie(cookie, now_s=1000 + 3601) is None  # expired
    assert auth.from_cookie(cookie.replace("ops|", "eve|"), now_s=1000) is None  # tampered
    other = Authenticator(_settings(), secret=b"x" * 32)
    assert other.from_cookie(cookie, now_s=1000) is None  # another secret
    viewer = auth.login("eve", "v")
    assert viewer is not None
    assert not viewer.can_act


def test_csrf_tokens_belong_to_one_session() -> None:
    auth = Authenticator(_settings(), secret=b"k" * 32)
    a, b = auth.login("ops", "s3cret"), auth.login("ops", "s3cret")
    assert a is not None
    assert b is not None
    assert auth.check_csrf(a, auth.csrf_token(a))
    assert not auth.check_csrf(a, auth.csrf_token(b))
    assert not auth.check_csrf(a, None)
    assert not auth.check_csrf(a, "")


def test_basic_auth_header() -> None:
    auth = Authenticator(_settings(), secret=b"k" * 32)
    good = "Basic " + base64.b64encode(b"ops:s3cret").decode()
    session = auth.basic(good)
    assert session is not None
    assert session.user == "ops"
    assert auth.basic("Basic " + base64.b64encode(b"ops:nope").decode()) is None
    assert auth.basic("Basic !!!") is None
    assert auth.basic("Bearer x") is None


# -- settings ----------------------------------------------------------------------------


def test_console_settings_reject_bad_input_with_the_key() -> None:
    with pytest.raises(ConfigError, match=r"console\.bogus: unknown key"):
        load_settings(env={}, overrides={"console.bogus": 1})
    with pytest.raises(ConfigError, match="tls_certfile and tls_keyfile"):
        load_settings(env={}, overrides={"console.tls_certfile": "/x.pem"})
    with pytest.raises(ConfigError, match="public_url"):
        load_settings(env={}, overrides={"console.public_url": "ftp://x"})
    with pytest.raises(ConfigError, match="password_hash"):
        load_settings(
            env={}, overrides={"console.users": [{"name": "a", "password_hash": "plain"}]}
        )
    user = {"name": "a", "password_hash": OPS_HASH}
    with pytest.raises(ConfigError, match="given twice"):
        load_settings(env={}, overrides={"console.users": [user, user]})


def test_console_settings_survive_the_environment_round_trip() -> None:
    users = [{"name": "ops", "role": "operator", "password_hash": OPS_HASH}]
    s = load_settings(
        env={}, overrides={"console.users": users, "console.public_url": "https://c.example/"}
    )
    assert s.console.public_url == "https://c.example"
    again = load_settings(env=settings_env(s))
    assert again.console == s.console


# -- operator actions --------------------------------------------------------------------


def test_acknowledge_and_manual_resolve_follow_the_engine_steps() -> None:
    eng = IncidentEngine(policy(), playbooks())
    [t] = eng.observe(detection(sig=signal(SignalKind.TOXICITY_RATE, feature="hate")))
    ack = new_action("acknowledge", t, by="ops", reason="looking", at=T0)
    assert overlay([t], []).label == ""
    assert overlay([t], [ack]).label == "acknowledged"
    res = new_action("resolve", t, by="ops", reason="rolled back", at=T0 + minutes(1))
    assert overlay([t], [ack, res]).label == "resolved by hand"
    # The engine escalates (the detector still sees the excess): open again, still acked.
    [up] = eng.observe(
        detection(
            T0 + minutes(5),
            sig=signal(SignalKind.TOXICITY_RATE, feature="hate", effect=5.0, n=900),
            blast=BlastRadius(traffic_share=1.0),
        )
    )
    assert up.action == "update"
    assert overlay([t, up], [ack, res]).label == "acknowledged"
    [r] = eng.tick(T0 + minutes(180))
    assert r.action == "resolve"
    assert overlay([t, up, r], [ack, res]).label == ""
    with pytest.raises(ValueError, match="reason is required"):
        new_action("acknowledge", t, by="ops", reason="  ", at=T0)


# -- folding -----------------------------------------------------------------------------


def _sources() -> Sources:
    return Sources("a", "c", "c.silences", "c.operator", "app-detectors-changelog", "app-eng")


def test_state_folds_every_source_and_counts_bad_records() -> None:
    state = ConsoleState(_sources())
    t, r = _lifecycle()
    for e in (t, t, r):  # a duplicate after a crash is folded once
        state.apply("a", e.key(), e.to_json_bytes())
    assert [e.sequence for e in state.history(t.incident_id)] == [1, 2]
    ack = new_action("acknowledge", t, by="ops", reason="x", at=T0)
    state.apply("c.operator", ack.key(), ack.to_json_bytes())
    assert state.incident_actions(t.incident_id) == [ack]
    sil = new_silence(model="m", duration=timedelta(hours=1), now=T0, comment="c", created_by="u")
    state.apply("c.silences", sil.key(), sil.to_json_bytes())
    assert set(state.silence_records) == {sil.id}
    state.apply("c.silences", sil.key(), None)  # tombstone
    assert state.silence_records == {}
    _, snaps = handle_containment_event(t, state.containment, playbooks(), dry_run=False)
    state.apply("c", snaps[0].key(), snaps[0].to_json_bytes())
    assert state.measures(t)
    state.apply("app-detectors-changelog", b'"m|*|"', json.dumps({"d": {}}).encode())
    state.apply("app-detectors-changelog", b"m|v1|", json.dumps({"d": {}}).encode())
    assert set(state.detectors) == {"m|*|", "m|v1|"}
    state.apply("app-detectors-changelog", b"m|v1|", None)
    assert set(state.detectors) == {"m|*|"}
    state.apply("a", b"k", b"not json")
    assert state.invalid["a"] == 1
    assert state.counts_by_model() == {t.labels.model: (0, 1)}
    assert t.incident_id in state.changed_since(0)
    # Read your own writes: an action waits until the follower folded its record.
    with state.lock:
        state.note_folded("c.operator", 0, 7)
    assert state.wait_folded("c.operator", 0, 7, timeout_s=0.01)
    assert not state.wait_folded("c.operator", 0, 8, timeout_s=0.01)


# -- actions -----------------------------------------------------------------------------


class Sent:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        self.records.append((topic, key, value))


def _actions(events: list[IncidentEvent]) -> tuple[ConsoleActions, ConsoleState, Sent]:
    state = ConsoleState(Sources.of(load_settings(env={})))
    for e in events:
        state.apply(state.sources.alerts, e.key(), e.to_json_bytes())
    sent = Sent()
    return ConsoleActions(state, sent, playbooks(), lambda: T0 + minutes(1)), state, sent


def test_actions_publish_who_and_why_and_refuse_bad_input() -> None:
    t, _ = _lifecycle()
    actions, _, sent = _actions([t])
    control = load_settings(env={}).topics.control
    act = actions.acknowledge(t.incident_id, by="ops", reason="on it")
    topic, key, value = sent.records[-1]
    assert topic == operator_topic(control)
    assert key == t.dedup_key.encode()
    assert OperatorAction.model_validate_json(value) == act
    assert (act.by, act.reason, act.event_id) == ("ops", "on it", t.event_id)
    n = len(sent.records)
    with pytest.raises(ActionError, match="reason is required"):
        actions.resolve(t.incident_id, by="ops", reason=" ")
    with pytest.raises(ActionError, match="unknown incident"):
        actions.acknowledge("inc-nope", by="ops", reason="x")
    with pytest.raises(ActionError, match="invalid duration"):
        actions.silence_incident(t.incident_id, by="ops", reason="x", duration="2 hours")
    with pytest.raises(ActionError, match="at most 30 days"):
        actions.silence_incident(t.incident_id, by="ops", reason="x", duration="31d")
    assert len(sent.records) == n  # nothing published for refused input


def test_silence_and_containment_publish_what_the_cli_publishes() -> None:
    t, r = _lifecycle()
    actions, state, sent = _actions([t])
    rec = actions.silence_incident(t.incident_id, by="ops", reason="known", duration="2h")
    (s_topic, s_key, s_value), (o_topic, _, o_value) = sent.records[-2:]
    assert s_topic == silences_topic(state.sources.control)
    assert s_key == rec.id.encode()
    silence = SilenceRecord.model_validate_json(s_value).silence
    assert silence.matches(t.labels, t.incident_type)
    assert silence.ends_at - silence.starts_at == timedelta(hours=2)
    assert o_topic == state.sources.operator
    assert OperatorAction.model_validate_json(o_value).detail == rec.id
    state.apply(s_topic, s_key, s_value)
    expired = actions.expire_silence(rec.id, by="ops")
    assert expired.expired_at is not None
    state.apply(s_topic, expired.key(), expired.to_json_bytes())
    with pytest.raises(ActionError, match="already expired"):
        actions.expire_silence(rec.id, by="ops")
    act = actions.contain(t.incident_id, by="ops", reason="per playbook")
    c_topic, c_key, c_value = sent.records[-2]
    _, expected = handle_containment_event(t, state.containment, playbooks(), dry_run=False)
    assert (c_topic, c_key, c_value) == (
        state.sources.control,
        expected[0].key(),
        expected[0].to_json_bytes(),
    )
    assert "route_to_fallback" in act.detail
    state.apply(state.sources.alerts, r.key(), r.to_json_bytes())
    with pytest.raises(ActionError, match="resolved"):
        actions.contain(t.incident_id, by="ops", reason="late")


def test_relearn_publishes_the_incidents_scope_and_kind_and_refuses_a_critical_event() -> None:
    eng = IncidentEngine(policy(), playbooks())
    [t] = eng.observe(detection(sig=signal(SignalKind.CONFIDENCE_SHIFT)))
    actions, state, sent = _actions([t])
    rec = actions.relearn(t.incident_id, by="ops", reason="new prompt: expected")
    (r_topic, r_key, r_value), (o_topic, _, o_value) = sent.records[-2:]
    assert r_topic == relearn_topic(state.sources.control)
    assert r_key == rec.id.encode()
    assert RelearnRecord.model_validate_json(r_value) == rec
    assert (rec.scope, rec.signals, rec.incident_id) == (
        t.labels,
        (SignalKind.CONFIDENCE_SHIFT,),
        t.incident_id,
    )
    assert o_topic == state.sources.operator
    action = OperatorAction.model_validate_json(o_value)
    assert (action.action, action.detail, action.by) == ("relearn", rec.id, "ops")
    critical, _ = _lifecycle()
    actions, _, sent = _actions([critical])
    with pytest.raises(ActionError, match="no learned baseline"):
        actions.relearn(critical.incident_id, by="ops", reason="x")
    with pytest.raises(ActionError, match="reason is required"):
        actions.relearn(critical.incident_id, by="ops", reason=" ")
    assert sent.records == []


# -- pager links -------------------------------------------------------------------------


def test_pager_payloads_link_to_the_console_when_it_has_a_public_url() -> None:
    t, _ = _lifecycle()
    page = f"https://console.example/incidents/{t.incident_id}"
    pd = add_console_link(pagerduty_event(t, "rk"), t, "https://console.example/", "pagerduty")
    assert pd["links"][0] == {"href": page, "text": "Sentinel console"}
    slack = add_console_link(slack_message(t), t, "https://console.example", "slack")
    assert slack["blocks"][-1]["elements"][0]["url"] == page
    unchanged = pagerduty_event(t, "rk")
    assert add_console_link(pagerduty_event(t, "rk"), t, None, "pagerduty") == unchanged
    sink = make_sink(
        AlertmanagerSinkConfig(
            type="alertmanager", url="http://am", console_url="https://console.example"
        )
    )
    body = json.loads(sink.build(t, T0).body)
    assert body[0]["generatorURL"] == page
    pd_sink = make_sink(
        PagerDutySinkConfig(
            type="pagerduty", routing_key="rk", console_url="https://console.example"
        )
    )
    assert json.loads(pd_sink.build(t, T0).body)["links"][0]["href"] == page


# -- charts and heat map -----------------------------------------------------------------


def test_heat_classes_and_charts() -> None:
    assert [heat_class(x) for x in (None, 0.1, 0.3, 0.6, 0.9, 1.0, 7.0)] == [
        "heat-learning",
        "heat-0",
        "heat-1",
        "heat-2",
        "heat-3",
        "heat-4",
        "heat-4",
    ]
    assert "no data" in svg_chart({}, title="t", y_label="y")
    svg = lifecycle_chart(_lifecycle())
    assert svg.count("<svg") == 2
    assert "polyline" in svg
    assert "<script" not in svg
    hostile = svg_chart({"<b>": []}, title="<script>x</script>", y_label="y")
    assert "<script>" not in hostile


def test_the_heat_map_shows_a_watching_detector_and_what_a_learning_one_needs() -> None:
    """A harm detector whose toxicity test has its baseline is watching, though a rare
    category it saw once still learns (``learning`` stays true while any part learns: the
    map showed such keys as learning for good). A guardrail still in its warm-up says what
    it lacks."""
    settings = load_settings(env={}).detection
    ds = DetectorSet(settings, "model", 1e6)
    harm = FACTORIES["harm"].make(ds, ())
    for i in range(3_000):
        harm.update({"toxicity": i % 25 == 0, "self_harm": i == 2_999})
    guard = GuardrailBlockRate(warmup=300, arl0=1e5, metric="pii/leak")
    for i in range(120):
        guard.update(i % 40 == 0)
    ds.detectors = {"harm": harm, "guardrail:pii,leak": guard}
    assert harm.learning
    assert harm.alarm_ready
    [view] = model_views({"support-chat|*|": stamp("detectors", ds.to_json())}, {}, settings)
    [row] = view.rows
    assert row.ratios["harm"] is not None
    assert row.ratios["guardrail"] is None
    assert row.awaiting == {"guardrail": "120 of 300 observations, 3 of 20 flagged"}
    # Two guardrails at one key share the cell: it names the one it describes.
    other = GuardrailBlockRate(warmup=300, arl0=1e5, metric="jailbreak/block")
    ds.detectors["guardrail:jailbreak,block"] = other
    [view] = model_views({"support-chat|*|": stamp("detectors", ds.to_json())}, {}, settings)
    assert view.rows[0].awaiting == {
        "guardrail": "pii,leak: 120 of 300 observations, 3 of 20 flagged"
    }


def test_notify_takes_the_console_url_from_the_settings() -> None:
    from streams.cli.notify_config import NotifyFile, sink_config

    cfg = sink_config(
        "alertmanager",
        NotifyFile(),
        url="http://am.example/hook",
        environ={},
        source="test",
        console_url="https://console.example",
    )
    assert isinstance(cfg, AlertmanagerSinkConfig)
    assert cfg.console_url == "https://console.example"
    t, _ = _lifecycle()
    body = json.loads(make_sink(cfg).build(t, T0).body)
    assert body[0]["generatorURL"].startswith("https://console.example/incidents/")
