"""Which key's detector judges whether an incident's cause persists (its probe), and
when a probe's key has stopped receiving traffic."""

from __future__ import annotations

import numpy as np

from alerting.cause import GroupingPolicy
from alerting.model import Labels, Probe
from detectors.base import Direction, Signal
from detectors.coverage import POOLED
from streams.detection_settings import DetectionSettings
from streams.pipeline.detectorset import FACTORIES, DetectorSet, Tracker
from streams.pipeline.keys import key_id
from streams.pipeline.localize import change_end_t, localize_detection, probe_health, stopped

MODEL = Labels(model="support-chat")
ACME = Labels(model="support-chat", segment={"tenant": "acme"})
GLOBEX = Labels(model="support-chat", segment={"tenant": "globex"})
FR = Labels(model="support-chat", segment={"locale": "fr-FR"})
EN = Labels(model="support-chat", segment={"locale": "en-US"})


def _wave_at_acme(seed: int) -> tuple[dict[str, DetectorSet], dict[str, list[Signal]]]:
    """Prompt-injection flags over two tenants x two locales, 1 % everywhere, then 15 % at
    acme: every key's injection detector, and the signals each raised."""
    rng = np.random.default_rng(seed)
    keys = {key_id(lb): lb for lb in (MODEL, ACME, GLOBEX, FR, EN)}
    sets = {kid: DetectorSet(DetectionSettings(), "segment", 1e5) for kid in keys}
    signals: dict[str, list[Signal]] = {kid: [] for kid in keys}
    for i in range(12_000):
        tenant, locale = ("acme", "globex")[i % 2], ("fr-FR", "en-US")[(i // 2) % 2]
        wave = i >= 9_000 and tenant == "acme"
        flag = bool(rng.random() < (0.15 if wave else 0.01))
        for lb in (
            MODEL,
            Labels(model=MODEL.model, segment={"tenant": tenant}),
            Labels(model=MODEL.model, segment={"locale": locale}),
        ):
            ds = sets[key_id(lb)]
            ds.see_traffic(float(i))
            det = ds.detectors.get("injection")
            if det is None:
                det = ds.detectors["injection"] = FACTORIES["injection"].make(ds, ())
            if (sig := det.update(flag)) is not None:
                signals[key_id(lb)].append(sig)
    return sets, signals


def test_the_probe_is_the_culprits_key_whatever_key_fired() -> None:
    """A wave at acme alarms the model and acme's locales too; each of their detections
    localizes to acme, and only acme's detector judges whether the cause persists (a
    locale that crosses it, or the model that covers it, reads the change as over later,
    on a share of its traffic)."""
    sets, signals = _wave_at_acme(seed=3)
    for fired in (MODEL, FR, EN, ACME):
        assert signals[key_id(fired)], f"{fired.describe()} never alarmed"
        loc, probes = localize_detection(
            "injection",
            signals[key_id(fired)][0],
            fired,
            (MODEL, ACME, GLOBEX, FR, EN),
            sets.get,
            11_999.0,
            lambda _: False,
            GroupingPolicy(),
        )
        assert loc is not None
        assert loc.scope == ACME, fired.describe()
        assert [p.key for p in probes] == [key_id(ACME)]
    assert not signals[key_id(GLOBEX)]


def _flowing(rate_per_s: float, start: float, end: float) -> DetectorSet:
    ds = DetectorSet(DetectionSettings(), "version", 1e6)
    for t in np.arange(start, end, 1.0 / rate_per_s):
        ds.see_traffic(float(t))
    return ds


def test_a_key_whose_traffic_stopped_while_its_model_flows_has_stopped() -> None:
    """A version at 1 event/s rolled back at 3,600 s: stopped once the model has gone on
    for longer than the 10-minute floor (its rate alone would call 14 s a silence)."""
    version = _flowing(1.0, 0.0, 3600.0)
    model = _flowing(2.0, 0.0, 3600.0 + 601.0)
    assert stopped(version, model, 600.0)
    early = _flowing(2.0, 0.0, 3600.0 + 590.0)
    assert not stopped(version, early, 600.0)
    assert not stopped(model, model, 600.0)  # the model key itself never
    assert not stopped(version, None, 600.0)


def test_a_rolled_back_version_has_stopped_though_its_feedback_trails() -> None:
    """Feedback and evaluations of a version's last outputs go on arriving after its
    rollback (here for an hour): they are not serving. The version has stopped 10 minutes
    after its last output, and a probe on it reads as ended at that output."""
    version = _flowing(1.0, 0.0, 3600.0)
    for t in np.arange(3600.0, 7200.0, 2.0):  # trailing feedback
        version.see_traffic(float(t), serving=False)
    model = _flowing(2.0, 0.0, 3600.0 + 601.0)
    assert version.traffic_t > 7000.0
    assert version.served_t < 3600.0
    assert stopped(version, model, 600.0)
    assert not stopped(version, _flowing(2.0, 0.0, 3600.0 + 590.0), 600.0)
    version.detectors["harm"] = FACTORIES["harm"].make(version, ())
    v13 = key_id(Labels(model="support-chat", version="v13"))
    ds_of = {v13: version, key_id(MODEL): model}
    probe = Probe(key=v13, detector="harm", feature="toxicity", direction="up")
    ended: dict[str, float] = {}
    assert probe_health([probe], ds_of.get, 600.0, ended) == {probe.id: False}
    assert ended == {probe.id: version.served_t}


def test_a_sparse_key_is_not_stopped_within_the_gaps_its_rate_makes_likely() -> None:
    """A tenant at one event every 5 minutes: a silence only after ln(1e6) ~ 13.8 of its
    gaps (~69 minutes), not after the 10-minute floor."""
    tenant = _flowing(1 / 300, 0.0, 6 * 3600.0)
    last = tenant.traffic_t
    assert not stopped(tenant, _flowing(1.0, 0.0, last + 3600.0), 600.0)
    assert stopped(tenant, _flowing(1.0, 0.0, last + 5000.0), 600.0)


def test_a_probes_estimated_end_maps_to_the_checkpoint_at_or_after_it() -> None:
    """The end a recovery test estimates (values ago) becomes an event time through the
    key's tracker: the checkpoint at or after that value (late, never early), else the
    key's last event."""
    ds = DetectorSet(DetectionSettings(), "segment", 1e6)
    tracker = Tracker(n=100, checkpoints=[[0, 1000.0, {}], [32, 1032.0, {}], [64, 1064.0, {}]])
    ds.trackers["harm"] = tracker
    ds.traffic_t = 1099.0
    assert change_end_t(ds, "harm", 100) == 1000.0  # the value at index 0
    assert change_end_t(ds, "harm", 90) == 1032.0  # index 10: the next checkpoint
    assert change_end_t(ds, "harm", 36) == 1064.0
    assert change_end_t(ds, "harm", 20) == 1099.0  # after the last checkpoint
    assert change_end_t(ds, "downvote", 5) == 1099.0  # no tracker


def test_a_probe_whose_episode_closed_before_its_test_drained_still_dates_the_end() -> None:
    """An episode can close while the recovery test its alarm armed is still draining (a
    rate's re-estimate restarts its episode: tenant_cascade seed 700's pooled harm probe
    read as ended so, 79 minutes after its cause ended). The probe reads as ended, and
    where the test last stood at its cap still dates the end; without that date the
    quiet period ran from the reading."""
    rng = np.random.default_rng(5)
    ds = DetectorSet(DetectionSettings(), "segment", 1e5)
    det = ds.detectors["confidence"] = FACTORIES["confidence"].make(ds, ())
    values = [*rng.beta(8.0, 2.0, 3000), *rng.beta(4.0, 2.0, 300), *rng.beta(8.0, 2.0, 4)]
    alarms = [i for i, v in enumerate(values) if det.update(float(v)) is not None]
    assert alarms
    assert 3000 <= alarms[0] < 3300, alarms
    ex = det.excess(None, Direction.DOWN)
    assert ex is not None
    assert ex.alarmed
    assert not ex.recovered
    assert ex.quiet_for is not None
    assert ex.quiet_for <= 4  # the test stood at its cap within the drop
    state = det.get_state()
    state["ep"][1] = [0, len(values), 0.0, False]  # the down episode closed (restarted)
    det.set_state(state)
    ex = det.excess(None, Direction.DOWN)
    assert ex is not None
    assert not ex.alarmed
    assert not ex.recovered
    assert ex.quiet_for is not None  # the test's count survives the episode
    ds.trackers["confidence"] = Tracker(
        n=len(values), checkpoints=[[i, 1000.0 + i, {}] for i in range(0, len(values), 32)]
    )
    ds.traffic_t = 1000.0 + len(values)
    key = key_id(ACME)
    probe = Probe(key=key, detector="confidence", feature="mean", direction="down")
    ended: dict[str, float] = {}
    assert probe_health([probe], {key: ds}.get, 600.0, ended) == {probe.id: False}
    assert ended == {probe.id: change_end_t(ds, "confidence", ex.quiet_for)}
    assert 1000.0 + 3000 <= ended[probe.id] <= 1000.0 + len(values)


def _pooled_alarm(seed: int, mult: dict[str, float]) -> tuple[DetectorSet, Signal]:
    """acme's harm rates (toxicity 4 %, hate and violence 2 % each), multiplied by ``mult``
    from output 6,000 on, until the pooled test alarms: the key and that signal."""
    rng = np.random.default_rng(seed)
    ds = DetectorSet(DetectionSettings(), "segment", 1e5)
    det = ds.detectors["harm"] = FACTORIES["harm"].make(ds, ())
    base = {"toxicity": 0.04, "hate": 0.02, "violence": 0.02}
    for i in range(9_000):
        m = mult if i >= 6_000 else {}
        flags = {c: bool(rng.random() < p * m.get(c, 1.0)) for c, p in base.items()}
        ds.see_traffic(float(i))
        signal = det.update(flags)
        if signal is not None and signal.feature == POOLED:
            return ds, signal
    raise AssertionError("the pooled test never alarmed")


def _probe_of(ds: DetectorSet, signal: Signal) -> Probe:
    loc, probes = localize_detection(
        "harm",
        signal,
        ACME,
        (ACME,),
        {key_id(ACME): ds}.get,
        ds.traffic_t,
        lambda _: False,
        GroupingPolicy(),
    )
    assert loc is not None
    assert loc.scope == ACME
    assert len(probes) == 1
    return probes[0]


def test_a_pooled_harm_alarm_is_judged_by_the_category_that_carries_it() -> None:
    """A 4x toxicity spike alarms the pooled harm test too. Its probe is toxicity's test:
    the pooled test's recovery, matched to a smaller relative shift, stands at its cap
    long after the spike (tenant_cascade seed 700: 48 minutes). A rise spread over three
    categories, which the pooled test catches before any category alarms, keeps the
    pooled probe."""
    ds, signal = _pooled_alarm(0, {"toxicity": 4.0})
    probe = _probe_of(ds, signal)
    assert (probe.detector, probe.feature, probe.direction) == ("harm", "toxicity", "up")
    ds, signal = _pooled_alarm(0, {"toxicity": 1.8, "hate": 1.8, "violence": 1.8})
    assert _probe_of(ds, signal).feature == POOLED
