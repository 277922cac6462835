"""The weekly false-page budget: per-test run lengths in time, in events from each key's
traffic, retargeted without losing evidence, split in one place (issue #19)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from detectors.adaptive_rate import AdaptiveBernoulliCusum
from detectors.confidence import ConfidenceShift
from detectors.coverage import HarmRate
from detectors.drift import NumericDrift
from detectors.rate import BernoulliCusum
from streams.contract.decode import Coordinates
from streams.contract.events import InferenceOutput
from streams.detection_settings import DetectionSettings
from streams.pipeline import budget, detectorset
from streams.pipeline.cardinality import CardinalityFold
from streams.pipeline.detectorset import FACTORIES, DetectorSet, per_detector_arl0, per_test_seconds
from streams.pipeline.live_sets import LiveSets
from streams.pipeline.observation import Observation

S = DetectionSettings()
T0 = datetime(2025, 1, 6, tzinfo=UTC)


def _obs(i: int, at: float, **fields: object) -> Observation:
    event = InferenceOutput.model_validate(
        {
            "request_id": f"r{i}",
            "timestamp": T0 + timedelta(seconds=at),
            "model": "m",
            "model_version": "v1",
            **fields,
        }
    )
    return Observation(event, "m", "v1", {}, Coordinates("t", 0, i))


def test_one_tests_run_length_in_time_shares_the_week_over_keys_and_tests() -> None:
    seconds = per_test_seconds(S, keys=10)
    # 10 live keys share the week as 16 (the count moves run lengths when it doubles).
    assert seconds == pytest.approx(budget.WEEK_S * 16 * detectorset.tests_per_level(S) / 1.0)
    # K keys x T tests, each alarming once per ``seconds``: within the budget, exactly it
    # at a power of two.
    assert 10 * detectorset.tests_per_level(S) * budget.WEEK_S / seconds < 1.0
    assert per_test_seconds(S, keys=16) == seconds
    assert per_test_seconds(S, keys=17) == pytest.approx(2 * seconds)
    twice = per_test_seconds(DetectionSettings(false_pages_per_week=2.0), keys=10)
    assert twice == pytest.approx(seconds / 2)


def test_workers_share_the_service_budget_by_the_detection_partitions_they_own() -> None:
    """Each worker counts only its own keys: a worker owning 2 of 8 partitions gives its
    keys a quarter of the weekly budget, so all workers together spend it once."""
    sets = LiveSets(S, {}, CardinalityFold(10, 10), 1e4, flush_interval_s=0.0, clock=lambda: 0.0)
    sets.get("m|*|", "model", {})
    whole = sets.budget_seconds()
    assert whole == per_test_seconds(S, keys=1)
    sets.set_share(2, 8)
    assert sets.budget_seconds() == pytest.approx(4 * whole)
    assert per_test_seconds(S, keys=1, share=0.25) == pytest.approx(4 * whole)
    sets.set_share(0, 8)  # owns no detection partition: runs no detector, keeps 1
    assert sets.budget_seconds() == whole
    with pytest.raises(ValueError, match="share"):
        budget.seconds_per_test(1.0, 1, 1, share=0.0)


def test_the_grid_rounds_up_and_hysteresis_ignores_a_single_step() -> None:
    for x in (1e4, 1.234e6, 7.7e8):
        g = budget.on_grid(x)
        assert x <= g < x * 2**budget.GRID * (1 + 1e-12)
    assert budget.on_grid(2.0**20) == 2.0**20
    step = 2**budget.GRID
    assert not budget.moved(1e6, 1e6 * step)
    assert budget.moved(1e6, 1e6 * step * step)
    assert budget.moved(1e6, 1e6 / step / step)


def test_a_keys_run_length_in_events_follows_its_rate() -> None:
    slow, fast = DetectorSet(S, "model", 1e4), DetectorSet(S, "model", 1e4)
    for i in range(4000):
        slow.see_traffic(i * 10.0)  # 0.1 events/s
        fast.see_traffic(i * 0.1)  # 10 events/s
    assert slow.rate() == pytest.approx(0.1, rel=0.02)
    assert fast.rate() == pytest.approx(10.0, rel=0.02)
    seconds = 1e7
    slow.set_budget(seconds)
    fast.set_budget(seconds)
    assert slow.arl0 == budget.on_grid(slow.rate() * seconds)
    assert fast.arl0 / slow.arl0 == pytest.approx(100, rel=0.2)
    # The events budget (when set) is a floor: the stricter of the two wins.
    slow.set_budget(seconds, floor_events=1e9)
    assert slow.arl0 == budget.on_grid(1e9)


def test_per_million_is_optional_and_a_floor_when_set() -> None:
    assert per_detector_arl0(S) == budget.MIN_ARL0
    old = DetectionSettings(false_alarms_per_million_events=0.5)
    levels = 2 + len(old.segment_labels)
    assert per_detector_arl0(old) == pytest.approx(
        1e6 * levels * detectorset.tests_per_level(old) / 0.5
    )


def test_settings_validate_the_weekly_budget() -> None:
    with pytest.raises(ValidationError):
        DetectionSettings(false_pages_per_week=0)
    with pytest.raises(ValidationError):
        DetectionSettings.model_validate({"false_pages_per_weak": 1.0})


def test_each_test_of_a_multi_test_detector_runs_at_the_per_test_arl0() -> None:
    """The budget splits once: harm's 13 tests, confidence's 3, one adaptive test each run
    at ``ds.arl0`` (before, harm's ran at 13x and confidence's at 3x)."""
    ds = DetectorSet(S, "model", 2.0**20)
    harm = FACTORIES["harm"].make(ds, ())
    assert isinstance(harm, HarmRate)
    assert harm.arl0 * harm.tests == pytest.approx(ds.arl0)
    conf = FACTORIES["confidence"].make(ds, ())
    assert isinstance(conf, ConfidenceShift)
    assert conf.arl0 * 3 == pytest.approx(ds.arl0)
    inj = FACTORIES["injection"].make(ds, ())
    assert isinstance(inj, AdaptiveBernoulliCusum)
    assert inj.arl0 == pytest.approx(ds.arl0)


def test_retargeting_keeps_the_cusum_statistic_and_changes_only_the_threshold() -> None:
    rng = np.random.default_rng(3)
    det = BernoulliCusum(arl0=1e5, warmup=1000)
    det.update_many(rng.random(20_000) < 0.01)
    det.update_many([True] * 3)  # some evidence
    before = det.get_state()
    assert before["s"] > 0
    det.set_arl0(1e7)
    after = det.get_state()
    assert after["s"] == before["s"]
    assert after["baseline"] == before["baseline"]
    assert after["h"] > before["h"]
    fresh = BernoulliCusum(p0=before["baseline"], arl0=1e7)
    assert fresh.threshold < det.threshold * 1.01  # same solve up to the baseline's bound
    det.set_arl0(1e5)
    assert det.get_state()["h"] == before["h"]  # back to the cached threshold


def test_every_rate_chart_and_drift_test_can_be_retargeted() -> None:
    rng = np.random.default_rng(4)
    conf = ConfidenceShift(arl0=1e4, reference_size=200)
    for x in rng.normal(0.8, 0.1, 300):
        conf.update(float(x))
    h = conf.get_state()["h"][0][0]
    conf.set_arl0(1e6)
    assert conf.get_state()["h"][0][0] > h
    drift = NumericDrift(features=("a",), arl0=1e4, reference_size=200, window=50)
    drift.set_arl0(1e6)
    assert drift.alpha == pytest.approx(drift._stride / 1e6)
    harm = HarmRate(max_categories=2, arl0=1e4, warmup=200)
    harm.update_columns({"a": rng.random(5000) < 0.05})
    harm.set_arl0(1e6)
    assert all(budget.retarget(d, 1e6) for d in (conf, drift, harm))
    assert not budget.retarget(object(), 1e6)


def test_a_key_retargets_its_detectors_as_traffic_changes_without_a_reset() -> None:
    rng = np.random.default_rng(5)
    ds = DetectorSet(S, "model", budget.MIN_ARL0)
    seconds = 5e4  # run lengths of 5e4 events, then ~3e5 (cheap threshold solves)
    t = 0.0
    for i in range(6000):
        t += 1.0  # 1 event/s
        ds.see_traffic(t)
        ds.set_budget(seconds)
        ds.update(_obs(i, t, prompt_injection=float(rng.random() < 0.02)))
    det = ds.detectors["injection"]
    assert isinstance(det, AdaptiveBernoulliCusum)
    first, n = det.arl0, det.get_state()["parts"][0]["n"]
    for i in range(6000, 30_000):
        t += 0.02  # 50 events/s: the run length in events grows ~50x
        ds.see_traffic(t)
        ds.set_budget(seconds)
        ds.update(_obs(i, t, prompt_injection=float(rng.random() < 0.02)))
    assert det is ds.detectors["injection"]  # the same detector: evidence kept
    assert det.get_state()["parts"][0]["n"] == n + 24_000
    # Eight minutes into the new rate the one-hour EWMA has moved part of the way (~6x).
    assert det.arl0 > 4 * first
    assert math.isclose(det.arl0, ds.arl0)


def test_detector_state_round_trips_the_rate_it_was_calibrated_at() -> None:
    det = BernoulliCusum(arl0=1e5, warmup=500)
    det.update_many(np.random.default_rng(6).random(3000) < 0.02)
    state = det.get_state()
    copy = BernoulliCusum(arl0=1e5, warmup=500)
    copy.set_state(state)
    copy.set_arl0(1e6)
    det.set_arl0(1e6)
    assert copy.get_state() == det.get_state()
    ds = DetectorSet(S, "model", 1e4)
    ds.see_traffic(100.0)
    again = DetectorSet.from_json(ds.to_json(), S, "model", 1e4)
    assert again.traffic_t0 == 100.0
