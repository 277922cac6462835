"""One cause, one incident: localization over label cuts, grouping, lifecycle by cause."""

from __future__ import annotations

import json

from alerting.cause import Reading, localize, same_cause
from alerting.engine import IncidentEngine
from alerting.model import (
    IncidentAction,
    IncidentStatus,
    Labels,
    Localization,
    Probe,
    Severity,
    iso_utc,
    key_id,
    labels_of_key,
)
from detectors.base import Excess, SignalKind

from .helpers import T0, detection, minutes, playbooks, policy, signal

M = "support-chat"


def ex(excess: float, surprise: float, alarmed: bool = False, n: int = 500) -> Excess:
    return Excess(
        n=n,
        baseline=0.02,
        observed=0.02 + excess / n,
        excess=excess,
        surprise=surprise,
        alarmed=alarmed,
    )


def lb(version: str | None = None, **segment: str) -> Labels:
    return Labels(model=M, version=version, segment=segment)


def tenant_failure() -> list[Reading]:
    """Tenant acme (44 % of traffic) carries the excess; it also shows in locale en-US (its
    largest locale) and model-wide."""
    return [
        Reading(lb(), ex(40, 20, alarmed=True, n=1000), 1.0),
        Reading(lb("v12"), ex(39, 19, n=1000), 1.0),
        Reading(lb(tenant="acme"), ex(38, 35, n=440), 0.44),
        Reading(lb(tenant="globex"), ex(2, 0.5, n=220), 0.22),
        Reading(lb(tenant="hooli"), ex(-1, 0, n=90), 0.09),
        Reading(lb(locale="en-US"), ex(20, 9, n=490), 0.49),
        Reading(lb(locale="de-DE"), ex(9, 4, n=210), 0.21),
        Reading(lb(locale="fr-FR"), ex(7, 3, n=130), 0.13),
    ]


def test_tenant_carrying_the_excess_is_named_not_its_locale_or_the_model() -> None:
    loc = localize(tenant_failure(), fired=lb())
    assert loc.scope == lb(tenant="acme")
    assert loc.dimension == "tenant"
    assert loc.explanatory_power > 0.9
    assert "acme" in loc.reason
    # the evidence lists the other cuts and how much each explains
    by = {c.labels.describe(): c for c in loc.cuts}
    assert by[lb(locale="en-US").describe()].explanatory_power < 0.6
    assert by[lb(tenant="globex").describe()].explanatory_power < 0.1


def test_excess_spread_in_proportion_to_traffic_is_model_wide() -> None:
    readings = [
        Reading(lb(), ex(100, 40, alarmed=True), 1.0),
        Reading(lb(tenant="acme"), ex(45, 15), 0.44),
        Reading(lb(tenant="globex"), ex(23, 8), 0.22),
        Reading(lb(tenant="initech"), ex(32, 10), 0.34),
        Reading(lb(locale="en-US"), ex(50, 18), 0.49),
        Reading(lb(locale="de-DE"), ex(50, 18), 0.51),
    ]
    loc = localize(readings, fired=lb(tenant="acme"))
    assert loc.scope == lb()
    assert loc.dimension == "model"


def test_large_cut_that_only_shifts_as_much_as_the_model_is_not_the_culprit() -> None:
    """A model-wide failure seen early: the largest locale's episode holds most of the
    locale excess (small cuts' episodes restart in the noise), but it shifts no more than
    the model does."""
    readings = [
        Reading(lb(), ex(100, 40, alarmed=True, n=1000), 1.0),
        Reading(lb(locale="en-US"), ex(45, 20, n=480), 0.48),
        Reading(lb(locale="de-DE"), ex(6, 2, n=60), 0.21),
        Reading(lb(locale="fr-FR"), ex(3, 1, n=30), 0.13),
    ]
    loc = localize(readings, fired=lb())
    assert loc.scope == lb()


def test_fresh_version_is_named_even_when_it_carries_all_the_traffic() -> None:
    readings = [
        Reading(lb(), ex(60, 30, alarmed=True), 1.0),
        Reading(lb("v12"), ex(0, 0), 0.05),
        Reading(lb("v13"), ex(60, 30), 0.95, fresh_version=True),
        Reading(lb(tenant="acme"), ex(26, 12), 0.44),
        Reading(lb(tenant="globex"), ex(34, 15), 0.56),
    ]
    assert localize(readings, fired=lb()).scope == lb("v13")
    # the same numbers without a deploy: a version with all the traffic is the model
    stale = [Reading(r.labels, r.excess, r.traffic_share) for r in readings]
    assert localize(stale, fired=lb()).scope == lb()


def test_a_rise_that_moves_the_old_version_as_much_is_not_the_fresh_versions() -> None:
    """A model-wide rise during a rollout: the fresh version carries 70 % of the traffic
    and so most of the excess, but the version it replaces rose as much. Before, a fresh
    version skipped the lift test and was named (the deploy's playbook: a rollback)."""
    readings = [
        Reading(lb(), ex(120, 60, alarmed=True, n=1000), 1.0),
        Reading(lb("v1"), ex(36, 18, alarmed=True, n=300), 0.3),
        Reading(lb("v2"), ex(84, 42, alarmed=True, n=700), 0.7, fresh_version=True),
    ]
    assert localize(readings, fired=lb("v2")).scope == lb()
    # the old version's rise a small part of the fresh one's: the deploy is named
    readings[1] = Reading(lb("v1"), ex(3, 1, n=300), 0.3)
    assert localize(readings, fired=lb("v2")).scope == lb("v2")


def test_without_a_culprit_or_model_alarm_the_key_that_fired_stays() -> None:
    readings = [
        Reading(lb(), ex(3, 1), 1.0),
        Reading(lb(tenant="hooli"), ex(3, 2), 0.09),
        Reading(lb(tenant="acme"), ex(3, 0.5), 0.44),
    ]
    assert localize(readings, fired=lb(tenant="hooli")).scope == lb(tenant="hooli")


def test_same_cause_rule() -> None:
    acme, globex = lb(tenant="acme"), lb(tenant="globex")
    tox, conf, down = "toxicity_rate", "confidence_shift", "downvote_rate"
    # other tenant: never
    assert not same_cause(acme, [tox], False, globex, globex, tox)
    # same family through an overlapping cut or model-wide key
    assert same_cause(acme, [tox], False, acme, lb(locale="en-US"), tox)
    assert same_cause(acme, [tox], False, lb(), lb(), tox)
    # another family on an overlapping cut: a different failure
    assert not same_cause(acme, [tox], False, lb(locale="de-DE"), lb(locale="de-DE"), conf)
    # downvotes react to any failure in scope
    assert same_cause(acme, [tox], False, acme, lb(), down)
    # a bad deploy explains every signal of its version
    assert same_cause(lb("v13"), [tox], True, lb("v13"), lb(), conf)
    assert not same_cause(lb("v13"), [tox], True, lb("v12"), lb("v12"), conf)


def test_one_evaluation_metric_read_two_ways_is_one_cause() -> None:
    """A guardrail blocks on its score: its block rate and its score shift are one change,
    in either order; another metric of the same evaluator, or another family, is not."""
    block = "guardrail_block_rate:guardrail/pii/pii_leak"
    score = "evaluation_score:guardrail/pii/pii_leak"
    assert same_cause(lb(), [block], False, lb(), lb(), score)
    assert same_cause(lb(), [score], False, lb(), lb(), block)
    fail = "evaluation_fail_rate:llm-judge/helpfulness"
    assert same_cause(lb(), ["evaluation_score:llm-judge/helpfulness"], False, lb(), lb(), fail)
    assert not same_cause(lb(), [block], False, lb(), lb(), "evaluation_score:guardrail/pii/x")
    assert not same_cause(
        lb(), [block], False, lb(), lb(), "finish_reason_rate:guardrail/pii/pii_leak"
    )


def localized(
    scope: Labels, at_min: float = 0, *, key: Labels | None = None, **kw: object
) -> object:
    """A detection at ``key`` localized to ``scope``, with a probe on the scope's key."""
    key = key or scope
    d = detection(
        T0 + minutes(at_min),
        model=M,
        version=key.version,
        segment=dict(key.segment),
        **kw,  # type: ignore[arg-type]
    )
    loc = Localization(scope=scope, dimension="tenant", explanatory_power=0.95, reason="test")
    probe = Probe(key=f"{scope.model}|{scope.version or '*'}|", detector="toxicity")
    return d.model_copy(update={"localization": loc, "probes": (probe,)})


def grouping_engine(**lifecycle: float) -> IncidentEngine:
    return IncidentEngine(policy(grouping=True, **lifecycle), playbooks())


def tox(category: str = "toxicity", effect: float = 1.5, last_index: int = 1000) -> object:
    return signal(
        SignalKind.TOXICITY_RATE,
        feature=category,
        effect=effect,
        p_value=1e-8,
        last_index=last_index,
    )


def test_one_tenant_failure_across_keys_and_categories_is_one_incident() -> None:
    eng = grouping_engine()
    acme = lb(tenant="acme")
    [trigger] = eng.observe(localized(acme, 0, key=lb(), sig=tox()))  # type: ignore[arg-type]
    assert trigger.action == IncidentAction.TRIGGER
    assert trigger.labels == acme
    later = [
        localized(acme, 1, key=acme, sig=tox("toxicity", last_index=1100)),
        localized(acme, 2, key=lb(locale="en-US"), sig=tox("toxicity", last_index=1200)),
        localized(acme, 3, key=lb(), sig=tox("harassment", last_index=1300)),
        localized(acme, 4, key=lb(), sig=tox("any", last_index=1400)),
        localized(acme, 5, key=acme, sig=signal(last_index=1500)),  # downvotes
    ]
    events = [e for d in later for e in eng.observe(d)]  # type: ignore[arg-type]
    assert all(e.action != IncidentAction.TRIGGER for e in events)
    [inc] = eng.incidents()
    related = {(r.labels.describe(), r.incident_type) for r in inc.related}
    assert (lb(locale="en-US").describe(), "toxicity_rate:toxicity") in related
    assert (lb().describe(), "toxicity_rate:harassment") in related
    assert (acme.describe(), "downvote_rate") in related
    assert set(inc.families) == {"toxicity_rate", "downvote_rate"}


def test_two_unrelated_failures_stay_two_incidents_at_their_scopes() -> None:
    eng = grouping_engine()
    acme, globex = lb(tenant="acme"), lb(tenant="globex")
    conf = signal(SignalKind.CONFIDENCE_SHIFT, effect=1.2, p_value=1e-8)
    a = eng.observe(localized(acme, 0, key=acme, sig=tox()))  # type: ignore[arg-type]
    b = eng.observe(localized(globex, 1, key=lb(), sig=conf))  # type: ignore[arg-type]
    assert [e.action for e in a + b] == [IncidentAction.TRIGGER, IncidentAction.TRIGGER]
    assert [e.labels for e in a + b] == [acme, globex]
    assert a[0].incident_id != b[0].incident_id


def test_incident_stays_open_while_its_probe_is_alarmed_and_resolves_after_recovery() -> None:
    eng = grouping_engine()
    acme = lb(tenant="acme")
    [t] = eng.observe(localized(acme, 0, key=acme, sig=tox()))  # type: ignore[arg-type]
    [probe] = eng.probes()
    # detectors quiet for far longer than the quiet period, but the cause persists
    for m in (20, 60, 120):
        events = eng.tick(T0 + minutes(m), {probe.id: True})
        assert all(e.action != IncidentAction.RESOLVE for e in events)
    assert eng.incidents()
    # back at baseline: resolves one quiet period (the toxicity playbook's 45 min) later
    assert not [e for e in eng.tick(T0 + minutes(130), {probe.id: False}) if e.action == "resolve"]
    assert not [e for e in eng.tick(T0 + minutes(170), {probe.id: False}) if e.action == "resolve"]
    [r] = [e for e in eng.tick(T0 + minutes(176), {probe.id: False}) if e.action == "resolve"]
    assert "cause over since" in r.note
    # the same cause within the reopen window reopens the same incident
    [again] = eng.observe(localized(acme, 190, key=lb(), sig=tox(last_index=5000)))  # type: ignore[arg-type]
    assert again.action == IncidentAction.TRIGGER
    assert again.incident_id == t.incident_id
    assert again.note.startswith("reopened")
    assert again.severity.rank <= t.severity.rank  # never silently drops


def test_an_incident_back_at_baseline_by_its_deadline_is_not_escalated() -> None:
    """The toxicity playbook's deadline is 30 min: a probe back at baseline by then means
    the incident is resolving, not "not recovered"; if it alarms again, it escalates."""
    eng = grouping_engine()
    acme = lb(tenant="acme")
    eng.observe(localized(acme, 0, key=acme, sig=tox()))  # type: ignore[arg-type]
    [probe] = eng.probes()
    assert eng.tick(T0 + minutes(20), {probe.id: False}) == []
    assert eng.tick(T0 + minutes(31), {probe.id: False}) == []
    [esc] = eng.tick(T0 + minutes(32), {probe.id: True})
    assert esc.action == IncidentAction.UPDATE
    assert esc.status == IncidentStatus.ESCALATED
    assert "deadline" in esc.severity_reasons[-1]
    assert f"; still persisting: {probe.describe()}; if its level is the new normal" in esc.note


def test_an_escalation_names_the_probes_that_have_not_recovered() -> None:
    """What keeps the incident from resolving, in the words of the labels: only the
    probes whose change persists."""
    eng = grouping_engine()
    acme = lb(tenant="acme")
    tenant = Probe(key=f"{M}|*|tenant=acme", detector="harm", feature="harassment")
    model = Probe(key=f"{M}|v12|", detector="harm", feature="hate")
    d = localized(acme, 0, key=acme, sig=tox())
    eng.observe(d.model_copy(update={"probes": (tenant, model)}))  # type: ignore[attr-defined]
    [esc] = eng.tick(T0 + minutes(32), {tenant.id: True, model.id: False})
    held = f"; still persisting: harm harassment on {M} all versions tenant=acme; if its level"
    assert held in esc.note
    assert model.describe() == f"harm hate on {M} version=v12"
    guard = Probe(key=f"{M}|*|", detector="guardrail:guardrail/pii,pii_leak", feature="g/p")
    assert guard.describe() == f"guardrail g/p on {M} all versions"


def test_the_quiet_period_runs_from_the_causes_estimated_end() -> None:
    """A rare rate's recovery test reads its change as over long after it ended; its
    estimate of the end dates the quiet period (45 min for toxicity), and the reading
    must hold for a third of it, so a change that only eased can alarm again first."""
    eng = grouping_engine()
    acme = lb(tenant="acme")
    [t] = eng.observe(localized(acme, 0, key=acme, sig=tox()))  # type: ignore[arg-type]
    [probe] = eng.probes()
    eng.tick(T0 + minutes(60), {probe.id: True})
    over, end = {probe.id: False}, {probe.id: T0 + minutes(70)}
    assert eng.tick(T0 + minutes(120), over, end) == []  # 50 min after the end, just read
    assert eng.tick(T0 + minutes(134), over, end) == []
    [r] = eng.tick(T0 + minutes(135), over, end)
    assert r.action == IncidentAction.RESOLVE
    assert r.incident_id == t.incident_id
    assert f"cause over since {iso_utc(T0 + minutes(70))} (its detectors' estimate; " in r.note
    assert f"as ended since {iso_utc(T0 + minutes(120))}" in r.note


def test_an_estimated_end_is_no_earlier_than_the_last_detection_and_needs_every_probe() -> None:
    eng = grouping_engine()
    acme, globex = lb(tenant="acme"), lb(tenant="globex")
    tox_acme = Probe(key=f"{M}|*|tenant=acme", detector="harm", feature="toxicity")
    harass_acme = Probe(key=f"{M}|*|tenant=acme", detector="harm", feature="harassment")
    tox_globex = Probe(key=f"{M}|*|tenant=globex", detector="harm", feature="toxicity")
    for at, where, sig, probe in (
        (0, acme, tox(), tox_acme),
        (50, acme, tox("harassment"), harass_acme),
        (0, globex, tox(), tox_globex),
    ):
        d = localized(where, at, key=where, sig=sig)
        eng.observe(d.model_copy(update={"probes": (probe,)}))  # type: ignore[attr-defined]
    over = {p.id: False for p in (tox_acme, harass_acme, tox_globex)}
    # acme's probes date its end at 0:10 and 0:05, but its last detection came at 0:50;
    # globex's probe has no estimate: its quiet period runs from the reading, as before.
    end = {tox_acme.id: T0 + minutes(10), harass_acme.id: T0 + minutes(5)}
    assert eng.tick(T0 + minutes(80), over, end) == []
    assert eng.tick(T0 + minutes(94), over, end) == []
    [r] = eng.tick(T0 + minutes(95), over, end)
    assert r.labels == acme
    assert f"cause over since {iso_utc(T0 + minutes(50))} (its detectors' estimate" in r.note
    assert eng.tick(T0 + minutes(124), over, end) == []
    [late] = eng.tick(T0 + minutes(125), over, end)
    assert late.labels == globex
    assert f"cause over since {iso_utc(T0 + minutes(80))} (every probe's" in late.note


def test_late_verdicts_on_answers_served_before_the_end_neither_hold_nor_reopen() -> None:
    """A judge's verdicts trail the answers they rate: after the cause ended (0:10), verdicts
    on answers served at 0:05 still alarm. They are evidence of the cause, so they do not
    restart its quiet period or reopen it; a detection on answers served after the
    end still does."""
    eng = grouping_engine()
    acme = lb(tenant="acme")
    [t] = eng.observe(localized(acme, 0, key=acme, sig=tox()))  # type: ignore[arg-type]
    [probe] = eng.probes()
    over, end = {probe.id: False}, {probe.id: T0 + minutes(10)}
    assert eng.tick(T0 + minutes(40), over, end) == []

    def verdict(at: float, served: float) -> object:
        d = localized(acme, at, key=lb(feature="chat"), sig=tox(last_index=int(at) * 100))
        return d.model_copy(update={"served_at": T0 + minutes(served)})  # type: ignore[attr-defined]

    events = eng.observe(verdict(50, 5))  # type: ignore[arg-type]
    assert all(e.action == IncidentAction.UPDATE for e in events)
    [r] = eng.tick(T0 + minutes(55), over, end)  # 45 min after the end; read since 0:40
    assert r.action == IncidentAction.RESOLVE
    assert r.incident_id == t.incident_id
    assert f"cause over since {iso_utc(T0 + minutes(10))}" in r.note
    assert eng.observe(verdict(60, 8)) == []  # type: ignore[arg-type]
    # another category's sum from before the end joins the resolved incident: no new one
    harass = localized(acme, 61, key=lb(), sig=tox("harassment", last_index=6100))
    early = harass.model_copy(update={"window_start": T0 + minutes(5)})  # type: ignore[attr-defined]
    assert eng.observe(early) == []
    assert [r.incident_type for r in eng.incidents(active_only=False)] == ["toxicity_rate:toxicity"]
    [again] = eng.observe(verdict(62, 61))  # type: ignore[arg-type]
    assert again.action == IncidentAction.TRIGGER
    assert "reopened" in again.note


def test_only_evidence_that_begins_after_the_end_holds_the_incident_open() -> None:
    """A chart that summed evidence while the cause lasted can cross its threshold after
    the cause ended (0:10): its change-point estimate lies before the end, and the cause
    explains it. A detection whose evidence begins after the end (0:30) is a change of
    its own: the quiet period runs from it."""
    for window_start, resolved_at in ((5, 55), (30, 70)):
        eng = grouping_engine()
        acme = lb(tenant="acme")
        eng.observe(localized(acme, 0, key=acme, sig=tox()))  # type: ignore[arg-type]
        [probe] = eng.probes()
        over, end = {probe.id: False}, {probe.id: T0 + minutes(10)}
        d = localized(acme, 25, key=lb(), sig=tox(last_index=2500))
        eng.observe(d.model_copy(update={"window_start": T0 + minutes(window_start)}))  # type: ignore[attr-defined]
        resolves = [
            m
            for m in range(40, 120)
            for e in eng.tick(T0 + minutes(m), over, end)
            if e.action == IncidentAction.RESOLVE
        ]
        assert resolves == [resolved_at], window_start


def test_without_a_verdict_the_quiet_period_runs_from_the_last_detection() -> None:
    """No probe readings, no estimated end: a detection on feedback about answers served
    an hour earlier is quiet from when it fired, not from the answers' time."""
    eng = grouping_engine()
    d = detection(T0, model=M, sig=tox()).model_copy(update={"served_at": T0 - minutes(60)})
    [t] = eng.observe(d)
    assert t.action == IncidentAction.TRIGGER
    assert all(e.action != IncidentAction.RESOLVE for e in eng.tick(T0 + minutes(44)))
    [r] = eng.tick(T0 + minutes(45))
    assert r.action == IncidentAction.RESOLVE


def test_an_incident_stored_before_spans_keeps_its_last_detection_as_the_earliest_end() -> None:
    """Older state has no spans: it reads as one detection whose evidence begins at its
    last detection, so its end is never dated before it, as when it was written."""
    eng = grouping_engine()
    acme = lb(tenant="acme")
    eng.observe(localized(acme, 0, key=acme, sig=tox()))  # type: ignore[arg-type]
    eng.observe(localized(acme, 30, key=acme, sig=tox("harassment", last_index=3000)))  # type: ignore[arg-type]
    state = json.loads(json.dumps(eng.get_state()))
    for rec in state["incidents"]:
        del rec["spans"]
    old = grouping_engine()
    old.set_state(state)
    [rec] = old.incidents()
    assert rec.spans == [(T0 + minutes(30), T0 + minutes(30))]
    assert rec.served_after(T0 + minutes(10)) == T0 + minutes(30)


def test_a_key_id_reads_back_as_its_labels() -> None:
    """The pipeline's key ids and the labels an escalation names them by are one mapping
    (a segment value may hold ``,`` and ``=``)."""
    for labels in (
        Labels(model=M),
        Labels(model=M, version="v12"),
        Labels(model=M, segment={"tenant": "acme"}),
        Labels(model=M, segment={"feature": "a=b,c"}),
    ):
        assert labels_of_key(key_id(labels)) == labels
    assert key_id(Labels(model=M, version="v12")) == f"{M}|v12|"


def test_escalating_a_sev1_says_it_stays_sev1() -> None:
    """A critical category pages at SEV1; its escalation cannot raise it (it used to say
    "SEV1 -> SEV1")."""
    eng = grouping_engine()
    acme = lb(tenant="acme")
    [t] = eng.observe(localized(acme, 0, key=acme, sig=tox("self_harm")))  # type: ignore[arg-type]
    assert t.severity == Severity.SEV1
    [probe] = eng.probes()
    for m in (10, 20, 30):
        eng.tick(T0 + minutes(m), {probe.id: True})
    [inc] = eng.incidents()
    assert inc.status == IncidentStatus.ESCALATED
    assert inc.severity == Severity.SEV1
    assert inc.severity_reasons[-1].endswith("SEV1, the highest severity already")


def test_grouped_state_round_trips_through_json() -> None:
    eng = grouping_engine()
    acme = lb(tenant="acme")
    eng.observe(localized(acme, 0, key=acme, sig=tox()))  # type: ignore[arg-type]
    eng.observe(localized(acme, 1, key=lb(), sig=tox("any", last_index=1100)))  # type: ignore[arg-type]
    state = json.loads(json.dumps(eng.get_state()))
    eng2 = grouping_engine()
    eng2.set_state(state)
    assert eng2.get_state() == eng.get_state()
    # a redelivered detection is recognised after the restore
    assert eng2.observe(localized(acme, 1, key=lb(), sig=tox("any", last_index=1100))) == []  # type: ignore[arg-type]


def test_a_prompt_injection_wave_explains_its_hallucinations_in_either_order() -> None:
    inj, hal = "prompt_injection_rate", "hallucination_rate"
    assert same_cause(lb(), [inj], False, lb(), lb(), hal)
    assert same_cause(lb(), [hal], False, lb(tenant="acme"), lb(), inj)
    assert not same_cause(lb(), [hal], False, lb(), lb(), "toxicity_rate")


def test_a_hallucination_wave_explains_the_grounding_judges_but_not_other_judges() -> None:
    hal = "hallucination_rate"
    judge = "evaluation_score:llm-judge/groundedness"
    assert same_cause(lb(), [hal], False, lb(), lb(), judge)
    assert same_cause(lb(), [judge], False, lb(), lb(), hal)  # the judge fired first
    assert same_cause(lb(), [hal], False, lb(), lb(), "evaluation_fail_rate:ragas/faithfulness")
    assert not same_cause(lb(), [hal], False, lb(), lb(), "evaluation_score:llm-judge/politeness")
    assert not same_cause(lb(), ["evaluation_score:llm-judge/politeness"], False, lb(), lb(), hal)


def test_a_bad_deploy_explains_the_cuts_that_mix_versions() -> None:
    conf = "confidence_shift"
    assert same_cause(lb("v13"), [conf], True, lb(feature="chat"), lb(feature="chat"), "tox")
    assert not same_cause(lb("v13"), [conf], False, lb(feature="chat"), lb(), "tox")


def test_a_quiet_symptom_incident_does_not_absorb_a_later_unrelated_wave() -> None:
    """The e2e finding: a downvote incident still open hours after its last detection (its
    probe not yet back at baseline) swallowed a new prompt-injection wave as a related
    signal. A signal of another family whose episode began after the incident went quiet
    is a new cause: its own incident."""
    eng = grouping_engine()
    model = lb()
    [down] = eng.observe(localized(model, 0, sig=signal(last_index=1000)))  # type: ignore[arg-type]
    wave = signal(SignalKind.PROMPT_INJECTION_RATE, effect=5.0, p_value=1e-9, last_index=9000)
    [new] = eng.observe(localized(model, 180, sig=wave))  # type: ignore[arg-type]
    assert new.action == IncidentAction.TRIGGER
    assert new.incident_id != down.incident_id
    assert new.incident_type == "prompt_injection_rate"
    # while the downvote cause is still firing, another family on its scope does join it
    eng2 = grouping_engine()
    [first] = eng2.observe(localized(model, 0, sig=signal(last_index=1000)))  # type: ignore[arg-type]
    joined = eng2.observe(localized(model, 5, sig=tox()))  # type: ignore[arg-type]
    assert all(e.incident_id == first.incident_id for e in joined)
    assert len(eng2.incidents()) == 1


def test_a_fresh_deploy_is_its_own_incident_named_by_its_version() -> None:
    """The e2e finding: a model-wide confidence incident resolved minutes earlier was
    reopened by the new version's confidence detection, so the deploy was never named. A
    detection localized to a freshly deployed version opens the deploy's incident, with the
    bad_deploy playbook, and the deploy then explains the cuts that mix versions."""
    eng = grouping_engine()
    conf = signal(SignalKind.CONFIDENCE_SHIFT, effect=1.2, p_value=1e-8, last_index=1000)
    [old] = eng.observe(localized(lb(), 0, sig=conf))  # type: ignore[arg-type]
    [probe] = eng.probes()
    eng.tick(T0 + minutes(60), {probe.id: False})
    resolved = eng.tick(T0 + minutes(120), {probe.id: False})
    assert [e.action for e in resolved] == [IncidentAction.RESOLVE]
    eng.record_deploy(M, "v13", T0 + minutes(125), previous_version="v12")
    conf2 = signal(SignalKind.CONFIDENCE_SHIFT, effect=1.5, p_value=1e-9, last_index=5000)
    [dep] = eng.observe(localized(lb("v13"), 140, key=lb("v13"), sig=conf2))  # type: ignore[arg-type]
    assert dep.action == IncidentAction.TRIGGER
    assert dep.incident_id != old.incident_id
    assert dep.labels == lb("v13")
    assert dep.playbook is not None
    assert dep.playbook.name == "bad_deploy"
    # toxicity on a segment cut (it mixes versions) is folded into the deploy's incident
    seg = lb(feature="chat")
    folded = eng.observe(localized(seg, 150, key=seg, sig=tox(last_index=6000)))  # type: ignore[arg-type]
    assert all(e.action != IncidentAction.TRIGGER for e in folded)
    [open_] = eng.incidents()
    assert open_.incident_id == dep.incident_id
    assert (seg.describe(), "toxicity_rate:toxicity") in {
        (r.labels.describe(), r.incident_type) for r in open_.related
    }


def test_a_downvote_incident_does_not_take_in_a_critical_output() -> None:
    """A symptom-only incident takes in the cause that shows, except a critical output:
    its own page, playbook (fallback route, keyword filter) and deadline."""
    eng = grouping_engine()
    [down] = eng.observe(localized(lb(), 0, sig=signal(last_index=1000)))  # type: ignore[arg-type]
    crit = signal(SignalKind.CRITICAL_EVENT, feature="self_harm", effect=2.0, p_value=1e-9)
    events = eng.observe(localized(lb(tenant="acme"), 5, sig=crit))  # type: ignore[arg-type]
    [page] = [e for e in events if e.action == IncidentAction.TRIGGER]
    assert page.incident_id != down.incident_id
    assert page.incident_type == "critical_event:self_harm"
    assert page.playbook is not None
    assert page.playbook.name == "critical_event"
    assert page.labels == lb(tenant="acme")
