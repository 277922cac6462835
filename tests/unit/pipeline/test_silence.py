"""A model whose traffic stops is an incident (issue 12 item 4): the pure watch, the
worker's wall-clock path, and offline replay of a simulated stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from streams.contract.decode import Coordinates, DeadLetter, decode
from streams.devtools.scenario import Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.detect import Detect
from streams.pipeline.join import Joiner
from streams.pipeline.observation import Observation
from streams.pipeline.replay import REPLAY_LIMITS, replay_lines
from streams.pipeline.silence import SilenceWatch
from streams.settings import load_settings

H = 3600.0


def _steady(watch: SilenceWatch, model: str, until: float, every: float = 2.0) -> None:
    t = 0.0
    while t <= until:
        watch.see(model, "input", t)
        watch.see(model, "output", t + 0.5)
        t += every


def test_silence_is_judged_against_the_learned_rate_and_the_minimum_gap() -> None:
    watch = SilenceWatch(min_gap_s=600.0)
    _steady(watch, "m", 2 * H)
    last = 2 * H + 0.5
    assert watch.check("m", last + 60.0) is None  # a minute: below the 10-minute floor
    assert watch.check("m", last + 599.0) is None
    signal = watch.check("m", last + 601.0)
    assert signal is not None
    assert signal.feature == "all"
    assert signal.kind == "traffic_silence"
    assert signal.statistic == pytest.approx(601.0 / 60.0)
    assert signal.baseline == pytest.approx(30.0, rel=0.05)  # 1 output per 2 s, per minute
    assert signal.p_value is not None
    assert signal.p_value < 1e-6


def test_a_sparse_model_needs_a_longer_gap() -> None:
    watch = SilenceWatch(min_gap_s=600.0)
    _steady(watch, "sparse", 24 * H, every=1200.0)  # 3 per hour
    last = 24 * H + 0.5
    assert watch.check("sparse", last + H) is None  # an hour is not unlikely at 3/h
    signal = watch.check("sparse", last + 5 * H)  # ln(1e6) / (3/h) = 4.6 h
    assert signal is not None
    # the rate is read just after an arrival, so it runs a little high: the gap a little short
    assert signal.threshold == pytest.approx(4.6 * 60, rel=0.2)


def test_outputs_stopping_while_inputs_continue_is_a_silence_of_outputs() -> None:
    watch = SilenceWatch(min_gap_s=600.0)
    _steady(watch, "m", 2 * H)
    t = 2 * H
    while t < 2 * H + 700.0:
        t += 2.0
        watch.see("m", "input", t)
    signal = watch.check("m", t)
    assert signal is not None
    assert signal.feature == "outputs"


def test_the_worker_takes_event_time_skew_between_topics_for_skew_not_silence() -> None:
    """Catching up on a backlog, the worker reads the inputs topic hours ahead of the
    outputs topic in event time while both keep arriving: no silence. Once outputs stop
    being processed for the minimum gap of wall-clock time, they are silent."""
    watch = SilenceWatch(min_gap_s=600.0)
    wall = 0.0
    t = 0.0
    while t <= 2 * H:  # clean history, read in step
        watch.see("m", "input", t, wall)
        watch.see("m", "output", t + 0.5, wall)
        t += 2.0
        wall += 0.01
    lag = 0.0
    while lag < H:  # backlog: inputs race ahead, outputs trail by up to an hour
        t += 2.0
        lag += 1.0
        wall += 0.01
        watch.see("m", "input", t, wall)
        watch.see("m", "output", t - lag, wall)
        assert watch.check("m", t, wall) is None
    # the output stream then stops being processed; inputs go on for 11 minutes of wall time
    for _ in range(330):
        t += 2.0
        wall += 2.0
        watch.see("m", "input", t, wall)
    signal = watch.check("m", t, wall)
    assert signal is not None
    assert signal.feature == "outputs"


def test_a_new_model_is_not_judged_before_it_has_history() -> None:
    watch = SilenceWatch(min_gap_s=600.0)
    _steady(watch, "new", 0.5 * H)
    assert watch.check("new", 3 * H) is None
    assert watch.check("unknown", 3 * H) is None


def _observations(hours: float) -> list[Observation]:
    settings = load_settings(env={})
    joiner = Joiner(settings.detection, {})
    scenario = Scenario(seed=3, duration=timedelta(hours=hours), events_per_hour=600)
    out: list[Observation] = []
    for offset, line in enumerate(Simulator(scenario).lines()):
        coords = Coordinates("t", 0, offset)
        event = decode(line.encode(), coords, now=datetime.now(UTC), limits=REPLAY_LIMITS)
        assert not isinstance(event, DeadLetter)
        out.extend(joiner.process(event, coords))
    return out


def test_the_worker_raises_a_silence_on_the_wall_clock_when_all_traffic_stops() -> None:
    settings = load_settings(env={})
    det = settings.detection
    wall = [1000.0]
    detect = Detect(
        det,
        load_policy(det.alerting_policy),
        load_playbooks(det.playbooks_dir),
        {},
        {},
        wall_clock=lambda: wall[0],
    )
    # the stream ends with feedback trailing its last outputs by up to 30 min of event
    # time: that is not traffic, and silence is timed from the last input or output
    assert detect.process(_observations(2.5)) == []
    model = "support-chat"
    assert detect.tick_wall(model) == []
    wall[0] += 5 * 60.0  # five minutes: not yet
    assert detect.tick_wall(model) == []
    wall[0] += 10 * 60.0
    [trigger] = detect.tick_wall(model)
    assert trigger.action == "trigger"
    assert trigger.incident_type == "traffic_silence"
    assert trigger.labels.model == model
    assert trigger.labels.version is None
    assert not trigger.labels.segment
    assert trigger.playbook is not None
    assert trigger.playbook.name == "traffic_silence"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["traffic_stop", "output_stop"])
def test_replay_raises_a_silence_within_minutes_of_a_simulated_stop(kind: str) -> None:
    start = timedelta(hours=2)
    inj = Injection(
        type=kind,
        start=start,
        duration=timedelta(hours=1),
        strength=1.0,
        scope={"model": "summarizer"},
    )
    scenario = Scenario(
        seed=4, duration=timedelta(hours=3.5), events_per_hour=1200, injections=[inj]
    )
    lines = [line.encode() for line in Simulator(scenario).lines()]
    result = replay_lines(lines, load_settings(env={}))
    silences = [
        e
        for e in result.incidents
        if e.action == "trigger" and e.incident_type == "traffic_silence"
    ]
    assert [e.labels.model for e in silences] == ["summarizer"]
    [first] = silences
    delay = first.emitted_at - (scenario.start + start)
    print(
        f"{kind}: traffic_silence raised {delay} after the stop ({first.evidence.signal.feature})"
    )
    assert timedelta(0) < delay <= timedelta(minutes=30)
    assert first.evidence.signal.feature == ("all" if kind == "traffic_stop" else "outputs")
    # Unresolved at its playbook's 30-minute deadline, it escalates then, while the model
    # is still silent, as the worker's wall-clock tick does; before, replay ticked a
    # model's engine on its own events only, and escalated when the traffic came back.
    [escalated] = [
        e
        for e in result.incidents
        if e.incident_id == first.incident_id and e.note.startswith("escalated")
    ]
    late = escalated.emitted_at - first.emitted_at - timedelta(minutes=30)
    assert timedelta(0) <= late <= timedelta(minutes=2)
    assert escalated.emitted_at < scenario.start + start + inj.duration
    resolved = [
        e for e in result.incidents if e.action == "resolve" and e.incident_id == first.incident_id
    ]
    assert resolved, "the silence incident resolves once traffic is back"
