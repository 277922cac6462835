"""Offline replay runs the pipeline over simulator files: deterministic, finds injections."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.devtools.scenario import DEFAULT_STRENGTH, Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.detectorset import per_detector_arl0
from streams.pipeline.replay import Pipeline, ReplayResult, replay_lines
from streams.settings import Settings, load_settings
from tests.scenarios import toxicity_spike_scenario


def _lines(scenario: Scenario) -> list[bytes]:
    return [line.encode() for line in Simulator(scenario).lines()]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(env={})


@pytest.fixture(scope="module")
def toxic_stream() -> list[bytes]:
    scenario = toxicity_spike_scenario()
    return _lines(scenario)


def test_replay_finds_the_toxicity_spike_with_the_right_labels(
    settings: Settings, toxic_stream: list[bytes]
) -> None:
    result = replay_lines(toxic_stream, settings)
    triggers = [e for e in result.incidents if e.action == "trigger"]
    assert triggers, "no incident for an 8x toxicity spike"
    first = triggers[0]
    assert first.incident_type.startswith("toxicity_rate")
    assert first.labels.model == "support-chat"
    assert all(e.replay for e in result.incidents)
    # Detected within 45 minutes of event time after the injection started at 02:00.
    assert first.last_seen.hour == 2
    assert first.last_seen.minute < 45
    assert {e.labels.model for e in triggers} == {"support-chat"}
    assert result.dead_letters == 0


def test_a_callers_pipeline_shows_each_keys_run_length_from_the_weekly_budget(
    settings: Settings, toxic_stream: list[bytes]
) -> None:
    """What bench/quality.py gives its oracle: the key's per-test ARL0, from the weekly
    false-pages budget and the key's traffic, longer than the events floor."""
    pipeline = Pipeline(settings)
    replay_lines(toxic_stream[:8000], settings, pipeline=pipeline)
    arl0 = pipeline.detect.live_sets.key_arl0("support-chat|*|")
    assert arl0 is not None
    assert arl0 > per_detector_arl0(settings.detection)  # the weekly budget, not the floor
    assert pipeline.detect.live_sets.key_arl0("no-such-model|*|") is None


def test_replay_is_deterministic_byte_for_byte(
    settings: Settings, toxic_stream: list[bytes]
) -> None:
    outputs = []
    for _ in range(2):
        sink = io.StringIO()
        replay_lines(toxic_stream[:8000], settings, sink=sink)
        outputs.append(sink.getvalue())
    assert outputs[0] == outputs[1]


def test_bad_lines_are_counted_and_written_to_the_dead_letter_file(settings: Settings) -> None:
    good = _lines(Scenario(seed=1, duration=timedelta(minutes=10), events_per_hour=600))
    lines = [b"{not json", good[0], b'{"event_type": "output"}', *good[1:], b"[1,2]"]
    dead = io.StringIO()
    result = replay_lines(lines, settings, dead_letters=dead)
    assert result.dead_letters == 3
    assert result.events == len(good)
    letters = [json.loads(line) for line in dead.getvalue().splitlines()]
    assert [d["offset"] for d in letters] == [0, 2, len(lines) - 1]
    assert letters[0]["reason"] == "not_json"


def test_cli_replay_reads_stdin_style_paths_and_prints_a_summary(
    tmp_path: Path, toxic_stream: list[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(toxic_stream[:3000]) + b"\n")
    out = tmp_path / "incidents.jsonl"
    assert main(["replay", "--input", str(src), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "3,000 lines, 3,000 events, 0 dead letters" in err
    assert "lines/s" in err
    assert out.exists()
    assert main(["replay", "--input", str(tmp_path / "missing.jsonl")]) == 2


@pytest.mark.slow
def test_incidents_do_not_depend_on_the_batch_size(settings: Settings) -> None:
    """One input replayed as single-observation batches and as large batches gives the same
    incident events, field for field (the worker's batch sizes are whatever a fetch
    brought, so detection must not depend on them)."""
    lines = _lines(toxicity_spike_scenario())
    single = replay_lines(lines, settings, batch=1)
    large = replay_lines(lines, settings, batch=5000)
    assert single.incidents, "the scenario should page"
    assert [e.model_dump_json() for e in single.incidents] == [
        e.model_dump_json() for e in large.incidents
    ]


def _one_hour_of(kind: str, settings: Settings, strength: float, hours: int) -> ReplayResult:
    """Replay ``hours`` of the default scenario with one ``kind`` injection on support-chat
    from 02:00 to 03:00."""
    injection = Injection(
        type=kind,  # type: ignore[arg-type]
        start=timedelta(hours=2),
        duration=timedelta(hours=1),
        strength=strength,
        scope={"model": "support-chat"},
    )
    scenario = toxicity_spike_scenario(duration=timedelta(hours=hours), injections=[injection])
    return replay_lines(_lines(scenario), settings)


def _resolved_after_its_end(result: ReplayResult) -> timedelta:
    """The one incident's resolve, after the 03:00 end of :func:`_one_hour_of`'s cause."""
    assert [e.action for e in result.incidents].count("trigger") == 1
    [resolve] = [e for e in result.incidents if e.action == "resolve"]
    assert "cause over since" in resolve.note
    ended = result.incidents[0].emitted_at.replace(hour=3, minute=0, second=0, microsecond=0)
    return resolve.emitted_at - ended


@pytest.mark.slow
def test_an_incident_resolves_within_two_hours_of_its_cause_ending(settings: Settings) -> None:
    """An 8x toxicity spike of one hour: the incident resolves once every probe reads the
    change as over (the recovery test matched to the spike, :mod:`detectors.recovery`)
    and the playbook's 45-minute quiet period has passed since the end the tests
    estimate. Before, the probes waited for the smallest design's episode and a version
    key held from learning stopped judging at all: the incident was still open three
    hours after the spike; with the quiet period counted from the reading (03:50), it
    resolved at 04:35. The hate category's test, still learning its rarer rate when the
    spike began, is paged by its warm-up scan (:mod:`detectors.warmup`) instead of
    learning the spike as its baseline, so it judges recovery too: its reading comes
    at 03:59 and the resolve at 04:15."""
    result = _one_hour_of("toxicity_spike", settings, 8.0, hours=6)
    assert timedelta(0) < _resolved_after_its_end(result) <= timedelta(minutes=90)
    [resolve] = [e for e in result.incidents if e.action == "resolve"]
    assert "(its detectors' estimate; " in resolve.note


@pytest.mark.slow
def test_a_score_incident_resolves_within_an_hour_of_its_cause_ending(
    settings: Settings,
) -> None:
    """A one-hour confidence drop model-wide: every probe's mean chart reads it as over
    within minutes of its end (the recovery test matched to the shift,
    ``MeanChart._arm``), then the playbook's quiet period. Before, the segment keys'
    episodes held it until 03:33 and it resolved at 04:04."""
    result = _one_hour_of("confidence_drop", settings, DEFAULT_STRENGTH["confidence_drop"], 5)
    assert timedelta(0) < _resolved_after_its_end(result) <= timedelta(hours=1)


@pytest.mark.slow
def test_a_rolled_back_deploys_incident_resolves(settings: Settings) -> None:
    """A bad version serves 02:00-03:00 and is rolled back: its key gets no more traffic,
    so its detectors can never read the change as over. Before, the incident stayed open
    for good (still open four hours after the rollback); once the version's traffic has
    stopped while the model's goes on, its probe reads the cause as gone."""
    result = _one_hour_of("bad_deploy", settings, DEFAULT_STRENGTH["bad_deploy"], 6)
    assert [e.labels.version for e in result.incidents if e.action == "trigger"] == ["v13"]
    assert timedelta(0) < _resolved_after_its_end(result) <= timedelta(hours=2)
