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

from streams.cli.status import detection_need
from streams.pipeline.detect import in_memory_detect
from streams.pipeline.load import (
    SHOWN_MODELS,
    TARGET_NEED,
    DetectLoad,
    LoadReport,
    LoadWatch,
    ModelShare,
)
from streams.pipeline.observation import serves
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
    # The event time of inputs and outputs detection reached (the traffic's pace): the
    # newest over every model, and the first batch's.
    served = [o.event.timestamp.timestamp() for o in observations if serves(o.event)]
    assert load.frontier == max(served)
    assert load.start == max(
        o.event.timestamp.timestamp() for o in observations[:400] if serves(o.event)
    )
    # A wall-clock tick of a model is its time too, and counts no observation.
    model = next(iter(counts))
    before = load.seconds[model]
    detect.tick_wall(model)
    assert load.seconds[model] == pytest.approx(before + 1.0)
    assert load.observations[model] == counts[model]


def test_the_watch_reads_need_against_event_time_once_per_interval() -> None:
    now = [1000.0]
    load = DetectLoad()
    fraction = {"b": 0.5}.get
    watch = LoadWatch(load, lambda m: fraction(m, 1.0), interval_s=60.0, clock=lambda: now[0])
    # Keeping up: 60 s of traffic in 60 s of wall time, 30 s of it spent.
    load.reached(5_000.0)
    load.add("a", 30.0, 30_000)
    load.reached(5_060.0)
    now[0] += 59.0
    assert watch.check() is None, "an interval has not passed yet"
    now[0] += 1.0
    assert watch.check() is None, "needs 50 %: under the 60 % at which it warns"
    assert watch.last is not None, "a quiet interval is read all the same"
    assert watch.last.need == pytest.approx(0.5)
    assert [m.model for m in watch.last.models] == ["a"]
    # Catching up a backlog: busy 95 % of the wall time, but 180 s of traffic in 60 s.
    load.add("a", 57.0, 57_000)
    load.reached(5_240.0)
    now[0] += 60.0
    assert watch.check() is None, "busy 95 % while catching up at 3x needs 32 %"
    # Falling behind: busy 51 % of the wall time, but only 20 s of traffic in 60 s.
    load.add("a", 24.0, 12_000)
    load.add("b", 6.0, 3_000)
    load.add("c", 0.6, 600)
    load.reached(5_250.0)
    load.reached(5_245.0)  # an older one (another partition): the frontier stays
    load.reached(5_260.0)
    now[0] += 60.0
    report = watch.check()
    assert report is not None
    assert report.busy == pytest.approx(30.6 / 60.0)
    assert report.need == pytest.approx(30.6 / 20.0)
    assert [m.model for m in report.models] == ["a", "b", "c"][:SHOWN_MODELS]
    a, b = report.models[0], report.models[1]
    assert a.need == pytest.approx(1.2)
    assert a.busy == pytest.approx(0.4)
    assert a.rate == pytest.approx(600.0), "observations per second of a's traffic"
    assert a.cost_s == pytest.approx(0.002)
    assert b.fraction == 0.5
    assert b.rate == pytest.approx(150.0)
    assert "(busy 51%; warns at 60%;" in report.message()
    assert "this worker cannot keep up" in report.message()
    assert watch.check() is None, "the next interval has only just begun"
    # No traffic reached in an interval (ticks alone): read over the wall time.
    load.tick("a", 45.0)
    now[0] += 60.0
    idle = watch.check()
    assert idle is not None
    assert idle.need == pytest.approx(0.75)
    assert idle.models[0].cost_s == 0.0
    # Traffic that stopped 2 s into the interval (or one event dated ahead) is no pace:
    # the frontier's 2 s are under 5 % of the 60, so the need is read over the wall time.
    load.add("a", 3.0, 3_000)
    load.tick("a", 0.6)
    load.reached(5_262.0)
    now[0] += 60.0
    assert watch.check() is None
    assert watch.last is not None
    assert watch.last.need == pytest.approx(3.6 / 60.0)
    # Ticks are read over the wall time even while the traffic's pace is read.
    load.add("a", 6.0, 6_000)
    load.tick("a", 30.0)
    load.reached(5_272.0)
    now[0] += 60.0
    report = watch.check()
    assert report is not None
    assert report.need == pytest.approx(6.0 / 10.0 + 30.0 / 60.0)
    assert report.models[0].cost_s == pytest.approx(0.001), "ticks are not an observation's cost"


def test_suggested_fractions_bring_the_stage_to_its_target() -> None:
    report = LoadReport(
        need=0.96,
        busy=0.9,
        window_s=300.0,
        models=(
            ModelShare("a", need=0.6, busy=0.6, rate=600.0, cost_s=0.001, fraction=1.0),
            ModelShare("b", need=0.3, busy=0.25, rate=100.0, cost_s=0.003, fraction=0.5),
        ),
    )
    fractions, reached = report.suggested()
    assert reached
    # The shown models may need 0.5 - 0.06 = 0.44 between them: both are capped at 0.22,
    # a keeping 0.22 / 0.6 of its requests and b (at 0.5) 0.5 * 0.22 / 0.3, rounded down.
    assert fractions == {"a": 0.36, "b": 0.36}
    need_after = 0.06 + 0.6 * fractions["a"] / 1.0 + 0.3 * fractions["b"] / 0.5
    assert need_after <= TARGET_NEED
    assert report.suggested(target=0.2) == ({"a": 0.11, "b": 0.11}, True)
    # A model that needs less than the level is a bystander: not named, not sampled.
    big = ModelShare("big", need=1.5, busy=0.9, rate=3000.0, cost_s=0.0005, fraction=1.0)
    small = ModelShare("small", need=0.05, busy=0.05, rate=50.0, cost_s=0.001, fraction=1.0)
    spread = LoadReport(need=1.55, busy=0.95, window_s=60.0, models=(big, small))
    assert spread.suggested() == ({"big": 0.3}, True)
    message = report.message()
    assert "detection needed 96% of this worker's time for the traffic of the last 300 s" in (
        message
    )
    assert "this worker is at or near its capacity" in message
    assert "a needs 60% (600 observations/s of traffic at 1,000 us each)" in message
    assert "sampled at 0.5" in message
    assert 'detection.sample_fractions = { "a" = 0.36, "b" = 0.36 }' in message
    # Need spread over many models: the shown ones at the floor do not reach the target,
    # and the message says so instead of promising it.
    a = ModelShare("a", need=0.3, busy=0.3, rate=300.0, cost_s=0.001, fraction=1.0)
    crowded = LoadReport(need=1.0, busy=1.0, window_s=60.0, models=(a,))
    assert crowded.suggested() == ({"a": 0.01}, False)
    assert "Sampling these cannot bring detection under 50%" in crowded.message()
    assert "more workers" in crowded.message()
    # Never a fraction above the one a model runs at; rounding does not lose a step.
    tiny = ModelShare("t", need=0.9, busy=0.9, rate=10.0, cost_s=0.09, fraction=0.005)
    assert LoadReport(need=0.9, busy=0.9, window_s=60.0, models=(tiny,)).suggested() == (
        {},
        False,
    )
    half = ModelShare("h", need=1.0, busy=1.0, rate=10.0, cost_s=0.1, fraction=0.5)
    # keep (1.0 - 0.42) / 1.0 = 0.58 of 0.5: 0.29 (0.58 * 0.5 * 100 is 28.999999999999996)
    assert LoadReport(need=1.0, busy=1.0, window_s=60.0, models=(half,)).suggested(target=0.58) == (
        {"h": 0.29},
        True,
    )


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
    detect.load.reached(100.0)
    detect.load.add("support-chat", 9.5, 9_500)
    detect.load.reached(105.0)
    now[0] = 10.0
    with caplog.at_level(logging.WARNING, logger="streams.runtime.agents"):
        asyncio.run(agents.wall_clock_tick())
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    # 9.5 s spent on 5 s of traffic: it needs 1.9 workers; 0.5 / 1.9 = 0.263.
    assert "detection needed 190% of this worker's time for the traffic of the last 10 s" in (
        caplog.text
    )
    assert '"support-chat" = 0.26' in caplog.text


def test_time_while_the_worker_has_the_event_loop_between_chunks_is_not_counted() -> None:
    """The worker yields to its event loop between chunks of a batch (process_steps): the
    time others hold the loop there is not detection's."""
    observations = _observations(300, hours=0.5)
    detect = in_memory_detect(load_settings(env={}).detection)
    ticks = _Ticks()
    detect.timer = ticks
    steps = detect.process_steps(observations, chunk=100)
    for _ in steps:
        ticks.t += 1_000.0  # the event loop runs others for a long while
    # One second per observation and one for the write-back; none of the 3,000 s.
    assert sum(detect.load.seconds.values()) == pytest.approx(301.0)


def test_status_says_whether_one_worker_keeps_up() -> None:
    def metrics(window: float | None = 300.0, **needs: float) -> str:
        rows = [f'sentinel_detect_need_ratio{{model="{m}"}} {v}' for m, v in needs.items()]
        if window is not None:
            rows.append(f"sentinel_detect_need_window_seconds {window}")
        return "# TYPE sentinel_detect_need_ratio gauge\n" + "\n".join(rows) + "\n"

    assert detection_need(metrics(a=0.2, b=0.1)) == (
        "needed 30% of the worker for its traffic over the last 300 s: keeps up (a 20%, b 10%)"
    )
    assert "at or near capacity (warns from 60%)" in detection_need(metrics(a=0.7))
    busy = detection_need(metrics(60.0, a=0.2, b=1.1, c=0.05, d=0.01))
    assert busy.startswith("needed 136% of the worker for its traffic over the last 60 s: ")
    assert "cannot keep up: sample the busiest (detection.sample_fractions) or add workers" in busy
    assert busy.endswith("(b 110%, a 20%, c 5%)"), "the three that needed most, most first"
    # The verdict agrees with the percentage printed.
    assert "needed 60% of the worker" in detection_need(metrics(a=0.596))
    assert "at or near capacity" in detection_need(metrics(a=0.596))
    assert "cannot keep up" in detection_need(metrics(a=0.996))
    # A reading with no model in it (an idle worker), none yet, one that is not a number.
    assert detection_need(metrics(312.0)) == (
        "needed 0% of the worker for its traffic over the last 312 s: keeps up"
    )
    assert detection_need(metrics(None, a=0.5)).startswith("not measured yet")
    assert detection_need(metrics(a=float("nan"))).startswith("unreadable")


def test_sampling_stops_at_the_floor_and_the_level_is_found_again_over_the_rest() -> None:
    # b is at 0.01 already and cannot give more: a alone must take the excess.
    a = ModelShare("a", need=1.92, busy=0.9, rate=1.0, cost_s=0.001, fraction=1.0)
    b = ModelShare("b", need=0.283, busy=0.1, rate=1.0, cost_s=0.001, fraction=0.01)
    fractions, reached = LoadReport(need=2.203, busy=1.0, window_s=60.0, models=(a, b)).suggested()
    assert reached
    assert fractions == {"a": 0.11}
    # One so busy that even at 0.01 it needs the whole target: both at the floor, and
    # the report says it does not reach it.
    c = ModelShare("c", need=50.0, busy=0.5, rate=1.0, cost_s=0.001, fraction=1.0)
    d = ModelShare("d", need=1.0, busy=0.5, rate=1.0, cost_s=0.001, fraction=1.0)
    report = LoadReport(need=51.0, busy=1.0, window_s=60.0, models=(c, d))
    assert report.suggested() == ({"c": 0.01, "d": 0.01}, False)
