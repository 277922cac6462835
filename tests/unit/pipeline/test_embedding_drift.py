"""A drift that shows only in the input embeddings is paged by the model key's distance
charts (:class:`detectors.drift.EmbeddingDrift` with designs, at ``drift_levels``).

The KS window over 200 embeddings found these seeds' shift late or not at all (899 inputs
and none within 2,000 on the code before the charts); a segment key keeps the window test
alone (``streams.pipeline.detectorset._embedding``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from alerting.model import Labels, key_id
from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from detectors.drift import EmbeddingDrift
from streams.contract.decode import Coordinates
from streams.contract.events import InferenceInput
from streams.pipeline.detect import Detect
from streams.pipeline.detectorset import DetectorSet
from streams.pipeline.observation import Observation
from streams.settings import load_settings

T0 = datetime(2025, 1, 6, tzinfo=UTC)
SHIFT_AT = 6000
"""Input index from which the embeddings' mean moves (the references are full)."""


def _inputs(seed: int, n: int, dim: int, norm: float) -> list[Observation]:
    """Inputs of one model, one per second, with standard normal embeddings of ``dim``
    numbers (no other features) whose mean moves by ``norm`` in a random direction from
    input ``SHIFT_AT`` on, half of them from tenant ``t1``."""
    rng = np.random.default_rng(seed)
    shift = rng.standard_normal(dim)
    shift *= norm / np.linalg.norm(shift)
    out = []
    for i in range(n):
        embedding = rng.standard_normal(dim) + (shift if i >= SHIFT_AT else 0.0)
        event = InferenceInput.model_validate(
            {
                "request_id": f"r{i}",
                "timestamp": T0 + timedelta(seconds=i),
                "gen_ai.request.model": "m",
                "model_version": "v1",
                "embedding": [float(v) for v in embedding],
            }
        )
        tenant = "t1" if i % 2 else "t2"
        out.append(Observation(event, "m", "v1", {"tenant": tenant}, Coordinates("in", 0, i)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 2])
def test_an_embedding_only_drift_is_paged_by_the_distance_charts(seed: int) -> None:
    settings = load_settings(env={}).detection
    policy = load_policy(settings.alerting_policy)
    detect = Detect(settings, policy, load_playbooks(settings.playbooks_dir), {}, {})
    obs = _inputs(seed, 8000, 64, 2.0)
    triggers = [
        ev
        for k in range(0, len(obs), 500)
        for ev in detect.process(obs[k : k + 500])
        if ev.action == "trigger"
    ]
    assert triggers, "the drift went unpaged"
    first = triggers[0]
    at = round((first.emitted_at - T0).total_seconds())
    assert first.incident_type.startswith("input_drift"), first
    # Nothing before the shift; after it, within 600 inputs (measured 269 and 485).
    assert SHIFT_AT <= at < SHIFT_AT + 600, at
    live = detect.live_sets.live
    model_key = live[key_id(Labels(model="m"))].detectors["embedding"]
    segment_key = live[key_id(Labels(model="m", segment={"tenant": "t1"}))].detectors["embedding"]
    assert isinstance(model_key, EmbeddingDrift)
    assert isinstance(segment_key, EmbeddingDrift)
    assert model_key.designs
    assert not segment_key.designs


def test_a_model_keys_embedding_state_from_an_earlier_release_gets_the_charts() -> None:
    """A detector set saved before the distance charts (no ``designs`` in the embedding
    detector's parameters, no charts in its state) restores with this release's
    parameters for its level: a model key's charts start on the saved reference, a
    segment key's detector stays as it was."""
    settings = load_settings(env={}).detection
    policy = load_policy(settings.alerting_policy)
    detect = Detect(settings, policy, load_playbooks(settings.playbooks_dir), {}, {})
    obs = _inputs(4, 2500, 16, 0.0)
    for k in range(0, len(obs), 500):
        detect.process(obs[k : k + 500])
    live = detect.live_sets.live
    for labels, level, charted in (
        (Labels(model="m"), "model", True),
        (Labels(model="m", segment={"tenant": "t1"}), "segment", False),
    ):
        ds = live[key_id(labels)]
        data = ds.to_json()
        entry = data["d"]["embedding"]
        for key in ("shift", "designs"):
            entry["params"].pop(key, None)
        entry["state"].pop("charts", None)
        restored = DetectorSet.from_json(data, settings, level, ds.arl0)
        det = restored.detectors["embedding"]
        assert isinstance(det, EmbeddingDrift)
        assert bool(det.designs) is charted
        assert [c.ready for c in det._charts] == ([True] if charted else [])
        assert det.get_state()["fitted"] == entry["state"]["fitted"]
