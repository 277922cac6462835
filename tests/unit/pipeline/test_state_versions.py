"""Stored state of another version is relearned, logged once and counted, never a crash."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerting.model import Labels
from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from streams.contract.decode import Coordinates
from streams.contract.events import Feedback, InferenceOutput
from streams.pipeline import state
from streams.pipeline.detect import Detect
from streams.pipeline.join import Joiner
from streams.pipeline.keys import key_id
from streams.pipeline.observation import Observation
from streams.settings import load_settings

T0 = datetime(2025, 1, 6, tzinfo=UTC)


def _output(i: int) -> InferenceOutput:
    return InferenceOutput(
        request_id=f"r{i}",
        timestamp=T0 + timedelta(seconds=i),
        model="m",
        model_version="v1",
        confidence=0.9,
    )


def _detect(detectors: dict[str, Any], engines: dict[str, Any]) -> Detect:
    det = load_settings(env={}).detection
    return Detect(
        det,
        load_policy(det.alerting_policy),
        load_playbooks(det.playbooks_dir),
        detectors,
        engines,
    )


def test_stamped_state_round_trips_and_old_state_is_relearned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    detectors: dict[str, Any] = {}
    engines: dict[str, Any] = {}
    obs = [Observation(_output(i), "m", "v1", {}, Coordinates("o", 0, i)) for i in range(50)]
    _detect(detectors, engines).process(obs)
    kid = key_id(Labels(model="m"))
    assert detectors[kid][state.VERSION_KEY] == state.STATE_VERSIONS["detectors"]
    assert engines["m"][state.VERSION_KEY] == state.STATE_VERSIONS["engine"]
    n_before = detectors[kid]["t"]["confidence"]["n"]

    # The current version restores: the key keeps counting where it was.
    _detect(detectors, engines).process(obs[:1])
    assert detectors[kid]["t"]["confidence"]["n"] == n_before + 1

    # A value from an older release (no version) or a broken one is relearned, not fatal.
    state.RESETS.clear()
    old = {k: v for k, v in detectors[kid].items() if k != state.VERSION_KEY}
    detectors[kid] = old
    engines["m"] = {"version": 999}
    with caplog.at_level(logging.WARNING, logger="streams.pipeline.state"):
        _detect(detectors, engines).process(obs[:2])
    assert detectors[kid]["t"]["confidence"]["n"] == 2  # a fresh baseline
    assert state.RESETS["detectors"] >= 1
    assert state.RESETS["engine"] == 1
    warnings = [r for r in caplog.records if "relearning" in r.getMessage()]
    assert len(warnings) == 2  # once per store, not once per key


def test_join_entries_of_another_version_read_as_absent() -> None:
    settings = load_settings(env={}).detection
    store: dict[str, Any] = {}
    joiner = Joiner(settings, store)
    joiner.process(_output(1), Coordinates("o", 0, 1))
    assert store["o:r1"][state.VERSION_KEY] == state.STATE_VERSIONS["join"]
    fb = Feedback(request_id="r1", timestamp=T0 + timedelta(seconds=2), vote="down")
    assert [o.version for o in joiner.process(fb, Coordinates("f", 0, 1))] == ["v1"]

    store["o:r2"] = {"m": "m", "v": "v1", "s": {}, "t": T0.timestamp(), "part": 0}  # unversioned
    fb2 = Feedback(request_id="r2", timestamp=T0 + timedelta(seconds=3), vote="down")
    assert Joiner(settings, store).process(fb2, Coordinates("f", 0, 2)) == []  # parked


def test_stored_bytes_are_compressed_and_plain_json_still_reads() -> None:
    detectors: dict[str, Any] = {}
    obs = [Observation(_output(i), "m", "v1", {}, Coordinates("o", 0, i)) for i in range(400)]
    _detect(detectors, {}).process(obs)
    value = detectors[key_id(Labels(model="m"))]
    raw = state.encode(value)
    plain = json.dumps(value).encode()
    assert raw.startswith(state.COMPRESSED)
    assert len(raw) < len(plain) / 3
    assert state.decode(raw) == value
    assert state.decode(plain) == value  # a record written before compression
    with pytest.raises(ValueError, match="does not decompress"):
        state.decode(state.COMPRESSED + b"not zlib")


def test_state_read_back_as_bytes_restores_and_broken_bytes_are_relearned() -> None:
    """The worker's tables read their changelog and RocksDB values back as the stored
    bytes (``StateCodec``); the pipeline decodes them when it uses the key."""
    detectors: dict[str, Any] = {}
    engines: dict[str, Any] = {}
    obs = [Observation(_output(i), "m", "v1", {}, Coordinates("o", 0, i)) for i in range(50)]
    _detect(detectors, engines).process(obs)
    kid = key_id(Labels(model="m"))
    n_before = detectors[kid]["t"]["confidence"]["n"]
    stored = {kid: state.encode(detectors[kid])}
    stored_engines = {"m": state.encode(engines["m"])}
    _detect(stored, stored_engines).process(obs[:1])
    assert stored[kid]["t"]["confidence"]["n"] == n_before + 1  # restored, then written
    assert stored_engines["m"][state.VERSION_KEY] == state.STATE_VERSIONS["engine"]

    state.RESETS.clear()
    broken = {kid: state.COMPRESSED + b"not zlib"}
    _detect(broken, {}).process(obs[:2])
    assert broken[kid]["t"]["confidence"]["n"] == 2  # a fresh baseline
    assert state.RESETS["detectors"] == 1
