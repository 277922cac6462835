"""Scoring functions and the job list of ``bench/quality.py`` on hand-made cases (the bench
itself never runs)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerting.engine import IncidentEngine
from alerting.model import IncidentAction, Severity
from bench.quality import (
    GRACE,
    HARM_CATEGORIES,
    Injected,
    InjectionScore,
    ScenarioScore,
    Trigger,
    TypeRow,
    UntouchedTraffic,
    build_jobs,
    labels_consistent,
    lifecycle_pass,
    model_of,
    paging_raises,
    print_details,
    print_oracle,
    print_untouched,
    score_scenario,
    summarize,
    type_accepted,
)
from tests.unit.alerting.helpers import detection, playbooks, policy

T0 = datetime(2025, 1, 6, 8, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


TOX = Injected(
    id="inj-1",
    type="toxicity_spike",
    start=at(0),
    end=at(180),
    scope={"model": "support-chat", "tenant": "acme"},
    signals=("toxicity_rate",),
)
DEPLOY = Injected(
    id="inj-1",
    type="bad_deploy",
    start=at(0),
    end=at(180),
    scope={"model": "support-chat"},
    signals=("toxicity_rate", "downvote_rate", "confidence", "groundedness"),
    new_version="v13",
)


def trig(
    kind: str,
    minutes: float,
    *,
    model: str = "support-chat",
    version: str | None = None,
    segment: dict[str, str] | None = None,
    playbook: str | None = None,
) -> Trigger:
    return Trigger(kind, model, at(minutes), version, segment or {}, playbook)


def test_type_and_label_rules() -> None:
    assert type_accepted(TOX, trig("toxicity_rate:hate", 10))
    assert not type_accepted(TOX, trig("downvote_rate", 10))
    assert labels_consistent(TOX, trig("toxicity_rate:toxicity", 10))  # model-wide key
    assert labels_consistent(TOX, trig("toxicity_rate:toxicity", 10, segment={"locale": "de-DE"}))
    assert not labels_consistent(
        TOX, trig("toxicity_rate:toxicity", 10, segment={"tenant": "hooli"})
    )
    assert not labels_consistent(TOX, trig("toxicity_rate:toxicity", 10, model="summarizer"))
    # bad_deploy: anything on the new version, the bad_deploy playbook, or a listed signal.
    assert type_accepted(DEPLOY, trig("input_drift", 5, version="v13"))
    assert type_accepted(DEPLOY, trig("output_drift", 5, playbook="bad_deploy"))
    assert type_accepted(DEPLOY, trig("confidence_shift", 5))
    assert not type_accepted(DEPLOY, trig("input_drift", 5))
    assert not labels_consistent(DEPLOY, trig("downvote_rate", 5, version="v12"))
    # a guardrail block spike: its block rate, or the shift of the guardrail's own score
    guard = replace(TOX, type="guardrail_block_spike", signals=())
    assert type_accepted(guard, trig("guardrail_block_rate:guardrail/pii/pii_leak", 5))
    assert type_accepted(guard, trig("evaluation_score:guardrail/pii/pii_leak", 5))
    assert not type_accepted(guard, trig("evaluation_score:llm-judge/helpfulness", 5))


def test_recall_precision_delay_exact() -> None:
    triggers = [
        trig("toxicity_rate:toxicity", -30),  # before the injection: unmatched
        trig("toxicity_rate:toxicity", 20, segment={"tenant": "acme"}),  # first match
        trig("toxicity_rate:harassment", 40),  # model-wide, matches
        trig("downvote_rate", 50, segment={"tenant": "acme"}),  # other type: unmatched
        trig("toxicity_rate:toxicity", 60, segment={"tenant": "globex"}),  # wrong scope
        trig("toxicity_rate:toxicity", 180 + 29),  # within grace: matches
        trig("toxicity_rate:toxicity", 180 + 31),  # after the grace: unmatched
    ]
    # Outputs in scope: one a minute from -10 min; the detection at +20 min sees 21.
    scope_times = [at(m).timestamp() for m in range(-10, 200)]
    sc = score_scenario([TOX], triggers, GRACE, scope_times)
    (inj,) = sc.injections
    assert inj.detected
    assert inj.detected_at == at(20)
    assert inj.delay_minutes == pytest.approx(20.0)
    assert inj.delay_events == 21
    assert inj.first_level() == "segment"
    assert inj.matching_triggers == 3
    assert sc.matched == [False, True, True, False, False, True, False]
    assert sc.reasons == [
        "before injection",
        "",
        "",
        "other type in scope",
        "outside scope",
        "",
        "after window",
    ]

    missed = score_scenario([DEPLOY], [trig("downvote_rate", 10, version="v12")], GRACE)
    assert not missed.injections[0].detected
    assert missed.injections[0].delay_minutes is None

    clean = [trig("toxicity_rate:toxicity", 1), trig("output_drift", 2)]
    rows = summarize(
        [
            ("toxicity_spike", sc, triggers),
            ("bad_deploy", missed, [trig("downvote_rate", 10, version="v12")]),
        ],
        clean,
        clean_events=4_000_000,
    )
    tox, deploy, total = rows["toxicity_spike"], rows["bad_deploy"], rows["all"]
    assert (tox.injections, tox.detected, tox.recall) == (1, 1, 1.0)
    assert tox.precision == pytest.approx(3 / 7)
    assert tox.median_delay_min == pytest.approx(20.0)
    assert tox.median_delay_events == 21
    assert tox.pages_per_injection == 3.0
    assert tox.false_per_million == pytest.approx(0.25)  # 1 toxicity trigger in 4M events
    assert tox.recall_ok()
    assert tox.false_ok()
    assert deploy.recall == 0.0
    assert deploy.precision == 0.0
    assert not deploy.recall_ok()
    assert deploy.false_per_million == 0.0
    assert total.recall == 0.5
    assert total.precision == pytest.approx(3 / 8)
    assert total.false_per_million == pytest.approx(0.5)
    assert rows["downvote_spike"].recall is None
    assert rows["downvote_spike"].precision is None


def test_more_harm_spikes_per_type_than_categories_cycle_through_them() -> None:
    jobs = [j for j in build_jobs(True, 0, per_type=7) if j.kind == "harm_spike"]
    categories = [j.scenario["injections"][0]["category"] for j in jobs]
    assert categories == [*HARM_CATEGORIES, *HARM_CATEGORIES[:2]]
    assert len({j.name for j in jobs}) == 7  # each its own seed


def test_the_small_segment_family_injects_a_day_long_failure_at_a_tenant_of_under_one_percent() -> (
    None
):
    """``--only small``: one failure per type at the last of forty tenants, in rows of its
    own; the regular types' selection does not pick them up."""
    from bench.quality import (
        SMALL_SEGMENT,
        SMALL_SEGMENT_DURATION,
        SMALL_SEGMENT_TYPES,
        build_cause_jobs,
        build_small_segment_jobs,
        select_jobs,
    )
    from streams.devtools.scenario import Scenario, check_scenario
    from streams.devtools.sim_requests import zipf_weights

    small = build_small_segment_jobs(False, 0)
    assert [j.kind for j in small] == list(SMALL_SEGMENT_TYPES)
    assert [j.row for j in small] == [f"small:{t}" for t in SMALL_SEGMENT_TYPES]
    assert len(build_small_segment_jobs(True, 0)) == 3
    for job in small:
        sc = Scenario.model_validate(job.scenario)
        check_scenario(sc)  # the scope's tenant exists: the injection reaches traffic
        (inj,) = sc.injections
        tenant = inj.scope["tenant"]
        assert tenant == job.scope["tenant"] == sc.tenants[-1]
        assert zipf_weights(len(sc.tenants))[-1] < 0.01
        assert inj.duration == SMALL_SEGMENT_DURATION
    everything = [*build_jobs(True, 0), *build_cause_jobs(True, 0), *small]
    picked = select_jobs(everything, {SMALL_SEGMENT})
    assert {j.group for j in picked} == {"clean", SMALL_SEGMENT}
    assert not any(j.family for j in select_jobs(everything, {"toxicity_spike"}))


def _incident(kind: str, minutes: float, incident_id: str, note: str = "") -> Trigger:
    return Trigger(kind, "support-chat", at(minutes), incident_id=incident_id, note=note)


def test_an_injection_resolves_when_its_last_incident_does() -> None:
    """Resolve time: the last resolve of every matched incident, from the injection's end;
    an incident reopened after its resolve, or never resolved, leaves it open; a resolve
    while the injection lasts is counted."""
    triggers = [
        _incident("toxicity_rate:toxicity", 20, "a"),
        _incident("toxicity_rate:harassment", 40, "b"),
    ]
    resolves = [("a", at(200)), ("b", at(230)), ("other", at(300))]
    sc = score_scenario([TOX], triggers, GRACE, resolves=resolves)
    (inj,) = sc.injections
    assert inj.resolved_at == at(230)
    assert inj.resolve_minutes == pytest.approx(50.0)
    assert not inj.open_at_end
    assert inj.resolved_during == 0

    # "b" resolved at 100 min, while the spike lasted, then reopened and resolved again.
    flapping = [*triggers, _incident("toxicity_rate:harassment", 120, "b", "reopened (...)")]
    early = [("a", at(200)), ("b", at(100)), ("b", at(260))]
    sc = score_scenario([TOX], flapping, GRACE, resolves=early)
    (inj,) = sc.injections
    assert inj.resolve_minutes == pytest.approx(80.0)
    assert inj.resolved_during == 1

    # Reopened after its last resolve (outside the match window): still open.
    late = [*triggers, _incident("toxicity_rate:harassment", 400, "b", "reopened (...)")]
    sc = score_scenario([TOX], late, GRACE, resolves=resolves)
    (inj,) = sc.injections
    assert inj.resolved_at is None
    assert inj.open_at_end

    rows = summarize(
        [
            ("toxicity_spike", score_scenario([TOX], triggers, GRACE, resolves=resolves), triggers),
            ("toxicity_spike", sc, late),
        ],
        [],
        clean_events=1_000_000,
    )
    tox = rows["toxicity_spike"]
    assert tox.resolves_min == [pytest.approx(50.0)]
    assert tox.open_at_end == 1
    assert tox.median_resolve_min == pytest.approx(50.0)
    assert not lifecycle_pass(tox)  # one injection still open at the end
    assert tox.open_recoverable == 1  # no recovery oracle to say no test could end it

    # The same, where the recovery oracle could not read the change as over in time either
    # (a sparse key): counted as open, not against the goal.
    sc.injections[0].recoverable = False
    sparse = summarize([("toxicity_spike", sc, late)], [], clean_events=1)["toxicity_spike"]
    assert (sparse.open_at_end, sparse.open_recoverable) == (1, 0)
    assert lifecycle_pass(sparse)
    sc.injections[0].recoverable = True
    dense = summarize([("toxicity_spike", sc, late)], [], clean_events=1)["toxicity_spike"]
    assert (dense.open_at_end, dense.open_recoverable) == (1, 1)
    assert not lifecycle_pass(dense)

    def row_of(ends: list[tuple[str, datetime]]) -> TypeRow:
        sc = score_scenario([TOX], triggers, GRACE, resolves=ends)
        return summarize([("toxicity_spike", sc, triggers)], [], clean_events=1)["toxicity_spike"]

    assert lifecycle_pass(row_of(resolves))  # resolved 50 min after the end
    # 120 min after the end: over the 90-minute goal
    assert not lifecycle_pass(row_of([("a", at(200)), ("b", at(300))]))

    # Escalated to a page 30 min after the injection's end: a page about a cause over.
    sc = score_scenario([TOX], triggers, GRACE, resolves=resolves, raises=[("a", at(210))])
    assert sc.injections[0].raised_after_end == 1
    raised = summarize([("toxicity_spike", sc, triggers)], [], 1)["toxicity_spike"]
    assert raised.raised_after_end == 1
    assert not lifecycle_pass(raised)
    during = score_scenario([TOX], triggers, GRACE, resolves=resolves, raises=[("a", at(90))])
    assert during.injections[0].raised_after_end == 0  # while the cause lasted: not counted

    undetected = score_scenario([DEPLOY], [], GRACE, resolves=resolves).injections[0]
    assert undetected.resolved_at is None
    assert not undetected.open_at_end


def test_the_oracle_table_counts_recall_against_the_expected_and_the_realized_oracle(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three injections: caught by both oracles and detected; caught by the expected
    oracle only (the realised window was unlucky) and missed; missed by both. Recall over
    the expected oracle's catchable ones is 1/2, over the realised oracle's 1/1."""

    def scored(detected: float | None, oracle: dict[str, Any]) -> tuple[object, ...]:
        inj = InjectionScore(TOX, detected_at=at(detected) if detected is not None else None)
        sc = ScenarioScore([inj], [], [])
        return ("toxicity_spike", sc, [], {"oracle": oracle, "at_start": "ready"})

    base = {"arl0": 1e6, "window_events": 1000, "p0": 0.01, "p1": 0.03}
    rows = print_oracle(
        [
            scored(  # type: ignore[list-item]
                30.0,
                base
                | {"delay_events": 200.0, "delay_minutes": 20.0, "catchable": True}
                | {"realized_events": 150, "realized_minutes": 15.0},
            ),
            scored(  # type: ignore[list-item]
                None,
                base
                | {"delay_events": 900.0, "delay_minutes": 160.0, "catchable": True}
                | {"realized_events": None, "realized_minutes": None},
            ),
            scored(  # type: ignore[list-item]
                None,
                base
                | {"delay_events": 5000.0, "delay_minutes": None, "catchable": False}
                | {"realized_events": None, "realized_minutes": None},
            ),
            # too few observations before the change: listed, counted nowhere
            scored(None, {"arl0": 1e6, "window_events": 47, "delay_events": None}),  # type: ignore[list-item]
        ]
    )
    row = rows["toxicity_spike"]
    assert (row["catchable"], row["detected"], row["recall"]) == (2, 1, 0.5)
    assert (row["realized_catchable"], row["realized_detected"], row["realized_recall"]) == (
        1,
        1,
        1.0,
    )
    assert row["ratios"] == [pytest.approx(1.5)]
    assert row["realized_ratios"] == [pytest.approx(2.0)]
    assert rows["all"]["realized_recall"] == 1.0
    out = capsys.readouterr().out
    assert "realized-catchable" in out
    assert "(oracle misses)" in out
    assert "(no oracle: under 50 observations before the change, 47 in the window)" in out


def test_the_per_injection_table_prints_the_start_in_hours_after_the_scenario_began(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An injection 26.5 h into a scenario prints as 26.5 h, not as the hour of its day."""
    late = replace(TOX, start=T0 + timedelta(hours=18.5), end=T0 + timedelta(hours=21.5))
    sc = ScenarioScore([InjectionScore(late, detected_at=None)], [], [])
    began = (T0 - timedelta(hours=8)).isoformat()
    print_details([("toxicity_spike", sc, [], {"scenario_start": began, "at_start": "ready"})])
    row = capsys.readouterr().out.splitlines()[3]
    assert row.split()[3] == "26.5h", row


def test_sample_runs_every_job_on_that_share_of_each_models_requests() -> None:
    """``--sample F``: each scenario's models are sampled at ``F``; out of (0, 1] refused."""
    from bench.quality import _settings, main, select_jobs

    jobs = select_jobs(build_jobs(True, 0), {"harm_spike"}, 0.25)
    assert {j.kind for j in jobs} == {"clean", "harm_spike"}
    assert {j.sample for j in jobs} == {0.25}
    assert [j.estimate for j in jobs] == sorted((j.estimate for j in jobs), reverse=True)
    assert _settings().detection.sample_fractions == {}
    assert _settings(1.0, ["a"]).detection.sample_fractions == {}
    assert _settings(0.25, ["a", "b"]).detection.sample_fractions == {"a": 0.25, "b": 0.25}
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit):
            main(["--sample", bad])


def test_jobs_run_in_a_pool_with_one_progress_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.quality import in_pool

    results = in_pool(abs, [-3, 1, -2], 2, lambda r: f"got {r}")
    assert sorted(results) == [1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(("[ 1/3] got ", "[ 2/3] got ", "[ 3/3] got ")) for line in lines)
    assert all(line.endswith(" s elapsed)") for line in lines)


def test_only_updates_that_raise_an_incident_to_a_page_count_as_raises() -> None:
    """An escalation (SEV3 -> SEV2) pages; a raise that stays below SEV2 (SEV4 -> SEV3),
    a trigger, and an update that keeps or lowers the severity do not."""
    [first] = IncidentEngine(policy(), playbooks()).observe(detection())

    def step(action: IncidentAction, severity: Severity, minutes: int, incident: str = "x"):  # type: ignore[no-untyped-def]
        return first.model_copy(
            update={
                "incident_id": incident,
                "action": action,
                "severity": severity,
                "emitted_at": at(minutes),
            }
        )

    events = [
        step(IncidentAction.TRIGGER, Severity.SEV3, 0),
        step(IncidentAction.UPDATE, Severity.SEV3, 10),  # the same severity
        step(IncidentAction.UPDATE, Severity.SEV2, 20),  # escalated: a page
        step(IncidentAction.UPDATE, Severity.SEV2, 30),
        step(IncidentAction.TRIGGER, Severity.SEV4, 40, "y"),
        step(IncidentAction.UPDATE, Severity.SEV3, 50, "y"),  # raised, but not to a page
        step(IncidentAction.UPDATE, Severity.SEV1, 60, "y"),  # a page
    ]
    raises = paging_raises(events)
    assert [incident for incident, _ in raises] == ["x", "y"]
    assert [datetime.fromisoformat(when) for _, when in raises] == [at(20), at(60)]


def test_triggers_on_the_models_no_injection_touched_count_as_false_incidents(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The injected scenarios' other models are clean traffic: their events and their
    triggers are counted (false incidents, the paging ones as false pages); the injected
    model's triggers, matched or not, are not."""
    line = '{"event_type":"output","gen_ai.request.model":"summarizer","model_version":"v3"}'
    assert model_of(line) == "summarizer"
    assert model_of('{"event_type":"feedback"}') is None
    untouched = UntouchedTraffic()
    guardrail = trig("evaluation_score:guardrail/pii/pii_leak", 30, model="summarizer")
    ticket = replace(guardrail, severity="SEV3")
    events = {"support-chat": 60_000, "summarizer": 30_000, "intent-classifier": 10_000, "": 5}
    untouched.add([TOX], events, [trig("toxicity_rate", 10), trig("downvote_rate", 400), guardrail])
    untouched.add([DEPLOY], events, [ticket])
    assert untouched.events == 2 * (30_000 + 10_000)  # lines naming no model left out
    assert untouched.triggers == [guardrail, ticket]
    assert untouched.pages == 1
    assert untouched.per_million == pytest.approx(1e6 * 2 / 80_000)
    print_untouched(untouched)
    out = capsys.readouterr().out
    assert "80,000 events, 2 false incidents (25.00 per 1M events; goal < 1)" in out
    assert "1 of them pages" in out
    assert "evaluation_score:guardrail/pii/pii_leak on summarizer SEV2 x1" in out
    assert "evaluation_score:guardrail/pii/pii_leak on summarizer SEV3 x1" in out
