"""Request sampling (``detection.sample_fractions``, :mod:`streams.pipeline.sampling`): a
busy model's detection sees a fixed fraction of its requests, whole, the same everywhere;
a critical output outside the sample still pages."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from streams.contract.decode import Coordinates, DeadLetter, decode
from streams.contract.events import InferenceOutput
from streams.devtools.scenario import Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.detect import Detect
from streams.pipeline.join import Joiner
from streams.pipeline.observation import Observation
from streams.pipeline.replay import REPLAY_LIMITS, Pipeline, replay_lines
from streams.pipeline.sampling import Sampler, request_draw
from streams.settings import ConfigError, Settings, load_settings
from tests.unit.pipeline.test_detect_state import _observations

FRACTION = 0.25


def _settings(fractions: dict[str, float]) -> Settings:
    return load_settings(env={}, overrides={"detection.sample_fractions": fractions})


def test_a_fraction_outside_zero_to_one_is_refused_with_the_models_name() -> None:
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match="support-chat"):
            _settings({"support-chat": bad})
    assert _settings({"support-chat": 1.0}).detection.sample_fractions == {"support-chat": 1.0}


def test_the_draw_is_uniform_and_the_same_in_every_process() -> None:
    draws = [request_draw(f"req-{i}") for i in range(40_000)]
    kept = sum(d < FRACTION for d in draws)
    # Binomial(40,000, 0.25): sd 87; 5 sd either side.
    assert abs(kept - 10_000) < 435, kept
    assert all(0.0 <= d < 1.0 for d in draws)
    # A keyed hash, not Python's salted hash(): another process with another hash seed
    # draws the same (workers and replays must agree on the sample).
    code = "from streams.pipeline.sampling import request_draw; print(request_draw('req-7'))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(other.stdout) == draws[7]


def test_every_event_of_a_request_is_kept_or_dropped_together() -> None:
    joiner = Joiner(_settings({"support-chat": FRACTION}).detection, {})
    full = Joiner(load_settings(env={}).detection, {})
    lines = Simulator(Scenario(seed=4, duration=timedelta(hours=1))).lines()
    ways: dict[str, set[bool]] = {}
    per_model: Counter[tuple[str, bool]] = Counter()
    for offset, line in enumerate(lines):
        coords = Coordinates("t", 0, offset)
        event = decode(line.encode(), coords, now=datetime.now(UTC), limits=REPLAY_LIMITS)
        assert not isinstance(event, DeadLetter)
        # (A critical output outside the sample goes on unsampled: not "kept" here.)
        kept = {
            o.event.request_id + o.event.event_type
            for o in joiner.process(event, coords)
            if o.sampled
        }
        for obs in full.process(event, coords):
            inside = obs.event.request_id + obs.event.event_type in kept
            ways.setdefault(obs.event.request_id, set()).add(inside)
            per_model[(obs.model, inside)] += 1
    # All of a request's events (input, output, feedback, evaluations) go the same way.
    assert ways
    assert all(len(v) == 1 for v in ways.values())
    chat_in, chat_out = per_model[("support-chat", True)], per_model[("support-chat", False)]
    assert 0.15 < chat_in / (chat_in + chat_out) < 0.35, (chat_in, chat_out)
    # Other models are untouched, and the dropped ones are counted.
    assert any(model != "support-chat" for model, _ in per_model)
    assert all(inside for (model, inside) in per_model if model != "support-chat")
    assert joiner.stats.unsampled == chat_out


def test_a_critical_output_outside_the_sample_still_pages_and_feeds_nothing_else() -> None:
    settings = load_settings(env={})
    det = settings.detection
    obs = _observations(400)
    output = next(o for o in obs if isinstance(o.event, InferenceOutput))
    assert isinstance(output.event, InferenceOutput)
    # A request id outside a small sample of its model.
    rid = next(f"outside-{i}" for i in range(1000) if request_draw(f"outside-{i}") >= 0.01)
    critical = dataclasses.replace(
        output,
        version="v-critical",
        segment={"tenant": "nobody", "locale": "xx-XX"},
        event=output.event.model_copy(
            update={
                "request_id": rid,
                "moderation": {det.critical_categories[0]: 0.999},
                "prompt_injection": None,
            }
        ),
    )
    sampled = _settings({output.model: 0.01}).detection
    sampler = Sampler(sampled)
    kept = sampler.keep(critical)
    assert kept is not None
    assert not kept.sampled
    assert Observation.from_json(kept.to_json()) == kept  # survives the by-model hand-off
    ordinary = dataclasses.replace(
        critical, event=critical.event.model_copy(update={"moderation": {"toxicity": 0.9}})
    )
    assert sampler.keep(ordinary) is None

    detect = Detect(
        sampled, load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir), {}, {}
    )
    events = detect.process([*obs, kept])
    triggers = [e for e in events if e.action == "trigger"]
    assert [e.incident_type.split(":")[0] for e in triggers] == ["critical_event"]
    # Its page names its version and segment, as a critical output's in the sample does
    # (test_critical_labels), and carries no fraction: the critical test sees them all.
    labels = triggers[0].labels
    assert labels.version == "v-critical"
    assert labels.segment == {k: v for k, v in critical.segment.items() if k in det.segment_labels}
    assert "sample_fraction" not in triggers[0].evidence.signal.details
    # Only the model key's critical-event test saw it: its version's and segments' keys
    # (read, empty, by the page's localization) were fed nothing and counted no traffic.
    for kid, ds in detect.live_sets.live.items():
        if "v-critical" in kid or "xx-XX" in kid or "nobody" in kid:
            assert (ds.level, ds.trackers, ds.traffic) == (ds.level, {}, 0.0), kid
    model_set = next(
        ds
        for kid, ds in detect.live_sets.live.items()
        if ds.level == "model" and kid.startswith(output.model + "|")
    )
    assert model_set.trackers["critical"].n == 1 + sum(
        1 for o in obs if isinstance(o.event, InferenceOutput) and o.model == output.model
    )
    harm = model_set.trackers.get("harm")
    assert harm is not None
    assert harm.n == model_set.trackers["critical"].n - 1


def test_replay_detects_on_the_sample_and_its_incidents_say_so() -> None:
    """A toxicity spike on a model sampled at a half: detected, its signal marked with the
    fraction its counts are of, and every observation either detected or counted."""
    noon = datetime(2025, 1, 6, 12, tzinfo=UTC)
    spike = Injection(
        type="toxicity_spike",
        start=timedelta(minutes=45),
        duration=timedelta(hours=1),
        strength=10,
        scope={"model": "support-chat"},
    )
    scenario = Scenario(seed=3, start=noon, duration=timedelta(hours=1.5), injections=[spike])
    lines = [line.encode() for line in Simulator(scenario).lines()]
    joiner = Joiner(load_settings(env={}).detection, {})
    every = 0
    for offset, line in enumerate(lines):
        coords = Coordinates("t", 0, offset)
        event = decode(line, coords, now=datetime.now(UTC), limits=REPLAY_LIMITS)
        assert not isinstance(event, DeadLetter)
        every += len(joiner.process(event, coords))
    settings = _settings({"support-chat": 0.5})
    part = Pipeline(settings)
    result = replay_lines(lines, settings, pipeline=part)
    assert result.events == len(lines)  # every line is still read, decoded and joined
    dropped, detected = part.joiner.stats.unsampled, part.detect.stats.observations
    assert detected + dropped == every
    assert 0.2 * every < dropped < 0.5 * every  # half of support-chat's, the bulk of traffic
    triggers = [e for e in result.incidents if e.action == "trigger"]
    toxic = [e for e in triggers if e.incident_type.startswith("toxicity_rate")]
    assert toxic, [e.incident_type for e in triggers]
    assert all(e.evidence.signal.details["sample_fraction"] == 0.5 for e in toxic)
    assert all(spike.start <= e.emitted_at - noon <= spike.start + spike.duration for e in toxic)


def test_feedback_that_waits_for_its_output_follows_its_requests_sample() -> None:
    """Feedback before its output waits in the join; released with the output, it is
    kept or dropped with it."""
    from tests.unit.pipeline.test_join import T0, _c, _feedback, _output

    joiner = Joiner(_settings({"chat": FRACTION}).detection, {})
    inside = next(f"r{i}" for i in range(100) if request_draw(f"r{i}") < FRACTION)
    outside = next(f"r{i}" for i in range(100) if request_draw(f"r{i}") >= FRACTION)
    got: dict[str, list[str]] = {}
    for n, rid in enumerate((inside, outside)):
        assert joiner.process(_feedback(rid, T0), _c(2 * n)) == []  # parked
        released = joiner.process(_output(rid, T0 + timedelta(seconds=5)), _c(2 * n + 1))
        got[rid] = [o.event.event_type for o in released]
    assert joiner.stats.parked == 2
    assert got == {inside: ["output", "feedback"], outside: []}
    assert joiner.stats.unsampled == 2
