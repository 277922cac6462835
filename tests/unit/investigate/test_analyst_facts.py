"""Issue 18: the facts an analyst reads (statistic, post-mortem times, effect size,
notification window) match what the worker and the incident's events say."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from alerting.engine import IncidentEngine
from alerting.model import IncidentAction, IncidentEvent, IncidentStatus, effect_text, iso_utc
from alerting.playbooks import Impact
from detectors.adaptive_rate import AdaptiveDownvoteSpike
from detectors.base import SignalKind
from detectors.moderation import ToxicityRate
from streams.contract.decode import Coordinates
from streams.investigation.audit import AuditEntry, Investigation, StatisticSeries
from streams.investigation.chart import chart_model, plot_series
from streams.investigation.postmortem import impact_of, render_postmortem
from streams.investigation.report import format_investigation, not_reproduced_reason
from tests.unit.alerting.helpers import T0, detection, minutes, playbooks, policy, signal


def _toxic(rng: np.random.Generator) -> dict[str, float]:
    return {"toxicity": 0.99 if rng.random() < 0.05 else 0.0, "self_harm": 0.0}


def test_a_category_detector_can_alarm_while_another_category_still_learns() -> None:
    # self_harm never occurs, so its baseline is never learned: the detector as a whole
    # stays "learning" (the pipeline's baseline hold), but toxicity can alarm.
    det = ToxicityRate(categories=("toxicity", "self_harm"), warmup=100)
    rng = np.random.default_rng(7)
    for _ in range(2000):
        det.update(_toxic(rng))
    assert det.learning
    assert det.alarm_ready
    fresh = ToxicityRate(categories=("toxicity", "self_harm"), warmup=100)
    assert not fresh.alarm_ready
    shifts = AdaptiveDownvoteSpike(warmup=50)
    assert not shifts.alarm_ready


def _lifecycle() -> list[IncidentEvent]:
    """Trigger at T0, escalation at the 30-minute deadline, then quiet until resolved."""
    eng = IncidentEngine(policy(), playbooks())
    kind = SignalKind.PROMPT_INJECTION_RATE
    events = eng.observe(detection(sig=signal(kind, effect=2.79, p_value=1e-5)))
    for i, m in enumerate(range(5, 30, 5)):
        events += eng.observe(detection(T0 + minutes(m), sig=signal(kind, last_index=i)))
        events += eng.tick(T0 + minutes(m))
    events += eng.observe(detection(T0 + minutes(29), sig=signal(kind, effect=4.44, last_index=99)))
    for m in range(30, 240):
        events += eng.tick(T0 + minutes(m))
    return events


def test_postmortem_dates_escalation_and_resolve_as_emitted() -> None:
    events = _lifecycle()
    esc = next(e for e in events if e.status == IncidentStatus.ESCALATED)
    res = events[-1]
    assert res.action == IncidentAction.RESOLVE
    # The bug: "Resolved" showed last_seen, and escalation sat at the trigger's time.
    assert res.emitted_at != res.last_seen
    assert esc.emitted_at != esc.evidence.window_end
    text = render_postmortem(
        events, [], None, control_topic="control", generated_at=T0 + minutes(300)
    )
    assert f"| Resolved (UTC) | {iso_utc(res.emitted_at)} |" in text
    assert f"| Escalated (UTC) | {iso_utc(esc.emitted_at)} |" in text
    timeline = text.split("## Timeline (UTC)")[1].split("## Evidence")[0]
    esc_row = next(line for line in timeline.splitlines() if "escalated" in line)
    assert esc_row.startswith(f"| {iso_utc(esc.emitted_at)} |")
    resolve_row = next(line for line in timeline.splitlines() if "| resolve (" in line)
    assert resolve_row.startswith(f"| {iso_utc(res.emitted_at)} |")


def test_severity_reasons_and_evidence_give_the_same_effect_size() -> None:
    events = _lifecycle()
    for ev in events:
        reason = next((r for r in ev.severity_reasons if r.startswith("effect size")), None)
        if reason is not None:
            assert f"effect size {effect_text(ev.evidence.signal)} " in reason, (
                reason,
                ev.evidence.signal.effect_size,
            )
    last = events[-1]
    assert last.evidence.signal.effect_size == 4.44
    text = render_postmortem(
        events, [], None, control_topic="control", generated_at=T0 + minutes(300)
    )
    assert "+2.79" not in text
    assert text.count("+4.44") >= 3  # summary, evidence, severity reasons


def _entry(at: datetime, rid: str, user: str, flagged: bool) -> AuditEntry:
    return AuditEntry(
        time=at,
        request_id=rid,
        event_type="feedback",
        model="support-bot",
        version="v1",
        coords=Coordinates("feedback", 0, 0),
        flagged=flagged,
        user_hash=user,
    )


def test_notification_window_runs_from_the_first_affected_event_to_resolve() -> None:
    eng = IncidentEngine(policy(), playbooks())
    events = eng.observe(detection())  # downvote_rate; window_start = T0 - 10 min
    for m in range(1, 120):
        events += eng.tick(T0 + minutes(m))
    res = events[-1]
    assert res.action == IncidentAction.RESOLVE
    inv = Investigation(events[-1], events, T0 - minutes(10), T0)
    first_bad = T0 - minutes(4)
    inv.evidence = [
        _entry(T0 - minutes(9), "r0", "u0", False),  # before the failure: not affected
        _entry(first_bad, "r1", "u1", True),
        _entry(T0 - minutes(2), "r2", "u1", True),
        _entry(T0 - minutes(1), "r3", "u2", True),
    ]
    impact = impact_of(events, inv)
    assert impact == Impact(first_bad, res.emitted_at, requests=3, users=2)
    pb = playbooks().for_type("downvote_rate")
    assert pb is not None
    _, body = pb.render_notification(res, impact)
    assert iso_utc(first_bad) in body
    assert iso_utc(res.first_seen) not in body  # the detection window began earlier
    assert "at least 3 requests from 2 users" in body
    text = render_postmortem(
        events, [], pb, control_topic="control", generated_at=T0 + minutes(300), impact=impact
    )
    assert (
        "- Affected: at least 3 requests from 2 users flagged in the evidence, from "
        f"{iso_utc(first_bad)}" in text
    )
    assert "at least 3 requests from 2 users" in text


def _series(n: int, days: float, *, fired: bool) -> StatisticSeries:
    s = StatisticSeries(detector="ToxicityRate")
    for i in range(n):
        s.times.append(T0 + timedelta(days=days * i / n))
        ready = i >= n // 4
        r = (0.2 + 0.6 * i / n) if ready else float("nan")
        s.statistic.append(r if ready else 0.0)
        s.threshold.append(1.0)
        s.ratio.append(r)
        if ready and s.ready_index is None:
            s.ready_index = i
    if fired:
        s.ratio[-1] = 1.3
        s.alarms.append(n - 1)
        s.trigger_index = n - 1
    s.recorded_trigger = s.times[-1]
    return s


def test_unreproduced_alarm_says_why_and_whether_a_longer_lookback_helps() -> None:
    events = IncidentEngine(policy(), playbooks()).observe(detection())
    inv = Investigation(events[-1], events, T0 - timedelta(hours=6), T0)
    inv.series = _series(400, 0.2, fired=False)
    inv.from_beginning = True
    why = not_reproduced_reason(inv)
    assert "peaked at 0.80 of the threshold" in why
    assert "a longer --lookback reads the same records" in why
    assert "try a longer --lookback" not in why
    inv.from_beginning = False
    inv.lookback = timedelta(hours=24)
    assert "try a longer --lookback" in not_reproduced_reason(inv)
    assert "why: " in format_investigation(inv)


def test_plot_spans_days_with_the_open_interval_and_lifecycle_marks(tmp_path: Path) -> None:
    events = _lifecycle()
    series = _series(600, 3.0, fired=True)
    chart = chart_model(series, "title", events)
    assert chart.open_interval is not None
    assert chart.open_interval.end == events[-1].emitted_at
    assert [what for _, what in chart.marks] == ["escalated", "resolved"]
    png = plot_series(series, tmp_path / "s.png", "inc-x: toxicity_rate on support-bot", events)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 450)


def test_affected_window_skips_baseline_flags_before_the_change() -> None:
    eng = IncidentEngine(policy(), playbooks())
    events = eng.observe(detection())  # baseline downvote rate 0.05
    inv = Investigation(events[-1], events, T0 - minutes(60), T0)
    quiet = [_entry(T0 - minutes(60 - i), f"q{i}", f"u{i}", i == 3) for i in range(40)]
    spike = [_entry(T0 - minutes(19 - i), f"s{i}", "u-s", i % 2 == 0) for i in range(10)]
    inv.evidence = quiet + spike
    impact = impact_of(events, inv)
    assert impact is not None
    assert impact.first_affected == spike[0].time  # not the baseline downvote q3
    assert (impact.requests, impact.users) == (5, 1)
