from __future__ import annotations

from pathlib import Path

import pytest

from alerting.engine import IncidentEngine
from alerting.model import BlastRadius, Severity
from alerting.playbooks import (
    DisableFeature,
    Rollback,
    load_playbook,
    load_playbooks,
    resolve_action,
)
from alerting.policy import (
    AlertingPolicy,
    ConfigError,
    SeverityPolicy,
    load_policy,
    score_severity,
)
from detectors.base import SignalKind

from .helpers import PLAYBOOK_DIR, REPO, detection, policy, signal

EXPECTED_PLAYBOOKS = {kind.value for kind in SignalKind} | {"bad_deploy"}


def test_every_shipped_playbook_loads_and_every_kind_has_one() -> None:
    pbs = load_playbooks(PLAYBOOK_DIR)
    assert set(pbs.names()) == EXPECTED_PLAYBOOKS
    for name in pbs.names():
        pb = pbs.get(name)
        assert pb is not None
        assert pb.owners
        assert pb.runbook
        assert pb.deadline_minutes > 0


def test_every_shipped_playbook_renders_its_notification() -> None:
    pbs = load_playbooks(PLAYBOOK_DIR)
    eng = IncidentEngine(policy(), pbs)
    for kind in SignalKind:
        feature = "self_harm" if kind == SignalKind.CRITICAL_EVENT else None
        [ev] = eng.observe(
            detection(segment={"tenant": kind.value}, sig=signal(kind, feature=feature))
        )
        assert ev.playbook is not None
        pb = pbs.get(ev.playbook.name)
        assert pb is not None
        subject, body = pb.render_notification(ev)
        assert "$" not in subject + body
        assert ev.incident_id in body or ev.labels.model in subject + body


def test_shipped_policy_file_loads_and_equals_the_defaults() -> None:
    loaded = load_policy(REPO / "config" / "alerting.toml")
    assert loaded.severity == SeverityPolicy()
    assert loaded.lifecycle == AlertingPolicy().lifecycle
    assert loaded.warmup == AlertingPolicy().warmup


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text, encoding="utf-8")
    return p


MINIMAL = """
name = "downvote_rate"
title = "t"
owners = ["o"]
deadline_minutes = 10
runbook = ["step"]
[notification]
subject = "s $model"
body = "b $incident_id"
"""


def test_unknown_playbook_keys_are_named(tmp_path: Path) -> None:
    p = _write(tmp_path, "downvote_rate", MINIMAL + "\n[detection]\nhysterisis_minutes = 3\n")
    with pytest.raises(ConfigError, match=r"detection\.hysterisis_minutes: unknown key"):
        load_playbook(p)
    p = _write(tmp_path, "downvote_rate", "colour = 1\n" + MINIMAL)
    with pytest.raises(ConfigError, match="colour: unknown key"):
        load_playbook(p)


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("downvote_rate", MINIMAL.replace("$incident_id", "$ticket"), "unknown placeholder"),
        ("downvote_rate", MINIMAL + '\n[[containment]]\naction = "reboot"\n', "containment"),
        (
            "downvote_rate",
            MINIMAL
            + '\n[[containment]]\naction = "enable_filter"\nfilter = "keyword"\nname = "x"\n',
            "keywords",
        ),
        ("other_name", MINIMAL, "must match the file name"),
    ],
    ids=["placeholder", "action", "filter-without-keywords", "name"],
)
def test_bad_placeholders_actions_and_names_are_rejected(
    tmp_path: Path, name: str, text: str, error: str
) -> None:
    with pytest.raises(ConfigError, match=error):
        load_playbook(_write(tmp_path, name, text))


def test_action_templates_resolve_or_name_the_missing_field() -> None:
    act = Rollback(action="rollback", to_version="$previous_version")
    assert resolve_action(act, {"previous_version": "v1"}) == Rollback(
        action="rollback", to_version="v1"
    )
    with pytest.raises(KeyError, match="previous_version"):
        resolve_action(act, {"model": "m"})
    feat = DisableFeature(action="disable_feature", feature="$segment_feature")
    assert resolve_action(feat, {"segment_feature": "search"}).model_dump()["feature"] == "search"


def test_unknown_policy_keys_and_naive_silences_are_rejected(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text("[lifecycle]\nhysteresis = 5\n")
    with pytest.raises(ConfigError, match=r"lifecycle\.hysteresis: unknown key"):
        load_policy(p)
    p.write_text(
        '[[silences]]\nid = "m"\nmodel = "x"\n'
        "starts_at = 2025-01-01T02:00:00\nends_at = 2025-01-01T04:00:00\n"
    )
    with pytest.raises(ConfigError, match="timezone-aware"):
        load_policy(p)
    p.write_text(
        '[[silences]]\nid = "m"\nmodel = "x"\n'
        "starts_at = 2025-01-01T02:00:00Z\nends_at = 2025-01-01T04:00:00Z\n"
    )
    assert load_policy(p).silences[0].ends_at.hour == 4


def test_severity_points_reasons_and_pagerduty_mapping() -> None:
    pol = SeverityPolicy()
    sev, reasons = score_severity(pol, signal(effect=0.1, statistic=5.1), None)
    assert sev == Severity.SEV4
    assert reasons == ("0 points -> SEV4",)
    sev, reasons = score_severity(
        pol,
        signal(effect=1.2, p_value=1e-7),
        BlastRadius(traffic_share=0.6, distinct_users=50),
    )
    assert sev == Severity.SEV1  # 3 + 2 + 3 = 8 points
    assert reasons[0].startswith("effect size +1.20 (|effect| >= 1,")
    assert "p-value" in reasons[1]
    assert "traffic share 60.0%" in reasons[2]
    sev, reasons = score_severity(
        pol, signal(effect=0.5, statistic=16, threshold=5), BlastRadius(distinct_users=1500)
    )
    assert sev == Severity.SEV2  # 2 + 2 (ratio 3.2) + 2 (users)
    assert any("3.2x its threshold" in r for r in reasons)
    assert [s.pagerduty for s in Severity] == ["critical", "error", "warning", "info"]


def test_severity_policy_rejects_unordered_steps() -> None:
    with pytest.raises(ValueError, match="ascending"):
        SeverityPolicy.model_validate(
            {"effect_size": [{"at_least": 1, "points": 1}, {"at_least": 0.5, "points": 2}]}
        )
    with pytest.raises(ValueError, match="sev1_points"):
        SeverityPolicy(sev1_points=3, sev2_points=5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"# caf\xe9\n", r"not UTF-8 text \(byte 5: 0xe9\)"),
        (b"x = [", "not valid TOML"),
        (None, "cannot be read: Is a directory"),
    ],
)
def test_every_configuration_file_that_cannot_be_read_is_named(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    """Settings, policies, playbooks and notify files are read by one rule: an unreadable
    file is a one-line error with its path, whatever the reason."""
    from streams.cli.notify_config import load_notify_file
    from streams.settings import load_settings

    path = tmp_path / "bad.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    loaders = [
        load_policy,
        load_playbook,
        lambda p: load_settings(p, env={}),
        lambda p: load_notify_file(p, {}),
    ]
    for load in loaders:
        with pytest.raises(ConfigError, match=f"{path}: {message}"):
            load(path)
