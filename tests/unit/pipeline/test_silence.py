"""A model whose traffic stops is an incident (issue 12 item 4): the pure watch, the
worker's wall-clock path, and offline replay of a simulated stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerting.incident import EngineState
from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from streams.contract.decode import Coordinates, DeadLetter, decode
from streams.devtools.scenario import Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.detect import Detect, traffic_key
from streams.pipeline.join import Joiner
from streams.pipeline.observation import Observation
from streams.pipeline.replay import REPLAY_LIMITS, replay_lines
from streams.pipeline.silence import SilenceWatch
from streams.pipeline.state import VERSION_KEY
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


def _observations(hours: float, injections: tuple[Injection, ...] = ()) -> list[Observation]:
    settings = load_settings(env={})
    joiner = Joiner(settings.detection, {})
    scenario = Scenario(
        seed=3, duration=timedelta(hours=hours), events_per_hour=600, injections=list(injections)
    )
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


def test_a_resumed_history_is_judged_as_before_once_the_restart_is_min_gap_old() -> None:
    watch = SilenceWatch(min_gap_s=600.0)
    _steady(watch, "m", 2 * H)
    state = watch.state_of("m")
    assert state is not None
    assert watch.state_of("unknown") is None
    later = SilenceWatch(min_gap_s=600.0)
    later.resume("m", state, wall=50_000.0)
    last = 2 * H + 0.5
    # in event time the model is as silent as it was; on the wall clock nothing has been
    # read for it since the restart only (a backlog may still be on its way)
    assert later.check("m", last + 3600.0, 50_000.0 + 599.0) is None
    resumed = later.check("m", last + 3600.0, 50_000.0 + 600.0)
    before = watch.check("m", last + 3600.0)
    assert resumed is not None
    assert before is not None
    assert resumed.model_dump() == before.model_dump()
    with pytest.raises(ValueError, match="4 numbers"):
        later.resume("n", {"input": [1.0, 2.0]}, wall=0.0)
    with pytest.raises(ValueError, match="unknown event kinds"):
        later.resume("n", {"feedback": [0.0, 1.0, 1.0, 1.0]}, wall=0.0)
    with pytest.raises(ValueError, match="not a stream"):
        later.resume("n", {"input": [5.0, 1.0, 1.0, 1.0]}, wall=0.0)
    assert "n" not in later


def _worker(stores: tuple[dict[str, object], dict[str, object]], wall: list[float]) -> Detect:
    det = load_settings(env={}).detection
    policy, playbooks = load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir)
    return Detect(det, policy, playbooks, *stores, wall_clock=lambda: wall[0])


def test_a_model_that_stopped_before_a_restart_is_found_silent_by_the_restarted_worker() -> None:
    """The restarted worker (or a partition's new owner) has seen no event of the model:
    before, it never ticked it, and a model that went silent with its worker's restart
    (or a rebalance) was never paged."""
    stores: tuple[dict[str, object], dict[str, object]] = ({}, {})
    wall = [1000.0]
    first = _worker(stores, wall)
    assert first.process(_observations(2.5)) == []
    model = "support-chat"
    wall[0] += 60.0
    assert first.tick_wall(model) == []  # a minute after its last event: not silent
    wall[0] += 3600.0  # the worker is down for an hour
    restarted = _worker(stores, wall)
    assert model in restarted.models()
    assert restarted.tick_wall(model) == []  # just restarted: its backlog may be on its way
    wall[0] += 9 * 60.0
    assert restarted.tick_wall(model) == []
    wall[0] += 2 * 60.0
    [trigger] = restarted.tick_wall(model)
    assert trigger.action == "trigger"
    assert trigger.incident_type == "traffic_silence"
    assert trigger.labels.model == model
    # judged from where the first worker left it: 1 + 11 minutes of silence
    assert trigger.evidence.signal.statistic == pytest.approx(12.0, abs=0.5)


def test_an_open_silence_survives_a_restart_and_resolves_when_traffic_returns() -> None:
    model = "support-chat"
    stop = Injection(
        type="traffic_stop",
        start=timedelta(hours=2.5),
        duration=timedelta(hours=4.5),
        strength=1.0,
        scope={"model": model},
    )
    obs = [o for o in _observations(8.0, (stop,)) if o.model == model]
    # where the traffic comes back (before it, the stopped traffic's trailing feedback and
    # evaluations, which are not traffic)
    [cut] = [
        i
        for i in range(1, len(obs))
        if obs[i].event.timestamp - obs[i - 1].event.timestamp > timedelta(hours=3)
    ]
    stores: tuple[dict[str, object], dict[str, object]] = ({}, {})
    wall = [1000.0]
    first = _worker(stores, wall)
    first.process(obs[:cut])
    wall[0] += 20 * 60.0
    [trigger] = first.tick_wall(model)
    assert trigger.incident_type == "traffic_silence"
    restarted = _worker(stores, wall)
    events = []
    for _ in range(4 * 3600 // 30):  # four hours of the restarted worker's ticks
        wall[0] += 30.0
        events += restarted.tick_wall(model)
    assert {e.incident_id for e in events} == {trigger.incident_id}
    assert "resolve" not in [e.action for e in events], "a silence is not resolved by a restart"
    [escalated] = [e for e in events if e.note.startswith("escalated")]  # at its deadline
    assert escalated.emitted_at - trigger.emitted_at == timedelta(minutes=30)
    # the traffic comes back
    back = restarted.process(obs[cut:])
    assert [e.action for e in back if e.incident_id == trigger.incident_id] == ["resolve"]


def test_a_model_whose_partition_comes_back_is_resumed_from_the_store_not_from_memory() -> None:
    """While its partition was another worker's, the model's traffic went on there: the
    worker it comes back to judges it by the store, not by what it remembered (that
    judged the hour it did not see as a silence)."""
    stores: tuple[dict[str, object], dict[str, object]] = ({}, {})
    wall = [1000.0]
    obs = _observations(3.5)
    cut = next(
        i
        for i, o in enumerate(obs)
        if o.event.timestamp >= obs[0].event.timestamp + timedelta(hours=2.5)
    )
    mine, other = _worker(stores, wall), _worker(stores, wall)
    mine.process(obs[:cut])
    mine.invalidate(lambda kid: False)  # the partition moves to the other worker
    for start in range(cut, len(obs), 100):  # which reads its next hour as it comes
        wall[0] = 1000.0 + (start - cut) / (len(obs) - cut) * 3600.0
        other.process(obs[start : start + 100])
    wall[0] = 1000.0 + 3600.0 + 60.0
    other.invalidate(lambda kid: False)  # and back
    mine.invalidate(lambda kid: False)
    model = "support-chat"
    assert [e for e in mine.tick_wall(model) if e.incident_type == "traffic_silence"] == []
    wall[0] += 11 * 60.0
    [trigger] = [e for e in mine.tick_wall(model) if e.incident_type == "traffic_silence"]
    assert trigger.evidence.signal.statistic == pytest.approx(12.0, abs=1.0)


def test_a_stored_traffic_that_does_not_read_is_relearned() -> None:
    stores: tuple[dict[str, object], dict[str, object]] = ({}, {})
    wall = [1000.0]
    _worker(stores, wall).process(_observations(2.5))
    model = "support-chat"
    stored = stores[1][traffic_key(model)]
    assert isinstance(stored, dict)
    stores[1][traffic_key(model)] = {**stored, "at": "soon"}
    restarted = _worker(stores, wall)
    wall[0] += 3600.0
    assert restarted.tick_wall(model) == []  # nothing to judge it by: relearned
    assert model not in restarted.silence


def test_a_restart_during_a_stall_ticks_as_a_worker_that_did_not_restart() -> None:
    """Eight minutes of upstream stall (only wall-clock ticks), a restart in it, then the
    delayed events: the restarted worker took the ticks' advanced time for the model's
    latest event, the delayed events (older than it) did not move it, and its ticks ran
    ahead of the stream (an incident resolved early). Now it ticks as one that did not
    restart."""
    model = "support-chat"
    obs = _observations(3.0)
    t0 = obs[0].event.timestamp
    cut = next(i for i, o in enumerate(obs) if o.event.timestamp >= t0 + timedelta(hours=2))
    end = next(i for i, o in enumerate(obs) if o.event.timestamp >= t0 + timedelta(hours=2.1))

    def run(restart: bool) -> tuple[Detect, list[float]]:
        stores: tuple[dict[str, object], dict[str, object]] = ({}, {})
        wall = [1000.0]
        worker = _worker(stores, wall)
        worker.process(obs[:cut])
        for _ in range(16):
            wall[0] += 30.0
            worker.tick_wall(model)
        if restart:
            worker = _worker(stores, wall)
            worker.tick_wall(model)
        wall[0] += 30.0
        worker.process(obs[cut:end])
        return worker, wall

    (kept, wall_a), (restarted, wall_b) = run(False), run(True)
    assert wall_a == wall_b
    assert restarted._seen[model] == kept._seen[model]
    assert restarted._traffic_seen[model] == kept._traffic_seen[model]
    stored = restarted.engine_store[model]
    assert isinstance(stored, dict)
    # the engine value is the engine state alone: what the previous release reads
    EngineState.model_validate({k: v for k, v in stored.items() if k != VERSION_KEY})
    assert traffic_key(model) in restarted.engine_store
    assert restarted.models() == kept.models()
