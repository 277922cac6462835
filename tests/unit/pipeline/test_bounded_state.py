"""Bounded detector state (issue 17 item 4): label values over the limit fold into
``other``, idle keys expire from memory and from the store (tombstones)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from streams.pipeline.cardinality import OTHER, CardinalityFold
from streams.pipeline.detect import Detect
from streams.pipeline.expiry import IdleKeys
from streams.pipeline.observation import Observation
from streams.settings import load_settings
from tests.unit.pipeline.test_detect_state import _observations


def _detect(store: dict[str, object], **overrides: object) -> Detect:
    settings = load_settings(env={})
    det = settings.detection.model_copy(update=overrides)
    return Detect(
        det, load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir), store, {}
    )


def _flood(obs: list[Observation]) -> list[Observation]:
    """Every observation from a tenant never seen before."""
    return [
        dataclasses.replace(o, segment={**o.segment, "tenant": f"flood-{i}"})
        for i, o in enumerate(obs)
    ]


def test_a_tenant_flood_folds_into_other_and_the_store_stays_bounded() -> None:
    store: dict[str, object] = {}
    detect = _detect(store, max_label_values=5)
    obs = _flood(_observations(400))
    detect.process(obs)
    models = {o.model for o in obs}
    for model in models:
        tenants = {k for k in store if k.startswith(f"{model}|*|tenant=")}
        assert len(tenants) == 6, sorted(tenants)  # five admitted values + other
        assert f"{model}|*|tenant={OTHER}" in store
        assert detect.fold.admitted()[(model, "tenant")] == 5
    assert sum(detect.fold.folded.values()) == len(obs) - 5 * len(models)


def test_versions_fold_over_their_limit() -> None:
    fold = CardinalityFold(max_label_values=10, max_versions=2)
    assert [fold.version("m", v) for v in ("a", "b", "c", "a", "d")] == [
        "a",
        "b",
        OTHER,
        "a",
        OTHER,
    ]
    assert fold.folded[("m", "version")] == 2
    fold.release("m", "version", "a")
    assert fold.version("m", "d") == "d"


def test_idle_keys_expire_from_memory_and_store_and_free_their_slot() -> None:
    store: dict[str, object] = {}
    detect = _detect(store, idle_key_hours=1.0, max_label_values=1000)
    obs = _observations(300)
    first = _flood(obs[:100])
    detect.process(first)
    flooded = {k for k in store if "|tenant=flood-" in k}
    assert len(flooded) == 100
    # Two hours of event time later, other traffic arrives: the flood's keys are idle.
    later = [
        dataclasses.replace(
            o,
            event=o.event.model_copy(update={"timestamp": o.event.timestamp + timedelta(hours=2)}),
        )
        for o in obs[100:300]
    ]
    detect.process(later)
    assert not any("|tenant=flood-" in k for k in store)
    assert not any("|tenant=flood-" in k for k in detect.live_sets.live)
    assert detect.live_sets.idle.expired >= 100
    model = obs[0].model
    assert detect.fold.admitted().get((model, "tenant"), 0) < 100
    assert detect.live_sets.idle.by_level["segment"] == sum(1 for k in store if k.split("|")[2])


def test_idle_keys_pop_in_touch_order_with_a_bound_per_call() -> None:
    idle = IdleKeys()
    idle.seed(["m|*|", "m|v|"], 0.0)
    for i in range(5):
        idle.touch(f"m|*|tenant=t{i}", float(i))
    assert idle.due(horizon=3.0, max_keys=2) == ["m|*|", "m|v|"]
    assert idle.due(horizon=3.0, max_keys=10) == ["m|*|tenant=t0", "m|*|tenant=t1", "m|*|tenant=t2"]
    assert len(idle) == 2
    assert idle.by_level["segment"] == 2


def test_live_sets_are_bounded_and_an_evicted_set_is_written_back_first() -> None:
    """At most ``max_live_keys`` detector sets stay deserialized; one leaving is written
    back if it changed since its last write (here nothing is flushed before eviction), so
    the store ends up as it would with every set live and written every batch, and the
    incidents are the same."""
    obs = _flood(_observations(400))
    full: dict[str, object] = {}
    unbounded = _detect(full, max_label_values=1000)
    expected = [unbounded.process(obs[i : i + 50]) for i in range(0, len(obs), 50)]
    store: dict[str, object] = {}
    settings = load_settings(env={})
    det = settings.detection.model_copy(update={"max_label_values": 1000, "max_live_keys": 5})
    bounded = Detect(
        det,
        load_policy(det.alerting_policy),
        load_playbooks(det.playbooks_dir),
        store,
        {},
        flush_interval_s=1e9,  # written only on first sight and on eviction
        clock=lambda: 0.0,
    )
    got = [bounded.process(obs[i : i + 50]) for i in range(0, len(obs), 50)]
    assert [[e.event_id for e in b] for b in got] == [[e.event_id for e in b] for b in expected]
    assert len(bounded.live_sets.live) == 5
    assert set(store) == set(full)
    evicted = [k for k in store if k not in bounded.live_sets.live]
    assert len(evicted) == len(full) - 5
    assert all(store[k] == full[k] for k in evicted)
