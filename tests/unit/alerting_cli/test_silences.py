"""Silence records: durations, folding the compacted topic, syncing engines."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from alerting.clock import parse_duration
from alerting.engine import IncidentEngine
from alerting.model import IncidentAction
from alerting.policy import AlertingPolicy, Silence
from alerting.silences import (
    SilenceRecord,
    active_silences,
    fold_silence_records,
    fold_silences,
    new_silence,
    silences_topic,
    sync_engine_silences,
)
from tests.unit.alerting.helpers import T0, detection, minutes, playbooks, policy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("30s", timedelta(seconds=30)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(minutes=90)),
        (" 2h ", timedelta(hours=2)),
        ("1d2h", timedelta(days=1, hours=2)),  # one grammar for every command
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "h", "2 hours", "-1h", "0m", "2H", "1y", "2h30"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def _rec(model: str = "support-bot", hours: float = 2, **kw: Any) -> SilenceRecord:
    return new_silence(
        model=model,
        duration=timedelta(hours=hours),
        now=T0,
        comment="maintenance",
        created_by="sre",
        **kw,
    )


def _kv(rec: SilenceRecord) -> tuple[bytes, bytes]:
    return rec.key(), rec.to_json_bytes()


def test_topic_name_is_derived_from_control_topic() -> None:
    assert silences_topic("sentinel.control") == "sentinel.control.silences"


def test_new_silence_ids_are_stable_and_scoped() -> None:
    a = _rec()
    assert a == _rec()
    assert a.id.startswith("sil-")
    assert a.id != _rec(version="v2").id
    assert a.silence.ends_at - a.silence.starts_at == timedelta(hours=2)
    assert a.silence.starts_at.tzinfo is not None


def test_a_silence_that_would_already_be_over_is_refused() -> None:
    with pytest.raises(ValueError, match="already past: nothing would be silenced"):
        _rec(hours=1, starts_at=T0 - timedelta(hours=2))
    assert _rec(hours=3, starts_at=T0 - timedelta(hours=2)).silence.ends_at > T0


def test_fold_keeps_latest_per_id_and_applies_expiry_and_tombstones() -> None:
    a, b, c = _rec(), _rec("faq-bot"), _rec(hours=1, incident_type="toxicity_rate")
    records = [_kv(a), _kv(b), _kv(c), (b"junk", b"{"), _kv(a.expire(T0 + minutes(5)))]
    records.append((c.key(), None))  # tombstone deletes
    state = fold_silence_records(records)
    assert set(state) == {a.id, b.id}
    assert state[a.id].state(T0 + minutes(6)) == "expired"
    assert state[a.id].state(T0 + minutes(4)) == "active"
    # the early expiry is applied as the end, so a fold at a time before it still mutes
    [early_a, early_b] = sorted(active_silences(state, T0 + minutes(1)), key=lambda s: s.model)
    assert early_a.model == "faq-bot"
    assert early_b.ends_at == T0 + minutes(5)
    assert [s.id for s in fold_silences(records, T0 + minutes(10))] == [b.id]
    assert fold_silences(records, T0 + minutes(10), model="support-bot") == []
    assert fold_silences(records, T0 + timedelta(hours=3)) == []


def test_fold_is_pure() -> None:
    a = _rec()
    state = fold_silence_records([_kv(a)])
    again = fold_silence_records([(a.key(), None)], state)
    assert a.id in state
    assert again == {}


def test_pending_silence_is_handed_to_engines() -> None:
    later = _rec(starts_at=T0 + timedelta(hours=1))
    assert later.state(T0) == "pending"
    assert [s.id for s in fold_silences([_kv(later)], T0)] == [later.id]


def test_sync_mutes_then_expiry_lifts_the_mute_through_tick() -> None:
    eng = IncidentEngine(policy(), playbooks())
    rec = _rec()
    assert sync_engine_silences(eng, fold_silences([_kv(rec)], T0))
    assert not sync_engine_silences(eng, fold_silences([_kv(rec)], T0))  # no change
    assert eng.observe(detection(T0 + minutes(1))) == []  # muted
    expired = rec.expire(T0 + minutes(2))
    assert sync_engine_silences(eng, fold_silences([_kv(rec), _kv(expired)], T0 + minutes(2)))
    assert eng.silences() == []
    [ev] = eng.tick(T0 + minutes(3))
    assert ev.action == IncidentAction.TRIGGER
    assert ev.note == "mute lifted"


def test_sync_leaves_policy_silences_alone() -> None:
    base = policy()
    from_file = Silence(
        id="maint", model="support-bot", starts_at=T0, ends_at=T0 + timedelta(days=1)
    )
    pol = AlertingPolicy.model_validate({**base.model_dump(), "silences": [from_file]})
    eng = IncidentEngine(pol, playbooks())
    assert not sync_engine_silences(eng, [], keep_ids=[s.id for s in pol.silences])
    assert [s.id for s in eng.silences()] == ["maint"]
    assert sync_engine_silences(eng, [])  # without keep_ids it is a runtime silence too
    assert eng.silences() == []
