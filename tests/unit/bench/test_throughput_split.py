"""bench/throughput.py's replay split: the detectors' share comes from a replay with their
updates switched off, and the threshold solves of its cold pass are timed one by one;
both must leave the pipeline as they found it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerting.engine import IncidentEngine
from bench.throughput import _detectors_off, _recent_scenario, _replay_split, _sampled_lines
from detectors import arl
from detectors.registry import REGISTRY
from streams.devtools.simulate import Simulator
from streams.pipeline.detect import Detect
from streams.pipeline.detectorset import DetectorSet, Tracker
from streams.pipeline.replay import replay_lines
from streams.settings import load_settings


@pytest.mark.slow
def test_replay_split_reports_the_detectors_and_restores_them() -> None:
    settings = load_settings(env={})
    # Yesterday afternoon, whatever the time now: at night the simulator's daily cycle
    # sends so few requests an hour that no key finishes its warm-up in one hour, and the
    # pass solves nothing; the stages' decode dead-letters lines a week behind the clock.
    afternoon = (datetime.now(UTC) - timedelta(days=1)).replace(hour=17, minute=0, second=0)
    lines = [line.encode() for line in Simulator(_recent_scenario(4_000, afternoon)).lines()]
    original = DetectorSet._feed
    with _detectors_off():
        assert DetectorSet._feed is not original
        off = replay_lines(lines, settings)
    assert DetectorSet._feed is original
    assert off.dead_letters == 0
    assert off.incidents == []  # no detector ran: nothing can page
    solves = (arl._bernoulli_threshold, arl.lattice_threshold)
    updates = {cls: vars(cls).get("update") for cls in REGISTRY.values()}
    parts = (Tracker.see, Detect._detection, IncidentEngine.observe, IncidentEngine.tick)
    steps = Detect.process_steps
    report = _replay_split(lines, settings)  # after the replay above: still a cold pass
    assert DetectorSet._feed is original
    assert (Tracker.see, Detect._detection, IncidentEngine.observe, IncidentEngine.tick) == parts
    assert Detect.process_steps is steps
    assert (arl._bernoulli_threshold, arl.lattice_threshold) == solves
    assert {cls: vars(cls).get("update") for cls in REGISTRY.values()} == updates
    text = "\n".join(report)
    stages = ("decode", "join", "detect", "publish", "  detectors", "  the rest")
    for stage in (*stages, "    route", "    evidence", "    engines"):
        assert any(line.startswith(stage) for line in report), stage
    assert "per-event pipeline's ceiling" in text
    # The columnar counterfactual ran: learned detectors took their columns.
    (columns,) = [line for line in report if line.startswith("with each learned detector")]
    assert float(columns.split(" s against ")[0].rsplit(" ", 1)[1]) > 0.0, columns
    shares = {line[:12].strip(): float(line.split()[-1]) for line in report[2:11]}
    assert shares["join"] > 0.0  # the lines were current: none was dead-lettered
    assert shares["detectors"] > 0.0  # the detectors cost something
    # Every observation feeds trackers and every minute ticks an engine: both cost time.
    assert shares["evidence"] > 0.0
    assert shares["engines"] > 0.0
    (solved,) = [line for line in report if line.startswith("threshold solves in the cold pass")]
    count = int(solved.split(": ")[1].split(",")[0].replace(",", ""))
    assert count > 0, solved  # young keys calibrate: a cold pass solves
    # The per-class split: every event type's detectors ran, each timed once per call.
    at = report.index(next(line for line in report if line.startswith("\ndetectors by class")))
    rows = {line.split()[0]: line.split() for line in report[at + 2 :]}
    assert {"HarmRate", "ConfidenceShift", "NumericDrift"} <= rows.keys(), sorted(rows)
    assert "AdaptiveBernoulliCusum" not in rows  # a harm test's parts are its own time
    assert all(float(row[3]) > 0.0 and float(row[4]) > 0.0 for row in rows.values()), rows


def test_a_busy_scenario_holds_the_same_events_in_less_event_time() -> None:
    """``--requests-per-hour``: 20x the default rate, a twentieth of the hours, ending an
    hour before ``now`` (recent enough for the worker's ingress)."""
    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    calm = _recent_scenario(40_000, now)
    busy = _recent_scenario(40_000, now, requests_per_hour=72_000)
    assert calm.duration == timedelta(hours=10)
    assert busy.duration == timedelta(minutes=30)
    assert busy.events_per_hour == 72_000
    assert busy.start + busy.duration == now - timedelta(hours=1)


def test_the_sampled_replay_is_timed_beside_the_full_one() -> None:
    """``--sample``: both replays reported, the sampled one with its speed-up."""
    afternoon = (datetime.now(UTC) - timedelta(days=1)).replace(hour=17, minute=0, second=0)
    scenario = _recent_scenario(3_000, afternoon)
    lines = [line.encode() for line in Simulator(scenario).lines()]
    report = _sampled_lines(lines, [m.name for m in scenario.models], 0.2)
    assert "every model at 0.2 of its requests" in report[0]
    full, sampled = (line.split() for line in report[2:4])
    assert (full[:2], sampled[:3]) == (["every", "request"], ["sampled", "at", "0.2"])
    # Detection took every observation in the first replay and about a fifth in the second
    # (Binomial over some 2,000 requests; the bounds are 5 sd and more away).
    detected = [int(row[-2].replace(",", "")) for row in (full, sampled)]
    assert 0.12 * detected[0] < detected[1] < 0.3 * detected[0], detected
    # The ratio is the full replay's time over each row's (no timed bound here: CI's
    # machine is shared; the measured speed-ups are in docs/validation.md).
    assert float(full[-3].rstrip("x")) == 1.0
