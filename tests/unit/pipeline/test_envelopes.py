"""Internal-topic envelopes and the partition a request id lives in."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from streams.contract.decode import Coordinates
from streams.contract.events import InferenceOutput
from streams.pipeline.observation import Observation
from streams.runtime.agents import ENVELOPE_BYTES, envelopes, home_partition, unwrap


def _obs(i: int) -> Observation:
    event = InferenceOutput.model_validate(
        {
            "request_id": f"r{i}",
            "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
            "model": "m",
            "model_version": "v1",
            "moderation": {"toxicity": 0.01},
            "confidence": 0.5,
            "segment": {"tenant": "acme"},
        }
    )
    return Observation(event, "m", "v1", {"tenant": "acme"}, Coordinates("t", 1, i))


def test_home_partition_is_kafkas_default_partitioner() -> None:
    """The partition kafka-python's producer (the SDK) picks for a key, computed by an
    independent murmur2 implementation."""
    rng = random.Random(5)
    for n in (1, 2, 4, 7, 12):
        for _ in range(200):
            key = rng.randbytes(rng.randint(1, 40))
            assert home_partition(key, n) == (kafka_python_murmur2(key) & 0x7FFFFFFF) % n


def test_envelopes_round_trip_in_order_and_stay_under_the_size() -> None:
    observations = [_obs(i) for i in range(2000)]
    packed = list(envelopes(observations))
    assert len(packed) > 1
    assert all(len(p) <= ENVELOPE_BYTES for p in packed)
    back = [obs for p in packed for obs in unwrap(p)]
    assert [o.coords.offset for o in back] == list(range(2000))
    assert back[7].event == observations[7].event
    assert back[7].segment == {"tenant": "acme"}


def test_a_single_observation_as_an_earlier_version_wrote_it_unwraps() -> None:
    obs = _obs(3)
    legacy = json.dumps(obs.to_json()).encode()
    assert unwrap(legacy) == [obs]


def test_no_observations_make_no_envelope() -> None:
    assert list(envelopes([])) == []


def test_text_stays_utf8_in_an_envelope() -> None:
    """Escaped (``\\uXXXX``), a record of emoji text tripled in size, past what the
    producer sends; an envelope holds it at its own size, and reads back the same."""
    event = InferenceOutput.model_validate(
        {
            "request_id": "big",
            "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
            "model": "m",
            "model_version": "v1",
            "output_text": "\U0001f600" * 50_000,
        }
    )
    obs = Observation(event, "m", "v1", {}, Coordinates("t", 1, 0))
    [envelope] = envelopes([obs])
    assert len(envelope) < 250_000  # 50,000 emoji of 4 bytes, not 12 (two escapes)
    assert unwrap(envelope) == [obs]
