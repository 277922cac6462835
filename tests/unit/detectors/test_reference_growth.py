"""Score charts' references keep learning at rest (``reference_growth``).

A warm-up unlike the traffic after it (the night's requests, or chance beyond the
estimated-parameter guard) made the mean charts alarm again hours after every resolve: in
the quality run, a summarizer's first 300 guardrail scores sat 0.28 standard deviations
(in normal scores) below the traffic that followed, and it raised four false incidents in
two days (docs/validation.md, "Stop 68").
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from bench.reference_growth import alarm_indices, evaluator_chart
from detectors.base import GROWTH_CHUNK
from detectors.score_shift import EvaluationScoreShift
from streams.detection_settings import DetectionSettings

R = 300


def _chart(growth: int, arl0: float = 1e6) -> EvaluationScoreShift:
    return evaluator_chart(growth, arl0)


def _skewed_warmup(seed: int, n: int) -> list[float]:
    """Guardrail-like scores whose first ``R`` come out low: the warm-up sits about 0.3
    standard deviations under the rest, as the quality run's summarizer did."""
    rng = np.random.default_rng(seed)
    xs = rng.beta(1.0, 12.0, n)
    xs[:R] *= 0.75
    return [float(v) for v in xs]


def test_a_warmup_unlike_the_traffic_after_it_stops_alarming_once_the_reference_grows() -> None:
    """Five such streams at the quality run's ARL0: the fixed reference alarms again and
    again to the end; the growing one at most twice a stream, and never once grown."""
    fixed, grown = [], []
    for seed in range(3, 8):
        xs = _skewed_warmup(seed, 8000)
        fixed += alarm_indices(_chart(1, 1e8), xs)
        det = _chart(4, 1e8)
        grown += alarm_indices(det, xs)
        assert det._stands_for >= 4 * R
        assert len(det._reference()) == R  # state and memory do not grow with it
    assert len(fixed) >= 30, fixed
    assert max(fixed) > 7000, fixed
    assert len(grown) <= 5, grown
    assert max(grown, default=0) < 2000, grown


def test_false_alarms_fall_and_delays_do_not_grow_with_a_growing_reference() -> None:
    """Clean normal streams at a short ARL0, and a 0.85 sd shift well after the warm-up."""
    false = {1: 0, 4: 0}
    delays: dict[int, list[int]] = {1: [], 4: []}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        clean = [float(v) for v in rng.normal(size=5000)]
        changed = [float(v) for v in rng.normal(size=4000)]
        changed[2500:] = [v + 0.85 for v in changed[2500:]]
        for growth in (1, 4):
            false[growth] += len(alarm_indices(_chart(growth, 3e4), clean))
            late = [i for i in alarm_indices(_chart(growth), changed) if i >= 2500]
            delays[growth].append(late[0] - 2500 if late else 1500)
    assert false[4] * 3 <= false[1], false
    assert np.mean(delays[4]) <= np.mean(delays[1]), delays


def test_a_change_that_alarms_while_the_reference_grows_is_not_learned() -> None:
    """An alarm drops the kept values from its change-point estimate on, and no value is
    kept while the change lasts (its recovery test does not read it as over): a shift
    that lasts keeps alarming instead of becoming the reference."""
    rng = np.random.default_rng(5)
    xs = [float(v) for v in rng.normal(size=3000)]
    xs[R + 40 :] = [v + 1.0 for v in xs[R + 40 :]]
    det = _chart(4)
    alarms = alarm_indices(det, xs)
    assert det._stands_for == R
    assert len(alarms) >= 10
    assert alarms[-1] > 2500


def test_an_alarm_drops_only_the_kept_values_of_its_excursion() -> None:
    det = _chart(4)
    alarm_indices(det, [float(v) for v in np.random.default_rng(6).normal(size=R)])
    kept = det._kept
    for n in range(R, R + 100):
        kept.add(0.0, n)
    kept.drop_from(R + 90)  # an alarm whose excursion began at observation R + 90
    for n in range(R + 120, R + 140):  # kept again after a gap
        kept.add(0.0, n)
    kept.drop_from(R + 50)  # a window reaching back over the gap
    assert len(kept) == 50
    assert kept.runs == [[R, 50]]


def test_a_held_chart_keeps_no_value_for_its_reference() -> None:
    """While a more general key alarms, the pipeline feeds a growing chart through
    ``update_settled`` (``learns``): it charts, and its reference takes none of it."""
    xs = [float(v) for v in np.random.default_rng(7).normal(size=2 * R)]
    det = _chart(4)
    alarm_indices(det, xs[:R])
    assert det.learns
    assert not det.learning
    for x in xs[R:]:
        det.update_settled(x)
    assert len(det._kept) == 0
    assert det._n == 2 * R  # every value was charted
    fixed = _chart(1)
    alarm_indices(fixed, xs[:R])
    assert not fixed.learns  # a fixed reference, once fitted, learns nothing


def test_a_growing_reference_survives_a_json_round_trip_mid_block() -> None:
    xs = _skewed_warmup(8, 2000)
    cut = R + 3 * GROWTH_CHUNK + 17  # kept values in full blocks and a partial one
    det = _chart(4)
    alarm_indices(det, xs[:cut])
    state = det.get_state()
    assert len(state["ext"]) == 3
    assert len(state["tail"]) == 17
    assert state["runs"] == [[R, cut - R]]
    restored = _chart(4)
    restored.set_state(json.loads(json.dumps(state)))
    assert alarm_indices(restored, xs[cut:]) == alarm_indices(det, xs[cut:])
    assert restored.get_state() == det.get_state()


def test_full_blocks_are_frozen_so_the_store_writes_them_once() -> None:
    det = _chart(4)
    alarm_indices(det, _skewed_warmup(9, R + 2 * GROWTH_CHUNK + 5))
    first = det.get_state()["ext"]
    det.update(0.05)
    assert all(a["v"] is b["v"] for a, b in zip(first, det.get_state()["ext"], strict=True))


@pytest.mark.parametrize("growth", [0, 65])
def test_the_setting_is_bounded(growth: int) -> None:
    with pytest.raises(ValueError, match="score_reference_growth"):
        DetectionSettings(score_reference_growth=growth)


def test_a_chart_built_with_growth_one_never_refits() -> None:
    det = _chart(1)
    alarm_indices(det, _skewed_warmup(4, 3000))
    state: dict[str, Any] = det.get_state()
    assert det._stands_for == R
    assert "ext" not in state
