"""Detect keeps detector sets live and writes them back at most every flush interval."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from alerting.model import Labels
from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from streams.contract.decode import Coordinates, DeadLetter, decode
from streams.devtools.scenario import Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.detect import Detect
from streams.pipeline.join import Joiner
from streams.pipeline.keys import key_id, model_of_key
from streams.pipeline.observation import Observation
from streams.pipeline.replay import REPLAY_LIMITS
from streams.pipeline.state import VERSION_KEY, stamp
from streams.settings import load_settings


def _observations(n: int, *, seed: int = 2, hours: float = 1.0) -> list[Observation]:
    """The first ``n`` observations of ``hours`` of one simulated service, joined."""
    settings = load_settings(env={})
    joiner = Joiner(settings.detection, {})
    out: list[Observation] = []
    lines = Simulator(Scenario(seed=seed, duration=timedelta(hours=hours))).lines()
    for offset, line in enumerate(lines):
        coords = Coordinates("t", 0, offset)
        event = decode(line.encode(), coords, now=datetime.now(UTC), limits=REPLAY_LIMITS)
        assert not isinstance(event, DeadLetter)
        out.extend(joiner.process(event, coords))
        if len(out) >= n:
            break
    return out[:n]


def _detect(
    store: dict[str, object], flush_interval_s: float, clock: Callable[[], float]
) -> Detect:
    det = load_settings(env={}).detection
    policy, playbooks = load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir)
    return Detect(det, policy, playbooks, store, {}, flush_interval_s=flush_interval_s, clock=clock)


def test_state_is_written_back_at_most_every_flush_interval() -> None:
    wall = [100.0]
    store: dict[str, object] = {}
    detect = _detect(store, 10.0, lambda: wall[0])
    obs = _observations(600)
    model = obs[0].model
    kid = key_id(Labels(model=model))
    detect.process(obs[:300])
    first = store[kid]
    wall[0] += 1.0
    detect.process(obs[300:450])
    assert store[kid] is first, "written again within the flush interval"
    wall[0] += 10.0
    detect.process(obs[450:])
    assert store[kid] is not first
    assert store[kid] == stamp("detectors", detect.live_sets.live[kid].to_json())
    # After a rebalance the live copies are dropped and state comes from the store.
    detect.invalidate()
    assert detect.live_sets.live == {}
    detect.process(obs[:1])
    assert key_id(Labels(model=obs[0].model)) in detect.live_sets.live


def test_a_rebalance_keeps_the_sets_of_partitions_that_stayed_with_their_unwritten_changes() -> (
    None
):
    """A key whose partition stayed with the worker keeps its live set, changes since the
    last write included (evidence lost there could re-alarm a detector); the others are
    dropped and read back from the store."""
    store: dict[str, object] = {}
    detect = _detect(store, 3600.0, lambda: 0.0)
    obs = _observations(400)
    detect.process(obs[:200])
    written = dict(store)
    detect.process(obs[200:])  # within the flush interval: live changes, store unchanged
    live = dict(detect.live_sets.live)
    stays = key_id(Labels(model=obs[0].model))
    assert store[stays] is written[stays]
    detect.invalidate(lambda kid: kid == stays)
    assert detect.live_sets.live == {stays: live[stays]}
    assert detect.live_sets.live[stays].to_json() != written[stays]


def test_a_models_wall_clock_tick_writes_back_its_changed_sets() -> None:
    """Within the flush interval a set's changes wait for its key's next batch; a key that
    goes quiet then would keep them in memory alone, lost to a rebalance, a stop or a
    crash. The model's tick writes them (other models' changes wait for their own tick)."""
    store: dict[str, object] = {}
    detect = _detect(store, 3600.0, lambda: 0.0)
    obs = _observations(400)
    detect.process(obs[:200])
    written = dict(store)
    detect.process(obs[200:])
    model = obs[0].model
    changed = {
        k for k, ds in detect.live_sets.live.items() if store[k] != stamp("detectors", ds.to_json())
    }
    mine = {k for k in changed if model_of_key(k) == model}
    assert mine, "the batch changed keys of this model"
    assert changed - mine, "and keys of other models"
    assert all(store[k] is written[k] for k in changed)
    detect.tick_wall(model)
    for kid in changed:
        current = stamp("detectors", detect.live_sets.live[kid].to_json())
        assert (store[kid] == current) is (kid in mine), kid
    assert detect.live_sets.write_dirty(lambda kid: True) == len(changed - mine)
    assert all(store[k] == stamp("detectors", detect.live_sets.live[k].to_json()) for k in changed)
    assert detect.live_sets.write_dirty(lambda kid: True) == 0


def test_wall_clock_tick_ages_a_silent_model_from_its_last_event() -> None:
    """Engines tick on the wall clock: a model whose traffic stopped still resolves (here)
    or escalates at its deadlines; the tick advances event time by the wall time elapsed
    since the model's last event, so replayed history is not aged to today."""
    from alerting.engine import IncidentEngine
    from tests.unit.alerting.helpers import detection

    settings = load_settings(env={})
    det = settings.detection
    policy, playbooks = load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir)
    wall = [1_000.0]
    engines: dict[str, object] = {}
    detect = Detect(det, policy, playbooks, {}, engines, wall_clock=lambda: wall[0])
    obs = _observations(300)
    model = obs[0].model
    detect.process(obs)
    assert model in detect.models()
    latest = max(o.event.timestamp for o in obs if o.model == model)
    engine = IncidentEngine(policy, playbooks)
    stored = engines[model]
    assert isinstance(stored, dict)
    engine.set_state({k: v for k, v in stored.items() if k != VERSION_KEY})
    [trigger] = engine.observe(detection(latest, model=model))
    engines[model] = stamp("engine", engine.get_state())
    assert detect.tick_wall(model) == []  # no wall time has passed
    wall[0] += 6 * 3600.0  # six hours without a single event of this model
    events = detect.tick_wall(model)
    assert [e.action for e in events][-1] == "resolve"
    assert events[-1].incident_id == trigger.incident_id
    assert events[-1].emitted_at == latest + timedelta(hours=6)
    assert detect.tick_wall("never-seen") == []


class _CountingStore(dict[str, object]):
    """A store that counts its writes."""

    writes = 0

    def __setitem__(self, key: str, value: object) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def test_steps_give_the_batchs_incidents_and_write_its_state_once() -> None:
    """The worker processes a batch in steps of a few observations (it yields to its event
    loop between them): the same incident events and final state as one call, and each
    touched key written back once per batch, not once per step."""
    settings = load_settings(env={})
    det = settings.detection
    obs = _observations(400)
    runs = []
    for chunk in (0, 7):
        store, engines = _CountingStore(), _CountingStore()
        detect = Detect(
            det,
            load_policy(det.alerting_policy),
            load_playbooks(det.playbooks_dir),
            store,
            engines,
            flush_interval_s=0.0,
        )
        parts = list(detect.process_steps(obs, chunk))
        assert len(parts) == (1 if chunk == 0 else len(obs) // chunk + 1)
        events = [ev.model_dump(exclude={"emitted_at"}) for part in parts for ev in part]
        runs.append((events, dict(store), store.writes, engines.writes))
    (events, state, writes, engine_writes), stepped = runs
    assert stepped == (events, state, writes, engine_writes)
    assert writes == len(state)  # every key once
