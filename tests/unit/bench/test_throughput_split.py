"""bench/throughput.py's replay split: the detectors' share comes from a replay with their
updates switched off, which must leave the pipeline as it found it."""

from __future__ import annotations

import pytest

from bench.throughput import _detectors_off, _recent_scenario, _replay_split
from streams.devtools.simulate import Simulator
from streams.pipeline.detectorset import DetectorSet
from streams.pipeline.replay import replay_lines
from streams.settings import load_settings


@pytest.mark.slow
def test_replay_split_reports_the_detectors_and_restores_them() -> None:
    settings = load_settings(env={})
    lines = [line.encode() for line in Simulator(_recent_scenario(4_000)).lines()]
    original = DetectorSet._feed
    with _detectors_off():
        assert DetectorSet._feed is not original
        off = replay_lines(lines, settings)
    assert DetectorSet._feed is original
    assert off.dead_letters == 0
    assert off.incidents == []  # no detector ran: nothing can page
    report = _replay_split(lines, settings)
    assert DetectorSet._feed is original
    text = "\n".join(report)
    for stage in ("decode", "join", "detect", "publish", "  detectors", "  the rest"):
        assert any(line.startswith(stage) for line in report), stage
    assert "per-event pipeline's ceiling" in text
    shares = {line[:12].strip(): float(line.split()[-1]) for line in report[2:8]}
    assert shares["join"] > 0.0  # the lines were current: none was dead-lettered
    assert shares["detectors"] > 0.0  # the detectors cost something
