"""What a learning detector still needs before it can alarm (``Detector.awaiting``): the
console's Models page shows it, so an operator sees which failure modes are not watched
yet and for how long (a guardrail checking a tenth of the outputs at a 3 % block rate
needs hours for the 20 blocks of its warm-up)."""

from __future__ import annotations

import numpy as np

from detectors.adaptive_rate import AdaptiveBernoulliCusum
from detectors.confidence import ConfidenceShift
from detectors.coverage import FinishReasonRate, HarmRate
from detectors.drift import LabelMixDrift, NumericDrift
from detectors.rate import BernoulliCusum


def test_a_rate_names_the_observations_and_flagged_events_its_warm_up_lacks() -> None:
    det = BernoulliCusum(warmup=200, arl0=1e4, max_reference=5_000)
    assert det.awaiting() == "0 of 200 observations, 0 of 20 flagged"
    for i in range(250):
        det.update(i % 50 == 0)  # 5 flagged in 250
    assert det.awaiting() == "5 of 20 flagged (or 250 of 5,000 observations)"
    for i in range(800):
        det.update(i % 40 == 0)
    assert not det.learning
    assert det.awaiting() == ""


def test_an_adaptive_rate_counts_the_non_events_it_took_as_a_count() -> None:
    """Non-events are taken as a count while the parts rest and applied later: the
    text counts them all the same."""
    det = AdaptiveBernoulliCusum(warmup=300, arl0=1e4)
    det.update_many([False] * 120 + [True] * 3 + [False] * 57)
    assert det.awaiting().startswith("180 of 300 observations, 3 of 20 flagged")
    det.update_many([i % 20 == 0 for i in range(600)])
    assert det.alarm_ready
    assert det.awaiting() == ""


def test_a_detector_of_several_tests_awaits_nothing_once_one_can_alarm() -> None:
    reasons = FinishReasonRate(max_categories=3, pooled=False, warmup=200, arl0=1e4)
    assert reasons.awaiting() == "a first observation with a category"
    det = HarmRate(max_categories=4, warmup=200, arl0=1e4)
    assert det.awaiting().startswith("0 of 200 observations")  # the pooled test's
    rng = np.random.default_rng(5)
    for _ in range(1_500):
        det.update({"toxicity": bool(rng.random() < 0.05), "self_harm": False})
    det.update({"toxicity": False, "self_harm": True})  # a rare category appears
    assert det.learning  # self_harm has one event of its warm-up's 20
    assert det.alarm_ready
    assert det.awaiting() == ""


def test_charts_and_window_tests_name_the_reference_values_they_lack() -> None:
    chart = ConfidenceShift(reference_size=400, arl0=1e4)
    window = LabelMixDrift(reference_size=300, window=50, arl0=1e4)
    for i in range(120):
        chart.update(0.5 + 0.001 * i)
        window.update(f"label-{i % 3}")
    assert chart.awaiting() == "120 of 400 reference values"
    assert window.awaiting() == "120 of 300 reference observations"
    for i in range(300):
        chart.update(0.5 + 0.001 * (i % 97))
        window.update(f"label-{i % 3}")
    assert chart.awaiting() == ""
    assert window.awaiting() == ""


def test_several_rates_name_the_one_nearest_its_baseline() -> None:
    """Finish reasons: every watched reason is a test from the first output, the rarest
    first; the detector can alarm once any has its baseline, so the text follows the one
    nearest it, not the first."""
    det = FinishReasonRate(max_categories=3, pooled=False, warmup=1000, arl0=1e5)
    for i in range(1500):
        det.update({"content_filter": False, "length": i % 80 == 0, "refusal": False})
    assert not det.alarm_ready
    assert det.awaiting() == "19 of 20 flagged (or 1,500 of 50,000 observations)"


def test_a_young_chart_on_its_parents_prior_names_what_starts_that_chart() -> None:
    """A young segment with its parent's prior charts on it from ``min_own`` values of
    its own, long before its own reference is complete."""
    rng = np.random.default_rng(1)
    parent = ConfidenceShift(reference_size=1000, arl0=1e5)
    parent.update_many(rng.beta(8, 2, 1000).tolist())
    young = ConfidenceShift(reference_size=1000, arl0=1e5)
    young.update_many(rng.beta(8, 2, 30).tolist())
    assert young.adopt_prior(parent, 100.0)
    assert young.awaiting() == "30 of 100 values to chart on its parent's baseline"
    young.update_many(rng.beta(8, 2, 70).tolist())
    assert young.alarm_ready
    assert young.awaiting() == ""
    drift_parent = NumericDrift(features=("x",), designs=(1.0,), reference_size=1000, arl0=1e5)
    for v in rng.normal(size=1000):
        drift_parent.update({"x": float(v)})
    drift = NumericDrift(features=("x",), designs=(1.0,), reference_size=1000, arl0=1e5)
    for v in rng.normal(size=30):
        drift.update({"x": float(v)})
    assert drift.adopt_prior(drift_parent, 100.0)
    assert drift.awaiting() == "30 of 100 observations to chart on its parent's baseline"
