"""Growing score references in a key's detector set: saved sets, holds and young segments
(``detection.score_reference_growth``, :mod:`detectors.confidence`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from detectors.confidence import ConfidenceShift
from detectors.score_shift import EvaluationScoreShift
from streams.contract.decode import Coordinates
from streams.contract.events import InferenceOutput
from streams.detection_settings import DetectionSettings
from streams.pipeline.detectorset import SCORE_DESIGNS, DetectorSet
from streams.pipeline.observation import Observation
from streams.settings import load_settings

T0 = datetime(2025, 1, 6, tzinfo=UTC)
WARMUP = 200


def _settings() -> DetectionSettings:
    return load_settings(env={}, overrides={"detection.warmup_events": WARMUP}).detection


def _outputs(seed: int, n: int, first: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    return [
        Observation(
            InferenceOutput(
                request_id=f"r{i}",
                timestamp=T0 + timedelta(seconds=i),
                model="m",
                model_version="v1",
                confidence=float(np.clip(rng.normal(0.8, 0.05), 0.0, 1.0)),
            ),
            "m",
            "v1",
            {},
            Coordinates("o", 0, i),
        )
        for i in range(first, first + n)
    ]


def _confidence(ds: DetectorSet) -> ConfidenceShift:
    det = ds.detectors["confidence"]
    assert isinstance(det, ConfidenceShift)
    return det


def test_a_set_saved_before_references_grew_restores_growing() -> None:
    """No ``reference_growth`` in the saved parameters and no growth in the state (an
    earlier release's record): the key takes this release's setting and its confidence
    reference, read from the distribution test, grows."""
    settings = _settings()
    ds = DetectorSet(settings, "model", 1e6)
    for obs in _outputs(1, WARMUP + 10):
        ds.update(obs)
    data = ds.to_json()
    entry = data["d"]["confidence"]
    entry["params"].pop("reference_growth")
    for key in ("grown", "ext", "tail", "runs"):
        entry["state"].pop(key, None)
    restored = DetectorSet.from_json(data, settings, "model", 1e6)
    det = _confidence(restored)
    assert det.reference_growth == settings.score_reference_growth == 4
    for obs in _outputs(2, 3 * WARMUP, first=WARMUP + 10):
        restored.update(obs)
    assert det._stands_for > WARMUP
    assert len(det._reference()) == WARMUP


def test_a_key_held_by_its_models_alarm_grows_nothing() -> None:
    """While a more general key alarms, a growing reference is held as a learning one
    is: its values are charted, none is kept for the reference."""
    settings = _settings()
    ds = DetectorSet(settings, "version", 1e6)
    for obs in _outputs(3, WARMUP):
        ds.update(obs)
    det = _confidence(ds)
    for obs in _outputs(4, 3 * WARMUP, first=WARMUP):
        ds.update(obs, hold=frozenset({"confidence"}))
    assert det._stands_for == WARMUP
    assert len(det._kept) == 0
    assert det._n == 4 * WARMUP
    for obs in _outputs(5, 3 * WARMUP, first=4 * WARMUP):
        ds.update(obs)
    assert det._stands_for > WARMUP  # released, it grows


def test_a_young_segment_borrows_the_guard_of_what_its_parent_stands_for() -> None:
    """A parent whose reference grew has a narrower guard than its size alone gives: a
    young segment adopting its shape widens the margin for the values the parent
    stands for, not for the parent's reference size."""
    rng = np.random.default_rng(6)
    params = {
        "metric": "judge/score",
        "arl0": 1e6,
        "reference_size": 300,
        "shift": 0.5,
        "designs": SCORE_DESIGNS,
        "reference_growth": 4,
    }
    parent = EvaluationScoreShift(**params)
    for v in rng.normal(size=3000):
        parent.update(float(v))
    assert parent._stands_for >= 1200
    child = EvaluationScoreShift(**params)
    for v in rng.normal(size=60):
        child.update(float(v))
    assert child.adopt_prior(parent, 60)
    assert child._prior is not None
    assert child._prior.size == parent._stands_for
