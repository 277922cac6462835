"""Rules and routing for the failure modes beyond toxicity and downvotes: every harm
category, hallucinations, evaluator and guardrail results, finish reasons, latency, tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from detectors.base import SignalKind
from detectors.coverage import POOLED
from streams.contract.decode import Coordinates
from streams.contract.events import Evaluation, InferenceOutput
from streams.detection_settings import DetectionSettings
from streams.pipeline import detectorset
from streams.pipeline.detectorset import FACTORIES, DetectorSet
from streams.pipeline.observation import Observation
from streams.pipeline.rules import (
    evaluation_metric,
    finish_flags,
    harm_flags,
    is_evaluation_fail,
    is_guardrail_block,
    is_hallucination,
)
from streams.settings import load_settings

T0 = datetime(2025, 1, 6, tzinfo=UTC)
S = DetectionSettings()


def _output(i: int, **fields: Any) -> InferenceOutput:
    return InferenceOutput.model_validate(
        {
            "request_id": f"r{i}",
            "timestamp": T0 + timedelta(seconds=i),
            "model": "m",
            "model_version": "v1",
            **fields,
        }
    )


def _evaluation(i: int, **fields: Any) -> Evaluation:
    base = {"request_id": f"r{i}", "timestamp": T0 + timedelta(seconds=i), "model": "m"}
    return Evaluation.model_validate({**base, "model_version": "v1", **fields})


def _obs(event: InferenceOutput | Evaluation, i: int) -> Observation:
    return Observation(event, "m", "v1", {}, Coordinates("t", 0, i))


def test_every_moderation_category_is_watched_except_the_excluded() -> None:
    scores = {"self_harm": 0.6, "sexual": 0.2, "brand_new": 0.9, "spam": 0.99}
    assert harm_flags(scores, S) == {
        "self_harm": True,
        "sexual": False,
        "brand_new": True,
        "spam": True,
    }
    excluded = DetectionSettings(toxicity_excluded=("spam",))
    assert "spam" not in harm_flags(scores, excluded)


def test_the_old_category_list_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match=r"replaced by detection\.toxicity_excluded"):
        DetectionSettings.model_validate({"toxicity_categories": ["toxicity"]})


def test_hallucination_evaluation_guardrail_and_finish_rules() -> None:
    assert is_hallucination(S.groundedness_cutoff - 0.01, S)
    assert not is_hallucination(S.groundedness_cutoff, S)
    assert not is_hallucination(None, S)
    judge = _evaluation(0, evaluator="llm-judge", name="faithful", score=2.0, passed=False)
    assert evaluation_metric(judge) == "llm-judge/faithful"
    assert is_evaluation_fail(judge) is True
    assert is_guardrail_block(judge) is None
    assert is_evaluation_fail(_evaluation(0, evaluator="j", name="x", score=1.0)) is None
    guard = _evaluation(0, evaluator="guardrail/pii", name="pii", kind="guardrail", passed=False)
    assert is_guardrail_block(guard) is True
    assert is_evaluation_fail(guard) is None
    labelled = _evaluation(
        0, evaluator="g", name="x", kind="guardrail", **{"gen_ai.evaluation.score.label": "BLOCK"}
    )
    assert is_guardrail_block(labelled) is True
    assert is_guardrail_block(_evaluation(0, evaluator="g", name="x", kind="guardrail")) is None
    out = _output(0, **{"gen_ai.response.finish_reasons": ["content_filter"]})
    assert finish_flags(out, S) == {"content_filter": True, "length": False, "refusal": False}
    assert finish_flags(_output(1), S) == {}


def test_budget_counts_every_routed_test_with_the_bounds() -> None:
    # harm: bound + pooled; hallucination 1 + groundedness 3; evaluations 3 + 1 + 1;
    # finish reasons one per flag; latency 3; tokens 3 -- on top of the 14 before.
    assert (
        detectorset.tests_per_level(S) == 14 - 5 + (S.max_harm_categories + 1) + 4 + 5 + 3 + 3 + 3
    )
    fewer = DetectionSettings(max_harm_categories=2, finish_reason_flags=("length",))
    assert detectorset.tests_per_level(S) - detectorset.tests_per_level(fewer) == 10 + 2
    assert detectorset.per_test_seconds(S, 10) > detectorset.per_test_seconds(fewer, 10)
    assert {"harm", "hallucination", "eval_score", "eval_fail", "guardrail"} <= set(FACTORIES)


def test_a_self_harm_rate_spike_raises_a_toxicity_rate_signal_for_self_harm() -> None:
    rng = np.random.default_rng(11)
    ds = DetectorSet(S, "model", arl0=1e5)
    signals = []
    for i in range(30_000):
        p = 0.004 if i < 20_000 else 0.03
        flagged = rng.random() < p
        scores = {"toxicity": float(rng.beta(1, 60)), "self_harm": 0.8 if flagged else 0.01}
        for name, sig, _ in ds.update(_obs(_output(i, moderation=scores), i)):
            signals.append((i, name, sig))
    assert signals, "a 7.5x self_harm rate went unnoticed"
    i, name, sig = signals[0]
    assert name == "harm"
    assert sig.kind is SignalKind.TOXICITY_RATE
    assert sig.feature == "self_harm"
    assert 20_000 <= i < 21_500  # detected after the change, within 1500 outputs


def test_low_groundedness_wave_raises_a_hallucination_signal() -> None:
    rng = np.random.default_rng(12)
    ds = DetectorSet(S, "model", arl0=1e5)
    found = []
    for i in range(8000):
        g = rng.beta(9.0, 1.5) - (0.35 if i >= 5000 else 0.0)
        event = _output(i, groundedness=float(np.clip(g, 0, 1)))
        found += [(i, n, s) for n, s, _ in ds.update(_obs(event, i))]
    assert found
    i, name, sig = found[0]
    assert name in ("hallucination", "groundedness")
    assert sig.kind is SignalKind.HALLUCINATION_RATE
    assert 5000 <= i < 5400


def test_judge_score_drop_and_guardrail_blocks_are_per_evaluator_metric() -> None:
    rng = np.random.default_rng(13)
    ds = DetectorSet(S, "model", arl0=1e5)
    found: dict[str, tuple[int, Any]] = {}
    for i in range(6000):
        drop = i >= 3000
        score = float(rng.normal(4.0 - (0.8 if drop else 0.0), 0.6))  # a 1-5 judge scale
        judge = _evaluation(i, evaluator="llm-judge", name="helpful", score=score)
        blocked = bool(rng.random() < (0.15 if drop else 0.03))
        guard = _evaluation(
            i, evaluator="guardrail/pii", name="pii", kind="guardrail", passed=not blocked
        )
        for event in (judge, guard):
            for name, sig, _ in ds.update(_obs(event, i)):
                found.setdefault(name, (i, sig))
    i, sig = found["eval_score:llm-judge,helpful"]
    assert sig.kind is SignalKind.EVALUATION_SCORE
    assert sig.feature == "llm-judge/helpful"
    assert 3000 <= i < 3200
    i, sig = found["guardrail:guardrail/pii,pii"]
    assert sig.kind is SignalKind.GUARDRAIL_BLOCK_RATE
    assert sig.feature == "guardrail/pii/pii"
    assert 3000 <= i < 3300
    state = ds.to_json()
    restored = DetectorSet.from_json(state, S, "model", 1e5)
    assert restored.to_json() == state


def test_evaluation_metrics_per_key_are_bounded() -> None:
    settings = DetectionSettings(max_evaluation_metrics=2)
    ds = DetectorSet(settings, "model", arl0=1e5)
    for j in range(5):
        ds.update(_obs(_evaluation(j, evaluator="j", name=f"m{j}", score=0.5, passed=True), j))
    names = sorted(ds.detectors)
    assert names == ["eval_fail:j,m0", "eval_fail:j,m1", "eval_score:j,m0", "eval_score:j,m1"]


def test_finish_latency_and_tokens_are_routed() -> None:
    ds = DetectorSet(S, "model", arl0=1e5)
    event = _output(
        0,
        latency_ms=800.0,
        **{"gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.output_tokens": 120},
    )
    ds.update(_obs(event, 0))
    assert {"finish", "latency", "tokens", "harm"} <= set(ds.detectors)


def test_shipped_config_loads_with_the_new_keys() -> None:
    det = load_settings(env={}).detection
    assert det.toxicity_excluded == ()
    assert det.finish_reason_flags == ("content_filter", "length", "refusal")


def _input(i: int, seconds: float) -> Observation:
    from streams.contract.events import InferenceInput

    event = InferenceInput.model_validate(
        {
            "request_id": f"r{i}",
            "timestamp": T0 + timedelta(seconds=seconds),
            "model": "m",
            "model_version": "v1",
            "numeric_features": {"x": float(i % 7)},
        }
    )
    return Observation(event, "m", "v1", {"locale": "de-DE"}, Coordinates("t", 0, i))


@pytest.mark.parametrize(("gap_s", "drifts"), [(1.0, True), (60.0, False)])
def test_segment_keys_with_enough_traffic_run_drift_detectors(gap_s: float, drifts: bool) -> None:
    settings = DetectionSettings(
        segment_drift_min_share=0.05, segment_drift_min_events_per_hour=500
    )
    ds = DetectorSet(settings, "segment", arl0=1e5)
    for i in range(1200):
        obs = _input(i, i * gap_s)
        ds.see_traffic(obs.event.timestamp.timestamp())
        ds.update(obs)
    assert ("numeric:x" in ds.detectors) is drifts  # 3600/h crosses 500/h; 60/h never
    off = DetectorSet(DetectionSettings(), "segment", arl0=1e5)
    for i in range(1200):
        obs = _input(i, i * gap_s)
        off.see_traffic(obs.event.timestamp.timestamp())
        off.update(obs, share=0.04)
    assert "numeric:x" not in off.detectors  # default: segments under 5 % of the model: none


def test_a_named_category_wins_over_the_pooled_test_on_the_same_event() -> None:
    from detectors.coverage import HarmRate

    det = HarmRate(max_categories=2, warmup=200, arl0=300.0)
    rng = np.random.default_rng(3)
    fired = []
    for i in range(3000):
        flagged = bool(rng.random() < (0.05 if i < 1500 else 0.4))
        sig = det.update({"self_harm": flagged, "hate": False})
        if sig is not None and i >= 1500:
            fired.append(sig)
    assert fired
    assert all(s.feature == "self_harm" for s in fired)  # never the pooled echo
    assert any("also:any" in s.details for s in fired)


def test_a_held_key_keeps_judging_the_categories_that_have_their_baseline() -> None:
    """While a more general key alarms, a version key's harm test is held from learning.
    A rare category still warming up (self_harm at 0.1 %) must not stop the others: the
    toxicity test keeps its baseline, sees the spike, alarms and later reads it as over,
    while self_harm learns nothing from the incident's traffic."""
    rng = np.random.default_rng(14)
    ds = DetectorSet(S, "version", arl0=1e5)
    harm = frozenset({"harm"})

    def feed(i: int, p_tox: float, hold: frozenset[str]) -> list[Any]:
        scores = {
            "toxicity": 0.9 if rng.random() < p_tox else 0.01,
            "self_harm": 0.9 if rng.random() < 0.001 else 0.01,
        }
        return ds.update(_obs(_output(i, moderation=scores), i), hold)

    for i in range(3000):
        assert not feed(i, 0.03, frozenset())
    det = ds.detectors["harm"]
    assert det.learning  # self_harm is still warming up...
    assert det.alarm_ready  # ...toxicity has its baseline
    self_harm = det.excess("self_harm")
    learned = det.get_state()["cats"]["self_harm"]
    fired = [s for i in range(3000, 4500) for _, s, _ in feed(i, 0.24, harm)]
    assert fired
    assert {s.feature for s in fired} <= {"toxicity", POOLED}
    assert fired[0].feature == "toxicity"
    for i in range(4500, 6000):
        feed(i, 0.03, harm)
    tox = det.excess("toxicity")
    assert tox is not None
    assert tox.recovered
    assert det.excess("self_harm") == self_harm
    assert det.get_state()["cats"]["self_harm"] == learned  # learned nothing while held


def test_a_category_first_seen_late_points_its_evidence_at_the_change() -> None:
    """A producer that starts sending self_harm at observation 5,000: its test counts from
    there, yet its signal's indices, and so the evidence's offsets, are the key's."""
    rng = np.random.default_rng(3)
    ds = DetectorSet(S, "model", arl0=1e5)
    found = []
    for i in range(12_000):
        scores = {"toxicity": 0.9 if rng.random() < 0.03 else 0.01}
        if i >= 5000:
            scores["self_harm"] = 0.9 if rng.random() < (0.01 if i < 10_000 else 0.08) else 0.01
        found += [(i, s, t) for _, s, t in ds.update(_obs(_output(i, moderation=scores), i))]
    assert found
    i, signal, tracker = found[0]
    assert signal.feature == "self_harm"
    assert signal.last_index == i
    assert 9900 <= signal.first_index <= i
    _, [evidence] = tracker.evidence(signal.first_index)
    assert 10_000 - detectorset.CHECKPOINT_EVERY <= evidence.first_offset <= 10_000
    state = ds.detectors["harm"].get_state()
    assert state["n"] == 12_000
