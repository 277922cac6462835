from __future__ import annotations

import json
from datetime import datetime

import pytest
from pydantic import ValidationError

from alerting.engine import IncidentEngine
from alerting.incident import MAX_RECURRENCES
from alerting.model import IncidentAction, IncidentStatus, Severity
from alerting.policy import Silence
from detectors.base import SignalKind

from .helpers import T0, detection, minutes, playbooks, policy, signal


def engine(**lifecycle: float) -> IncidentEngine:
    return IncidentEngine(policy(**lifecycle), playbooks())


def test_first_detection_triggers_with_evidence_playbook_and_reasons() -> None:
    eng = engine()
    [ev] = eng.observe(detection())
    assert ev.action == IncidentAction.TRIGGER
    assert ev.status == IncidentStatus.FIRING
    assert ev.sequence == 1
    assert ev.incident_type == "downvote_rate"
    assert ev.playbook is not None
    assert ev.playbook.name == "downvote_rate"
    assert ev.playbook.path.endswith("config/playbooks/downvote_rate.toml")
    assert ev.evidence.ranges[0].topic == "feedback"
    assert ev.evidence.sample_request_ids == ("req-1", "req-2")
    assert ev.evidence.signal.n_observations == 400
    assert any("points ->" in r for r in ev.severity_reasons)
    assert ev.first_seen == T0 - minutes(10)
    assert ev.last_seen == T0
    assert ev.dedup_key.startswith("sentinel-")


def test_same_detection_twice_is_not_a_second_event() -> None:
    eng = engine()
    d = detection()
    assert len(eng.observe(d)) == 1
    assert eng.observe(d) == []
    assert eng.observe(d.model_copy()) == []


def test_reprocessing_from_older_state_reemits_identical_event_ids() -> None:
    eng = engine()
    saved = json.loads(json.dumps(eng.get_state()))
    first = eng.observe(detection())
    second = eng.observe(detection(T0 + minutes(1), sig=signal(effect=1.5, p_value=1e-9)))
    # crash before the state was written back: restore the old state, reprocess the input
    eng2 = engine()
    eng2.set_state(saved)
    again = eng2.observe(detection()) + eng2.observe(
        detection(T0 + minutes(1), sig=signal(effect=1.5, p_value=1e-9))
    )
    assert [e.event_id for e in again] == [e.event_id for e in first + second]
    assert len({e.event_id for e in first + second}) == 2


def test_dedup_key_depends_on_labels_and_type_only() -> None:
    a = detection(segment={"tenant": "a", "locale": "de"})
    b = detection(T0 + minutes(5), segment={"locale": "de", "tenant": "a"}, sig=signal(effect=2))
    c = detection(segment={"tenant": "b"})
    d = detection(segment={"tenant": "a", "locale": "de"}, sig=signal(SignalKind.INPUT_DRIFT))
    assert a.dedup_key == b.dedup_key
    assert len({a.dedup_key, c.dedup_key, d.dedup_key}) == 3


def test_category_is_part_of_identity_and_ranks_higher() -> None:
    eng = engine()
    [harm] = eng.observe(
        detection(sig=signal(SignalKind.CRITICAL_EVENT, feature="self_harm", effect=0.1))
    )
    [tox] = eng.observe(
        detection(sig=signal(SignalKind.TOXICITY_RATE, feature="harassment", effect=0.1))
    )
    assert harm.incident_type == "critical_event:self_harm"
    assert harm.severity == Severity.SEV1
    assert "category self_harm ranks at least SEV1" in harm.severity_reasons
    assert tox.incident_type == "toxicity_rate:harassment"
    assert tox.severity == Severity.SEV3  # the toxicity playbook's floor
    assert harm.playbook is not None
    assert harm.playbook.name == "critical_event"


def test_rescored_worse_detection_escalates_and_minor_ones_are_rate_limited() -> None:
    eng = engine(update_interval_minutes=60)
    [t] = eng.observe(detection())
    assert t.severity == Severity.SEV4
    assert eng.observe(detection(T0 + minutes(2), sig=signal(last_index=1100))) == []
    [u] = eng.observe(
        detection(
            T0 + minutes(3),
            sig=signal(effect=1.2, p_value=1e-7, last_index=1200),
        )
    )
    assert u.action == IncidentAction.UPDATE
    assert u.severity.rank < t.severity.rank
    assert u.note.startswith("re-scored: SEV4 -> ")
    # a later, milder detection does not de-escalate; after the interval it is re-sent
    [r] = eng.observe(detection(T0 + minutes(70), sig=signal(last_index=1300)))
    assert r.action == IncidentAction.UPDATE
    assert r.severity == u.severity
    assert [t.sequence, u.sequence, r.sequence] == [1, 2, 3]


def test_resolves_only_after_quiet_hysteresis() -> None:
    eng = engine(hysteresis_minutes=15)
    eng.observe(detection())
    eng.observe(detection(T0 + minutes(10), sig=signal(last_index=1500)))
    # the downvote playbook overrides hysteresis to 30 minutes
    assert eng.tick(T0 + minutes(39)) == []
    [res] = eng.tick(T0 + minutes(40))
    assert res.action == IncidentAction.RESOLVE
    assert res.status == IncidentStatus.RESOLVED
    assert "quiet" in res.note
    assert eng.tick(T0 + minutes(41)) == []
    assert eng.incidents() == []


def test_flapping_reopens_same_incident_and_doubles_quiet_period() -> None:
    eng = engine()
    [t1] = eng.observe(detection())
    [r1] = eng.tick(T0 + minutes(30))
    [t2] = eng.observe(detection(T0 + minutes(35), sig=signal(last_index=2000)))
    assert t2.action == IncidentAction.TRIGGER
    assert t2.incident_id == t1.incident_id
    assert t2.flap_count == 1
    assert t2.sequence == r1.sequence + 1
    assert eng.tick(T0 + minutes(35 + 59)) == []  # 30 min x 2
    [r2] = eng.tick(T0 + minutes(35 + 60))
    assert r2.action == IncidentAction.RESOLVE
    # long after resolving, a new detection is a new incident
    eng.tick(T0 + minutes(400))
    [t3] = eng.observe(detection(T0 + minutes(400), sig=signal(last_index=9000)))
    assert t3.incident_id != t1.incident_id
    assert t3.flap_count == 0
    assert t3.sequence == 1


def test_escalates_when_not_recovered_by_playbook_deadline() -> None:
    eng = engine()
    [t] = eng.observe(detection(sig=signal(SignalKind.PROMPT_INJECTION_RATE)))
    assert t.severity == Severity.SEV2  # category floor
    # keep the detector firing so it does not resolve; deadline is 30 min
    for i, m in enumerate(range(5, 30, 5)):
        eng.observe(
            detection(T0 + minutes(m), sig=signal(SignalKind.PROMPT_INJECTION_RATE, last_index=i))
        )
        assert eng.tick(T0 + minutes(m)) == []
    eng.observe(
        detection(T0 + minutes(29), sig=signal(SignalKind.PROMPT_INJECTION_RATE, last_index=99))
    )
    [esc] = eng.tick(T0 + minutes(30))
    assert esc.action == IncidentAction.UPDATE
    assert esc.status == IncidentStatus.ESCALATED
    assert esc.severity == Severity.SEV1
    assert "deadline" in esc.severity_reasons[-1]
    assert f"sentinel relearn add --incident {t.incident_id}" in esc.note
    assert eng.tick(T0 + minutes(31)) == []  # escalates once


def test_model_wide_incident_inhibits_segment_duplicates_until_it_resolves() -> None:
    eng = engine()
    [wide] = eng.observe(detection())
    assert eng.observe(detection(segment={"tenant": "acme"})) == []
    assert eng.observe(detection(version="v2")) == []
    muted = [i for i in eng.incidents() if i.muted_by]
    assert len(muted) == 2
    assert all(wide.incident_id in (i.muted_by or "") for i in muted)
    # a different incident type is not inhibited
    assert (
        len(eng.observe(detection(segment={"tenant": "acme"}, sig=signal(SignalKind.INPUT_DRIFT))))
        == 1
    )
    # the children keep firing; the model-wide one goes quiet and resolves
    eng.observe(detection(T0 + minutes(25), segment={"tenant": "acme"}, sig=signal(last_index=5)))
    events = eng.tick(T0 + minutes(30))
    assert [e.action for e in events] == [IncidentAction.RESOLVE, IncidentAction.TRIGGER]
    assert events[0].incident_id == wide.incident_id
    assert events[1].labels.segment == {"tenant": "acme"}
    assert events[1].note == "mute lifted"


def test_silence_from_config_and_runtime_with_expiry() -> None:
    base = policy()
    silenced = base.model_copy(
        update={
            "silences": (
                Silence(
                    id="maint",
                    model="support-bot",
                    starts_at=T0 - minutes(5),
                    ends_at=T0 + minutes(20),
                    comment="index rebuild",
                ),
            )
        }
    )
    eng = IncidentEngine(silenced, playbooks())
    assert eng.observe(detection()) == []
    assert "silenced by maint" in (eng.incidents()[0].muted_by or "")
    eng.observe(detection(T0 + minutes(15), sig=signal(last_index=3)))
    [t] = eng.tick(T0 + minutes(20))  # silence expired, detector still recent
    assert t.action == IncidentAction.TRIGGER
    assert eng.silences() == []
    # runtime silence, scoped by type prefix
    eng.add_silence(
        Silence(
            id="cli-1",
            model="support-bot",
            incident_type="toxicity_rate",
            starts_at=T0,
            ends_at=T0 + minutes(120),
            created_by="alice",
        )
    )
    tox = signal(SignalKind.TOXICITY_RATE, feature="hate")
    assert eng.observe(detection(T0 + minutes(21), sig=tox)) == []
    assert eng.remove_silence("cli-1")
    assert not eng.remove_silence("cli-1")
    [t2] = eng.tick(T0 + minutes(22))
    assert t2.incident_type == "toxicity_rate:hate"


def test_resolve_of_a_never_notified_incident_is_not_emitted() -> None:
    eng = engine()
    eng.add_silence(Silence(id="s", model="support-bot", starts_at=T0, ends_at=T0 + minutes(300)))
    assert eng.observe(detection()) == []
    assert eng.tick(T0 + minutes(31)) == []
    assert eng.incidents() == []


def test_warmup_holds_thin_evidence_but_bad_deploy_with_evidence_alarms() -> None:
    eng = engine()
    eng.record_deploy("support-bot", "v1", T0 - minutes(600))
    eng.record_deploy("support-bot", "v2", T0)
    thin = detection(T0 + minutes(5), version="v2", sig=signal(n=20))
    assert eng.observe(thin) == []
    assert eng.held_count == 1
    assert eng.incidents() == []
    strong = detection(T0 + minutes(6), version="v2", sig=signal(n=800, effect=0.8))
    [ev] = eng.observe(strong)
    assert ev.playbook is not None
    assert ev.playbook.name == "bad_deploy"
    assert ev.deploy is not None
    assert ev.deploy.previous_version == "v1"
    assert any("deployed 6 min ago" in r for r in ev.severity_reasons)
    assert ev.severity.rank <= 3  # bad_deploy floor
    # model-wide detections are not held (they rest on all versions' traffic)
    assert (
        len(eng.observe(detection(T0 + minutes(5), sig=signal(SignalKind.INPUT_DRIFT, n=50)))) == 1
    )
    # after warm-up, thin evidence counts again
    late = detection(T0 + minutes(31), version="v2", sig=signal(SignalKind.OUTPUT_DRIFT, n=50))
    assert len(eng.observe(late)) == 1


def test_replayed_detections_are_flagged() -> None:
    eng = IncidentEngine(policy(), playbooks(), replay=True)
    [ev] = eng.observe(detection())
    assert ev.replay
    [ev2] = engine().observe(detection(replay=True))
    assert ev2.replay


def test_state_round_trips_through_json() -> None:
    eng = engine()
    eng.record_deploy("support-bot", "v2", T0)
    eng.add_silence(Silence(id="s", model="other", starts_at=T0, ends_at=T0 + minutes(9)))
    eng.observe(detection(sig=signal(n=500)))
    eng.observe(detection(segment={"tenant": "x"}))
    state = json.loads(json.dumps(eng.get_state()))
    eng2 = engine()
    eng2.set_state(state)
    assert eng2.get_state() == eng.get_state()
    later = detection(T0 + minutes(50), sig=signal(effect=2.0, p_value=1e-8, last_index=7))
    assert eng2.observe(later) == eng.observe(later)
    assert eng2.tick(T0 + minutes(200)) == eng.tick(T0 + minutes(200))


def test_naive_datetimes_are_rejected() -> None:
    eng = engine()
    with pytest.raises(ValueError, match="timezone-aware"):
        eng.tick(datetime(2025, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValidationError, match="timezone-aware"):
        detection(datetime(2025, 1, 1))  # noqa: DTZ001


def test_a_scope_that_keeps_paging_counts_its_incidents_and_names_the_relearn() -> None:
    """Each new incident of one type and scope resolves, and the next one, hours later, is
    a new page (past the reopen window): from the second within the recurrence window its
    note counts them and names the operator re-learn, across a restart; the window's old
    incidents drop out of the count."""
    eng = engine()
    [t1] = eng.observe(detection())
    assert "recurring" not in t1.note
    assert eng.tick(T0 + minutes(30))[0].action == IncidentAction.RESOLVE
    eng.tick(T0 + minutes(200))  # forgotten: past the reopen window
    [t2] = eng.observe(detection(T0 + minutes(300), sig=signal(last_index=5000)))
    assert t2.action == IncidentAction.TRIGGER
    assert t2.incident_id != t1.incident_id
    assert "recurring: 2 incidents of this type and scope in 24 h" in t2.note
    assert f"sentinel relearn add --incident {t2.incident_id}" in t2.note
    # Restarted from its state, the engine keeps the count.
    again = engine()
    again.set_state(json.loads(json.dumps(eng.get_state())))
    again.tick(T0 + minutes(330))
    again.tick(T0 + minutes(500))
    [t3] = again.observe(detection(T0 + minutes(600), sig=signal(last_index=9000)))
    assert "recurring: 3 incidents" in t3.note
    # A day after the last one, the count starts afresh; another scope has its own.
    again.tick(T0 + minutes(630))
    again.tick(T0 + minutes(600 + 24 * 60))
    assert again.get_state()["recurrences"] == {}
    late = T0 + minutes(601 + 24 * 60)
    [t4] = again.observe(detection(late, sig=signal(last_index=20000)))
    [other] = again.observe(detection(late, model="other-bot"))
    assert "recurring" not in t4.note
    assert "recurring" not in other.note


def test_a_muted_recurrence_carries_its_count_when_the_mute_lifts() -> None:
    """A segment's second incident opens inhibited by a model-wide one: it counts, and the
    trigger sent when the inhibition lifts says so (the first page of it anyone sees)."""
    eng = engine()
    acme = {"tenant": "acme"}
    eng.observe(detection(segment=acme))
    eng.tick(T0 + minutes(30))
    eng.tick(T0 + minutes(200))
    eng.observe(detection(T0 + minutes(300), sig=signal(last_index=4000)))
    assert (
        eng.observe(detection(T0 + minutes(300), segment=acme, sig=signal(last_index=4001))) == []
    )
    eng.observe(detection(T0 + minutes(325), segment=acme, sig=signal(last_index=4100)))
    resolved, lifted = eng.tick(T0 + minutes(330))
    assert resolved.action == IncidentAction.RESOLVE
    assert lifted.action == IncidentAction.TRIGGER
    assert lifted.labels.segment == acme
    assert lifted.note.startswith("mute lifted; recurring: 2 incidents of this type and scope")
    assert f"sentinel relearn add --incident {lifted.incident_id}" in lifted.note


def test_a_repeat_first_paged_after_its_silence_ends_carries_its_count() -> None:
    """A silence ends and the next detection, before any tick, pages the repeat: that
    trigger, its first page, carries the count."""
    eng = engine()
    eng.observe(detection())
    eng.tick(T0 + minutes(30))
    eng.tick(T0 + minutes(200))
    end = T0 + minutes(310)
    eng.add_silence(Silence(id="s", model="support-bot", starts_at=T0, ends_at=end))
    assert eng.observe(detection(T0 + minutes(300), sig=signal(last_index=4000))) == []
    [t] = eng.observe(detection(T0 + minutes(315), sig=signal(last_index=4100)))
    assert t.action == IncidentAction.TRIGGER
    assert "recurring: 2 incidents of this type and scope in 24 h" in t.note


def test_an_incident_muted_past_the_window_keeps_the_count_of_its_opening() -> None:
    """Opening times stay while an incident of their key is tracked: a repeat silenced
    for longer than the recurrence window still says, when its mute lifts, that it was
    the second within a day of its opening."""
    eng = engine()
    eng.observe(detection())
    eng.tick(T0 + minutes(30))
    eng.tick(T0 + minutes(200))
    end = T0 + minutes(300 + 25 * 60 + 5)
    eng.add_silence(Silence(id="s", model="support-bot", starts_at=T0, ends_at=end))
    for i, m in enumerate(range(300, 300 + 25 * 60 + 1, 10)):
        assert eng.observe(detection(T0 + minutes(m), sig=signal(last_index=4000 + i))) == []
        assert eng.tick(T0 + minutes(m)) == []
    [t] = eng.tick(end)
    assert t.action == IncidentAction.TRIGGER
    assert t.note.startswith("mute lifted; recurring: 2 incidents of this type and scope")


def test_the_recurrence_count_is_exact_up_to_its_cap() -> None:
    eng = engine(reopen_window_minutes=0, recurrence_window_hours=100)
    notes = []
    for i in range(MAX_RECURRENCES + 2):
        at = T0 + minutes(32 * i)
        [t] = eng.observe(detection(at, sig=signal(last_index=1000 * i)))
        notes.append(t.note)
        assert eng.tick(at + minutes(30))[0].action == IncidentAction.RESOLVE
        eng.tick(at + minutes(31))
    assert f"recurring: {MAX_RECURRENCES} incidents" in notes[MAX_RECURRENCES - 1]
    assert f"recurring: {MAX_RECURRENCES}+ incidents" in notes[MAX_RECURRENCES]
    assert f"recurring: {MAX_RECURRENCES}+ incidents" in notes[MAX_RECURRENCES + 1]


def test_a_recurring_page_without_a_learned_baseline_names_no_relearn() -> None:
    eng = engine()
    sig = signal(SignalKind.CRITICAL_EVENT)
    eng.observe(detection(sig=sig))
    eng.tick(T0 + minutes(30))
    eng.tick(T0 + minutes(200))
    [t2] = eng.observe(
        detection(T0 + minutes(300), sig=signal(SignalKind.CRITICAL_EVENT, last_index=7))
    )
    assert "recurring: 2 incidents" in t2.note
    assert "relearn" not in t2.note
    off = engine(recurrence_window_hours=0)
    off.observe(detection())
    off.tick(T0 + minutes(30))
    off.tick(T0 + minutes(200))
    [t] = off.observe(detection(T0 + minutes(300), sig=signal(last_index=5000)))
    assert "recurring" not in t.note
    assert off.get_state()["recurrences"] == {}


def test_an_incident_that_flapped_a_thousand_times_keeps_its_engine_working() -> None:
    """The quiet period's growth is capped before the power is taken: 2.0 ** 1024 would
    overflow a float and stop the model's engine for good."""
    eng = engine()
    [t] = eng.observe(detection())
    rec = eng._incidents[t.dedup_key]
    rec.flap_count = 5000
    cap = eng.policy.lifecycle.max_hysteresis_minutes
    assert eng._hysteresis(rec) == minutes(cap)
    rec.flap_count = 1
    assert eng._hysteresis(rec) == minutes(60)  # the downvote playbook's 30 min, x 2
    assert eng.tick(T0 + minutes(5)) == []


def test_a_detection_out_of_event_time_order_keeps_the_newer_evidence() -> None:
    """A lagging partition's older detection is counted, but the incident's evidence and
    its related entry keep the newer offsets and statistics."""
    eng = engine(update_interval_minutes=0)
    eng.observe(detection(T0, sig=signal(effect=0.3, last_index=1000)))
    eng.observe(detection(T0 + minutes(20), sig=signal(effect=0.9, statistic=9.0, last_index=3000)))
    eng.observe(detection(T0 + minutes(10), sig=signal(effect=0.5, statistic=7.0, last_index=2000)))
    [rec] = eng.incidents()
    assert rec.evidence.window_end == T0 + minutes(20)
    assert rec.evidence.ranges[0].last_offset == 3000
    [related] = rec.related
    assert (related.at, related.statistic, related.count) == (T0 + minutes(20), 9.0, 3)


def test_a_reopened_incident_is_scored_afresh_not_from_its_last_escalation() -> None:
    """Kept, the severity escalated at one firing's deadline would be the next firing's
    start: a mild signal flapping three times paged at SEV1."""
    eng = engine()
    [first] = eng.observe(detection(T0, sig=signal(last_index=1000)))
    now, index = T0, 1000
    for _ in range(3):
        rec = eng.incidents()[0]
        while now < rec.deadline_at:  # firing past its deadline: escalated once
            now += minutes(5)
            index += 10
            eng.observe(detection(now, sig=signal(last_index=index)))
            eng.tick(now)
        assert eng.incidents()[0].severity.rank == first.severity.rank - 1
        while eng.incidents():  # quiet: resolves
            now += minutes(5)
            eng.tick(now)
        now += minutes(1)
        index += 10
        [again] = eng.observe(detection(now, sig=signal(last_index=index)))
        assert again.action == IncidentAction.TRIGGER
        assert again.severity == first.severity
        assert not any("deadline" in r for r in again.severity_reasons)


def test_a_late_detection_older_than_the_last_does_not_reopen_a_resolved_incident() -> None:
    eng = engine()
    eng.observe(detection(T0, sig=signal(last_index=1000)))
    eng.observe(detection(T0 + minutes(10), sig=signal(last_index=1500)))
    [resolved] = eng.tick(T0 + minutes(40))
    assert resolved.action == IncidentAction.RESOLVE
    assert eng.observe(detection(T0 + minutes(5), sig=signal(last_index=1200))) == []
    [rec] = eng.incidents(active_only=False)
    assert rec.status == IncidentStatus.RESOLVED
    assert rec.flap_count == 0
    # a newer detection still reopens it
    [again] = eng.observe(detection(T0 + minutes(45), sig=signal(last_index=2000)))
    assert again.flap_count == 1
    assert "quiet period now 60 min" in again.note


def test_the_policy_files_silences_hold_after_a_restart() -> None:
    """A maintenance window added to the policy file takes effect on restart, over the
    engine state stored before it."""
    old = engine()
    old.tick(T0)
    state = json.loads(json.dumps(old.get_state()))
    window = Silence(
        id="maint-1", model="support-bot", starts_at=T0, ends_at=T0 + minutes(120), comment="x"
    )
    base = policy()
    with_window = base.model_validate({**base.model_dump(), "silences": [window.model_dump()]})
    new = IncidentEngine(with_window, playbooks())
    new.set_state(state)
    assert [s.id for s in new.silences()] == ["maint-1"]
    assert new.observe(detection(T0 + minutes(10))) == []


def test_recurrences_opened_out_of_time_order_are_still_counted() -> None:
    def at(hours: float) -> datetime:
        return T0 + minutes(60 * hours)

    eng = engine()
    eng.observe(detection(at(10), sig=signal(last_index=1000)))  # A
    eng.tick(at(11))
    eng.tick(at(12.5))
    eng.observe(detection(at(2), sig=signal(last_index=500)))  # B, from a lagging partition
    eng.tick(at(13))
    eng.tick(at(14.5))
    eng.tick(at(27))  # B is 25 h old, A 17 h: A's opening is still in the window
    [c] = eng.observe(detection(at(28), sig=signal(last_index=3000)))
    assert "recurring: 2" in c.note


def test_a_critical_output_on_a_version_warming_up_is_not_held() -> None:
    """The warm-up holds detections against a young version's learned baselines; a
    critical output is judged alone, and pages on any version."""
    eng = engine()
    eng.record_deploy("support-bot", "v2", T0 - minutes(5), previous_version="v1")
    crit = signal(SignalKind.CRITICAL_EVENT, feature="self_harm", n=1, last_index=7)
    [page] = eng.observe(detection(T0, version="v2", sig=crit))
    assert page.action == IncidentAction.TRIGGER
    assert eng.held_count == 0
    # a rate on that version is still held
    assert eng.observe(detection(T0, version="v2", sig=signal(n=10))) == []
    assert eng.held_count == 1
