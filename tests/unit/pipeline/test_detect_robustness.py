"""The detect stage on inputs it meets in a long-running worker: an observation whose
processing raises is set aside and the batch goes on (the worker dead-letters it: over an
internal topic, a batch that failed would be acked by faust with nothing handled; the
failure is injected, the service has no input known to raise); keys that idled out;
events older than the last."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from streams.contract.decode import Coordinates
from streams.contract.events import InferenceOutput
from streams.pipeline.detect import Detect, logged_nth
from streams.pipeline.detectorset import DetectorSet
from streams.pipeline.observation import Observation
from streams.settings import load_settings
from tests.unit.pipeline.test_detect_state import _observations

T0 = datetime(2025, 1, 6, tzinfo=UTC)


def _detect(isolate: bool) -> Detect:
    det = load_settings(env={}).detection
    policy, playbooks = load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir)
    return Detect(det, policy, playbooks, {}, {}, isolate_failures=isolate)


def _batch() -> tuple[list[Observation], Observation]:
    """400 observations, the 200th of which raises, then a critical output."""
    obs = _observations(400)
    output = next(o for o in obs if isinstance(o.event, InferenceOutput))
    assert isinstance(output.event, InferenceOutput)
    category = load_settings(env={}).detection.critical_categories[0]
    critical = dataclasses.replace(
        output,
        event=output.event.model_copy(
            update={"moderation": {category: 0.999}, "prompt_injection": None}
        ),
    )
    return [*obs, critical], obs[200]


def _raising_on(bad: Observation, monkeypatch: pytest.MonkeyPatch) -> None:
    real = DetectorSet.update

    def update(self: DetectorSet, obs: Observation, *args: object, **kwargs: object) -> object:
        if obs is bad:
            raise ValueError("injected")
        return real(self, obs, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DetectorSet, "update", update)


def test_an_observation_that_raises_is_set_aside_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch, bad = _batch()
    _raising_on(bad, monkeypatch)
    detect = _detect(isolate=True)
    events = detect.process(batch)
    [failure] = detect.take_failures()
    assert failure.observation is bad
    assert failure.error == "ValueError: injected"
    assert detect.take_failures() == []
    assert (detect.stats.observations, detect.stats.failed) == (401, 1)
    # what came after it was detected, and the batch's state written back
    assert any(e.incident_type.startswith("critical_event") for e in events)
    assert detect.detector_store
    assert detect.engine_store


def test_without_isolation_the_failure_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    batch, bad = _batch()
    _raising_on(bad, monkeypatch)
    with pytest.raises(ValueError, match="injected"):
        _detect(isolate=False).process(batch)


def _output(
    i: int, t: datetime, tenant: str, moderation: dict[str, float] | None = None
) -> Observation:
    event = InferenceOutput.model_validate(
        {
            "request_id": f"r{i}",
            "timestamp": t,
            "model": "chat",
            "model_version": "v1",
            "segment": {"tenant": tenant},
            "confidence": 0.9,
            "moderation": moderation or {},
        }
    )
    return Observation(event, "chat", "v1", {"tenant": tenant}, Coordinates("t", 0, i))


def test_an_expired_key_is_not_made_again_by_a_localization() -> None:
    """A localization reads every key of its model; one that idled out is not rebuilt,
    empty, in the store, where nothing would expire it again."""
    det = load_settings(env={}).detection.model_copy(update={"idle_key_hours": 1.0})
    store: dict[str, object] = {}
    policy, playbooks = load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir)
    detect = Detect(det, policy, playbooks, store, {})
    old = "chat|*|tenant=old-tenant"
    detect.process([_output(0, T0, "old-tenant")])
    assert old in store
    detect.process([_output(1, T0 + timedelta(hours=2), "acme")])
    assert old not in store  # idle for an hour of event time
    critical = {det.critical_categories[0]: 0.999}
    events = detect.process([_output(2, T0 + timedelta(hours=2, minutes=1), "acme", critical)])
    assert any(e.incident_type.startswith("critical_event") for e in events)
    assert old not in store
    assert not detect.live_sets.known(old)


def test_a_batch_of_older_events_does_not_turn_the_models_clock_back() -> None:
    """The wall-clock tick ages a model's engine from the latest event time processed."""
    det = load_settings(env={}).detection
    policy, playbooks = load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir)
    detect = Detect(det, policy, playbooks, {}, {}, wall_clock=lambda: 1000.0)
    detect.process([_output(0, T0 + timedelta(hours=1), "acme")])
    detect.process([_output(1, T0, "acme")])  # a lagging partition's older event
    assert detect._seen["chat"][0] == T0 + timedelta(hours=1)


def test_a_recurring_failure_is_logged_at_powers_of_two() -> None:
    assert [n for n in range(0, 40) if logged_nth(n)] == [1, 2, 4, 8, 16, 32]
