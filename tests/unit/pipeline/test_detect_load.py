"""The detect stage's time per model (:mod:`streams.pipeline.load`): counted exactly on an
injected timer, and a warning with sample fractions when detection was busy most of an
interval."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from streams.pipeline.detect import in_memory_detect
from streams.pipeline.load import (
    SHOWN_MODELS,
    TARGET_BUSY,
    DetectLoad,
    LoadReport,
    LoadWatch,
    ModelShare,
)
from streams.runtime.agents import _Agents
from streams.settings import load_settings
from tests.unit.pipeline.test_detect_state import _observations


class _Ticks:
    """A timer that advances one second at each read: every timed span is one second."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def test_each_models_observations_and_seconds_are_counted_on_the_injected_timer() -> None:
    observations = _observations(600, hours=0.5)
    counts = Counter(obs.model for obs in observations)
    assert len(counts) >= 2, "the scenario should hold several models"
    detect = in_memory_detect(load_settings(env={}).detection)
    detect.timer = _Ticks()
    detect.process(observations[:400])
    detect.process(observations[400:])
    load = detect.load
    assert load.observations == dict(counts)
    assert sum(load.observations.values()) == detect.stats.observations == 600
    # One second per observation, and each batch's write-back (one second) shared by
    # the models in proportion to their observations in that batch.
    first, second = (
        Counter(o.model for o in observations[:400]),
        Counter(o.model for o in observations[400:]),
    )
    for model, n in counts.items():
        expected = n + first[model] / 400 + second[model] / 200
        assert load.seconds[model] == pytest.approx(expected), model
    # A wall-clock tick of a model is its time too, and counts no observation.
    model = next(iter(counts))
    before = load.seconds[model]
    detect.tick_wall(model)
    assert load.seconds[model] == pytest.approx(before + 1.0)
    assert load.observations[model] == counts[model]


def test_the_watch_reports_once_per_interval_and_only_when_busy() -> None:
    now = [1000.0]
    load = DetectLoad()
    fraction = {"b": 0.5}.get
    watch = LoadWatch(load, lambda m: fraction(m, 1.0), interval_s=60.0, clock=lambda: now[0])
    load.add("a", 30.0, 30_000)
    now[0] += 59.0
    assert watch.check() is None, "an interval has not passed yet"
    now[0] += 1.0
    assert watch.check() is None, "busy 50 %: under the 60 % at which it warns"
    load.add("a", 36.0, 36_000)
    load.add("b", 18.0, 6_000)
    load.add("c", 3.0, 3_000)
    load.add("d", 0.6, 600)
    now[0] += 60.0
    report = watch.check()
    assert report is not None
    assert report.busy == pytest.approx(57.6 / 60.0)
    assert [m.model for m in report.models] == ["a", "b", "c"][:SHOWN_MODELS]
    a, b = report.models[0], report.models[1]
    assert a.busy == pytest.approx(0.6)
    assert a.rate == pytest.approx(600.0)
    assert a.cost_s == pytest.approx(0.001)
    assert b.fraction == 0.5
    assert b.rate == pytest.approx(100.0)
    assert "(warns at 60%)" in report.message()
    assert watch.check() is None, "the next interval has only just begun"


def test_suggested_fractions_bring_the_stage_to_its_target() -> None:
    report = LoadReport(
        busy=0.96,
        window_s=300.0,
        models=(
            ModelShare("a", busy=0.6, rate=600.0, cost_s=0.001, fraction=1.0),
            ModelShare("b", busy=0.3, rate=100.0, cost_s=0.003, fraction=0.5),
        ),
    )
    fractions = report.suggested()
    # Both scaled by (0.5 - 0.06) / 0.9 = 0.489, rounded down.
    assert fractions == {"a": 0.48, "b": 0.24}
    busy_after = 0.06 + 0.6 * fractions["a"] / 1.0 + 0.3 * fractions["b"] / 0.5
    assert busy_after <= TARGET_BUSY
    message = report.message()
    assert "busy 96% of the last 300 s" in message
    assert "a 60% (600 observations/s at 1,000 us each)" in message
    assert "sampled at 0.5" in message
    assert 'detection.sample_fractions = { "a" = 0.48, "b" = 0.24 }' in message
    # Other models alone over the target: the shown ones at the floor, not below zero.
    crowded = LoadReport(busy=1.0, window_s=60.0, models=report.models[:1])
    assert crowded.suggested(target=0.3) == {"a": 0.01}


def test_a_bad_watch_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        LoadWatch(DetectLoad(), lambda m: 1.0, interval_s=0.0)
    with pytest.raises(ValueError, match="warn_at"):
        LoadWatch(DetectLoad(), lambda m: 1.0, warn_at=1.5)


def test_the_workers_wall_clock_tick_logs_the_report(caplog: pytest.LogCaptureFixture) -> None:
    detect = in_memory_detect(load_settings(env={}).detection)
    topic = SimpleNamespace()
    topics: dict[str, Any] = {"by_request": topic, "by_model": topic, "alerts": topic}
    agents = _Agents(SimpleNamespace(), 4, topics, SimpleNamespace(), detect)  # type: ignore[arg-type]
    now = [0.0]
    agents.load_watch = LoadWatch(detect.load, lambda m: 1.0, interval_s=10.0, clock=lambda: now[0])
    detect.load.add("support-chat", 9.5, 9_500)
    now[0] = 10.0
    with caplog.at_level(logging.WARNING, logger="streams.runtime.agents"):
        asyncio.run(agents.wall_clock_tick())
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "detection was busy 95% of the last 10 s" in caplog.text
    assert '"support-chat" = 0.52' in caplog.text
