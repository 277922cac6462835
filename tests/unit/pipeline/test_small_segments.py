"""Small segments start from their parent key's baseline (issue 13, item 6).

A tenant with a few dozen feedback events a day would need ten days to learn its own
downvote baseline; with the shrinkage prior it is watched from its first day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from detectors.adaptive_rate import AdaptiveBernoulliCusum
from detectors.coverage import HarmRate
from detectors.rate import BernoulliCusum
from streams.contract.decode import Coordinates
from streams.contract.events import Evaluation, Feedback
from streams.detection_settings import DetectionSettings
from streams.pipeline import budget
from streams.pipeline.detect import Detect
from streams.pipeline.detectorset import (
    PRIOR_FOLLOW_EVERY,
    DetectorSet,
    per_detector_arl0,
    per_test_seconds,
)
from streams.pipeline.observation import Observation, event_time
from streams.settings import load_settings

T0 = datetime(2025, 1, 6, tzinfo=UTC)
SERVICE_KEYS = 1000
"""Live keys sharing the service's weekly false-page budget (model, version and segment
cuts of a few models): one key's share is 1/1000 of it."""
DAY_S = 86_400.0


def _feedback(i: int, t: float, tenant: str, down: bool) -> Observation:
    event = Feedback.model_validate(
        {
            "request_id": f"r{i}",
            "timestamp": T0 + timedelta(seconds=t),
            "gen_ai.request.model": "m",
            "model_version": "v1",
            "vote": "down" if down else "up",
        }
    )
    return Observation(event, "m", "v1", {"tenant": tenant}, Coordinates("feedback", 0, i))


def _stream(
    seed: int, days: float, per_day: dict[str, int], rate: dict[str, float], jump_day: float
) -> list[Observation]:
    """Feedback of several tenants (Poisson arrivals per day), time-ordered; the tenant
    ``tiny``'s downvote rate is ``rate['tiny_after']`` from ``jump_day`` on."""
    rng = np.random.default_rng(seed)
    events: list[tuple[float, str]] = []
    for tenant, n in per_day.items():
        count = int(rng.poisson(n * days))
        events += [(float(t), tenant) for t in rng.uniform(0.0, days * DAY_S, count)]
    events.sort()
    out = []
    for i, (t, tenant) in enumerate(events):
        p = rate[tenant]
        if tenant == "tiny" and t >= jump_day * DAY_S:
            p = rate["tiny_after"]
        out.append(_feedback(i, t, tenant, bool(rng.random() < p)))
    return out


def _detect(settings: DetectionSettings) -> Detect:
    return Detect(
        settings,
        load_policy(settings.alerting_policy),
        load_playbooks(settings.playbooks_dir),
        {},
        {},
    )


def _tiny_triggers(detect: Detect, obs: list[Observation]) -> list[float]:
    """Event times (days) of downvote incidents raised on the tenant ``tiny``."""
    out = []
    for k in range(0, len(obs), 500):
        for ev in detect.process(obs[k : k + 500]):
            if (
                ev.action == "trigger"
                and ev.incident_type.startswith("downvote_rate")
                and ev.labels.segment.get("tenant") == "tiny"
            ):
                out.append((ev.emitted_at - T0).total_seconds() / DAY_S)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_a_sparse_tenants_downvote_jump_is_detected_before_its_own_warmup(seed: int) -> None:
    """30 feedback events a day: its own 300-event warm-up would take ten days (and learn
    the bad rate). From the model's baseline it is detected within 5 days of the jump
    (~150 of its events). Without the prior it was not detected in the same 9 days; now
    the warm-up scan (:mod:`detectors.warmup`), which needs no baseline, finds the jump
    in its own events too (days 4.5 and 4.8 on these seeds, against 5.0 and 4.7 with the
    prior)."""
    base = load_settings(env={}).detection
    per_day = {"big": 600, "tiny": 30}
    rate = {"big": 0.08, "tiny": 0.08, "tiny_after": 0.4}
    obs = _stream(seed, days=9.0, per_day=per_day, rate=rate, jump_day=4.0)
    found = _tiny_triggers(_detect(base), obs)
    assert found, "the sparse tenant's jump was not detected"
    assert 4.0 <= found[0] <= 9.0, found
    off = base.model_copy(update={"segment_prior_events": 0.0})
    alone = _tiny_triggers(_detect(off), obs)
    assert alone, "the warm-up scan did not find the jump"
    assert 4.0 <= alone[0] <= 9.0, alone


def _calibrated_parent(settings: DetectionSettings, rate: float, seed: int) -> DetectorSet:
    parent = DetectorSet(settings, "model", per_detector_arl0(settings))
    rng = np.random.default_rng([seed, 99])
    for i, down in enumerate(rng.random(3000) < rate):
        parent.update(_feedback(i, float(i), "big", bool(down)))
    assert not parent.detectors["downvote"].learning
    return parent


@pytest.mark.parametrize(("seed", "tiny_rate"), [(3, 0.08), (4, 0.1)])
def test_a_clean_sparse_tenant_raises_nothing_for_four_months(seed: int, tiny_rate: float) -> None:
    """120 days of a 40-a-day tenant at the model's rate, or 1.25x it (segments differ):
    no signal at the service's budget, and the prior makes it watched from its first event."""
    settings = load_settings(env={}).detection
    parent = _calibrated_parent(settings, 0.08, seed)
    tiny = DetectorSet(settings, "segment", per_detector_arl0(settings))
    # The tenant's share of the weekly budget in a service of SERVICE_KEYS live keys, its
    # run length in events from its own rate, as Detect sets it.
    seconds = per_test_seconds(settings, SERVICE_KEYS)
    rng = np.random.default_rng(seed)
    signals = []
    for i, down in enumerate(rng.random(120 * 40) < tiny_rate):
        obs = _feedback(i, i * DAY_S / 40, "tiny", bool(down))
        tiny.see_traffic(event_time(obs.event))
        tiny.set_budget(seconds)
        signals += tiny.update(obs, parents=(parent,))
        if i == 0:
            assert not tiny.detectors["downvote"].learning  # watched from its first event
    assert signals == []
    det = tiny.detectors["downvote"]
    assert isinstance(det, AdaptiveBernoulliCusum)
    # Its own events took over the baseline (the prior: 100 pseudo-events at 0.08).
    assert det._parts[-1].baseline == pytest.approx(tiny_rate, rel=0.2)


@pytest.mark.slow
def test_sparse_tenant_years_with_a_false_alarm_are_no_more_than_without_the_prior() -> None:
    """The false-alarm accounting of small segments: 10 seeded years of a clean 40-a-day
    tenant at the model's rate, at the ARL0 the service gives a downvote detector.

    Measured: 0 years in 10 with a false alarm with the prior, 2 in 10 without it (each
    segment learning alone from 300 events). Neither is the nominal ARL0: a baseline
    learned from a few hundred events is underestimated often enough that the CUSUM
    designed for a 1.5x shift drifts up (DESIGN.md, "Baselines are estimated")."""
    settings = load_settings(env={}).detection
    tenant_rate = 40 / DAY_S  # events per second
    key_arl0 = budget.key_arl0(tenant_rate, per_test_seconds(settings, SERVICE_KEYS))
    arl0 = key_arl0 * settings.feedback_fraction
    warm = settings.feedback_warmup_events
    years = {0.0: 0, settings.segment_prior_events: 0}
    for strength in years:
        for seed in range(10):
            det = AdaptiveBernoulliCusum(arl0=arl0, warmup=warm)
            if strength:
                assert det.adopt_prior(AdaptiveBernoulliCusum(p0=0.08, arl0=arl0), strength)
            flags = np.random.default_rng(seed).random(365 * 40) < 0.08
            years[strength] += bool(det.update_many(flags))
    with_prior, alone = years[settings.segment_prior_events], years[0.0]
    print(f"years with a false alarm of 10: {with_prior} with the prior, {alone} without")
    assert with_prior <= 1  # measured 0
    assert with_prior <= alone


def test_the_prior_is_a_conservative_start_and_yields_to_own_events() -> None:
    with_prior = BernoulliCusum(arl0=1e5, warmup=300)
    assert with_prior.learning
    assert with_prior.adopt_prior(0.05, strength=100)
    assert not with_prior.learning
    assert with_prior.baseline == pytest.approx(0.05, rel=0.1)
    assert not with_prior.adopt_prior(0.052, strength=100)  # adopted once; a small move: kept
    known = BernoulliCusum(p0=0.05, arl0=1e5)
    # Calibrated for the upper bound of a 100-observation estimate: a higher threshold.
    assert with_prior.threshold > known.threshold
    rng = np.random.default_rng(0)
    for x in rng.random(20_000) < 0.06:  # 1.2x the prior: a tenant of its own, no failure
        with_prior.update(bool(x))
    assert with_prior.baseline == pytest.approx(0.06, rel=0.1)
    state = with_prior.get_state()
    restored = BernoulliCusum(arl0=1e5, warmup=300)
    restored.set_state(state)
    assert restored.get_state() == state
    legacy = {k: v for k, v in state.items() if not k.startswith("prior_")}
    older = BernoulliCusum(arl0=1e5, warmup=300)
    older.set_state(legacy)  # state saved before priors existed still loads
    assert older.baseline == with_prior.baseline


def test_a_floored_prior_follows_the_parents_re_estimate() -> None:
    """A segment that adopted its parent's young estimate (2.4 %, the parent's truth is
    1.3 %) must not keep that snapshot as its floor: once the parent re-estimates, the
    segment re-learns at its next return to zero, floored at the parent's new rate. The
    floor still holds (the segment's own 1.4 % from ~2,000 observations is not trusted
    below the parent's rate), and it is released at 4x the warm-up as before."""
    seg = BernoulliCusum(arl0=1e6, warmup=1000)
    assert seg.adopt_prior(0.024, strength=100)
    rng = np.random.default_rng(11)
    seg.update_many(rng.random(1500) < 0.014)
    assert seg.prior_floored
    assert seg.baseline == pytest.approx(0.024, rel=0.05)  # held at the stale snapshot
    assert seg.adopt_prior(0.013, strength=100)  # the parent re-estimated: follow it
    before = seg.threshold
    seg.update_many(rng.random(600) < 0.014)
    assert seg.baseline < 0.019  # re-learned on its own events, floored at 1.3 %
    assert seg.baseline >= 0.013
    assert seg.threshold != before
    assert not seg.adopt_prior(0.0135, strength=100)  # within the tolerance: no re-learn
    seg.update_many(rng.random(4000) < 0.014)
    assert not seg.prior_floored
    assert not seg.adopt_prior(0.05, strength=100)  # released: the parent no longer counts


def test_a_segment_key_follows_its_parents_re_estimate_in_the_pipeline() -> None:
    """Through DetectorSet: the model key's first downvote estimate is high (2.4 %, its
    truth 1.3 %); the tenant key adopts it, and once the model re-estimates, the tenant's
    floored baseline follows within PRIOR_FOLLOW_EVERY feedback events."""
    s = load_settings(env={}).detection
    parent = DetectorSet(s, "model", 1e6)
    child = DetectorSet(s, "segment", 1e6)
    rng = np.random.default_rng(2)
    i = 0

    def feed(ds: DetectorSet, n: int, p: float, parents: tuple[DetectorSet, ...] = ()) -> None:
        nonlocal i
        for _ in range(n):
            i += 1
            ds.update(_feedback(i, float(i), "t", bool(rng.random() < p)), parents=parents)

    def rate(ds: DetectorSet) -> float:
        det = ds.detectors["downvote"]
        assert isinstance(det, AdaptiveBernoulliCusum)
        return det._parts[0].baseline

    feed(parent, 1500, 0.024)  # a young parent: its first estimate from ~20 downvotes
    feed(child, 800, 0.014, (parent,))
    first = rate(child)
    assert first >= 0.02  # floored at the parent's young estimate (own: ~11 downvotes)
    feed(parent, 20_000, 0.013)  # its sample quadruples twice: it re-estimates
    assert rate(parent) < 0.016
    feed(child, PRIOR_FOLLOW_EVERY + 300, 0.014, (parent,))
    assert rate(child) < 0.8 * first
    assert rate(child) >= rate(parent)


def test_harm_categories_take_their_own_categorys_prior() -> None:
    parent = HarmRate(max_categories=3, warmup=200, arl0=1e4)
    rng = np.random.default_rng(5)
    for _ in range(3000):
        parent.update({"self_harm": bool(rng.random() < 0.02), "hate": bool(rng.random() < 0.1)})
    child = HarmRate(max_categories=3, warmup=200, arl0=1e4)
    child.update({"self_harm": False, "hate": False})
    assert child.adopt_prior(parent, 100)
    assert not child.learning
    assert child._parts["hate"]._parts[0].baseline > child._parts["self_harm"]._parts[0].baseline


def _judged(i: int, locale: str, score: float) -> Observation:
    event = Evaluation.model_validate(
        {
            "request_id": f"r{i}",
            "timestamp": T0 + timedelta(seconds=i),
            "model": "m",
            "model_version": "v1",
            "evaluator": "llm-judge",
            "name": "helpful",
            "score": score,
        }
    )
    return Observation(event, "m", "v1", {"locale": locale}, Coordinates("evaluations", 0, i))


def test_a_young_locales_judge_drop_pages_before_its_own_reference_in_the_pipeline() -> None:
    """Through DetectorSet: a locale whose judge scores sit 0.6 below its model's has 150
    of its 300 reference evaluations when its scores drop by a further point. It charts
    on the model's reference shape from its 100th value, with its own location (so the
    offset raises nothing), and pages on the drop; without parents it would still be
    filling its reference."""
    s = load_settings(env={}).detection
    model = DetectorSet(s, "model", 1e6)
    locale = DetectorSet(s, "segment", 1e6)
    rng = np.random.default_rng(4)
    for i in range(400):
        model.update(_judged(i, "en", float(rng.normal(4.0, 0.7))))
    found = []
    for i in range(400, 700):
        score = float(rng.normal(3.4 if i < 550 else 2.4, 0.7))
        found += [sig for _, sig, _ in locale.update(_judged(i, "de", score), parents=(model,))]
    assert found, "the drop went unseen"
    assert found[0].first_index >= 150  # nothing on the offset alone
    assert found[0].details["prior"] == 1.0
    assert locale.detectors["eval_score:llm-judge,helpful"].learning
