"""A detector set's frozen values (fitted references) are stored once per key, not at
every flush, and a set read back from the store is the set that was written."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from typing import Any

from alerting.model import Labels
from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from detectors.base import Frozen
from streams.console.views import model_views
from streams.pipeline import state
from streams.pipeline.detect import Detect
from streams.pipeline.frozen import MIN_ITEMS, NAMES, REF, FrozenStore, is_frozen_key
from streams.pipeline.keys import key_id
from streams.pipeline.observation import Observation
from streams.pipeline.state import RESETS, encode, stamp
from streams.runtime.agents import key_partition
from streams.settings import load_settings
from tests.unit.pipeline.test_detect_state import _observations

BATCH = 250


class Recording(dict[str, Any]):
    """A store that logs its writes and deletes in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, str]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.ops.append(("set", key))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.ops.append(("del", key))
        super().__delitem__(key)


@functools.cache
def _simulated() -> list[Observation]:
    """Two hours of one simulated service: its model keys fit their references (1,000
    inputs for the drift tests) in the first."""
    return _observations(10**9, seed=3, hours=2.0)


def _detect(store: dict[str, Any]) -> Detect:
    det = load_settings(env={}).detection
    policy, playbooks = load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir)
    return Detect(det, policy, playbooks, store, {}, flush_interval_s=0.0, clock=lambda: 0.0)


def _batches(obs: list[Observation]) -> list[list[Observation]]:
    return [obs[i : i + BATCH] for i in range(0, len(obs), BATCH)]


def _text(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=True)


def test_a_mature_keys_references_are_written_once_and_read_back_in_place() -> None:
    obs = _simulated()
    store = Recording()
    detect = _detect(store)
    kid = key_id(Labels(model=obs[0].model))
    batches = _batches(obs)
    half = len(batches) // 2
    for batch in batches[:half]:
        detect.process(batch)
    assert store[kid].get(NAMES), "the model key fitted no reference in the first hour"
    written_before = {key for op, key in store.ops if op == "set" and is_frozen_key(key)}
    store.ops.clear()
    for batch in batches[half:]:
        detect.process(batch)
    record_writes = sum(1 for op, key in store.ops if op == "set" and key == kid)
    assert record_writes == len(batches) - half  # flushed with every batch ...
    rewritten = {key for op, key in store.ops if op == "set" and key in written_before}
    assert not rewritten  # ... its stored references never again
    # Every record reads back to its live set, byte for byte, and names only values
    # that are stored; no stored value is left that no record names.
    named: set[str] = set()
    for key, ds in detect.live_sets.live.items():
        record = store[key]
        named.update(record.get(NAMES, ()))
        read = FrozenStore(store).read(key, record)
        assert _text(read) == _text(stamp("detectors", ds.to_json()))
    assert named == {key for key in store if is_frozen_key(key)}
    # What a flush of the model key sends: the record without its references.
    inline = len(encode(stamp("detectors", detect.live_sets.live[kid].to_json())))
    assert len(encode(store[kid])) < 0.6 * inline


def test_a_set_read_back_from_the_store_is_the_live_one_and_writes_no_copy() -> None:
    obs = _simulated()
    batches = _batches(obs)
    half = len(batches) // 2
    store = Recording()
    detect = _detect(store)
    for batch in batches[:half]:
        detect.process(batch)
    written = {k: (ds.level, _text(ds.to_json())) for k, ds in detect.live_sets.live.items()}
    stored = {key for key in store if is_frozen_key(key)}
    assert stored
    detect.invalidate()  # a rebalance: every set is read back from the store
    for kid, (level, text) in written.items():
        assert _text(detect.live_sets.get(kid, level, {}).to_json()) == text
    store.ops.clear()
    detect.process(batches[half])
    assert any(op == "set" and not is_frozen_key(key) for op, key in store.ops)
    assert not [key for op, key in store.ops if key in stored]  # kept, not written again


def test_a_replaced_value_is_deleted_after_the_record_that_drops_it() -> None:
    store = Recording()
    frozen = FrozenStore(store)
    old, new = Frozen(range(MIN_ITEMS)), Frozen(range(1, MIN_ITEMS + 1))
    small = Frozen(range(MIN_ITEMS - 1))
    frozen.write("m|*|", {"d": {"x": {"sorted": old, "small": small}}})
    assert store.ops == [("set", "#m|*|#0"), ("set", "m|*|")]
    assert store["m|*|"]["d"]["x"] == {"sorted": {REF: "#m|*|#0"}, "small": small}
    store.ops.clear()
    frozen.write("m|*|", {"d": {"x": {"sorted": old, "small": small}}})
    assert store.ops == [("set", "m|*|")]  # the same value: not written again
    store.ops.clear()
    frozen.write("m|*|", {"d": {"x": {"sorted": new, "small": small}}})
    assert store.ops == [("set", "#m|*|#1"), ("set", "m|*|"), ("del", "#m|*|#0")]
    # Values in lists of states (a young key's prior charts) come back where they were.
    nested = {"charts": [{"spaces": new}, new], "rows": [[1.0, 2.0]]}
    frozen.write("m|*|", {"d": nested})
    read = FrozenStore(store).read("m|*|", store["m|*|"])
    assert read == {"d": nested}
    assert store["m|*|"]["d"]["charts"] == [{"spaces": {REF: "#m|*|#1"}}, {REF: "#m|*|#1"}]
    # A set that left memory is deleted with its values, read from its record.
    frozen.forget("m|*|")
    frozen.delete("m|*|")
    assert dict(store) == {}


def test_a_record_whose_value_is_missing_relearns_and_an_old_record_is_read() -> None:
    obs = _simulated()
    batches = _batches(obs)
    store: dict[str, Any] = {}
    detect = _detect(store)
    for batch in batches[: len(batches) // 2]:
        detect.process(batch)
    kid = key_id(Labels(model=obs[0].model))
    live = detect.live_sets.live[kid]
    detect.invalidate()
    # A record of the version before frozen values were stored apart (every value in
    # place) is read as it is: an upgrade keeps its baselines.
    old = {**json.loads(_text(stamp("detectors", live.to_json()))), "_v": 4}
    store[kid] = old
    read = detect.live_sets.get(kid, "model", {})
    assert _text(read.to_json()) == _text(live.to_json())
    # A record naming a value the store lost does not restore: the key relearns.
    detect.invalidate()
    detect.process(batches[len(batches) // 2])
    detect.invalidate()
    record = store[kid]
    del store[record[NAMES][0]]
    resets = RESETS["detectors"]
    fresh = detect.live_sets.get(kid, "model", {})
    assert RESETS["detectors"] == resets + 1
    assert not fresh.detectors
    assert len(record[NAMES]) > 1
    assert not [name for name in record[NAMES] if name in store]  # the others given up


def test_the_console_shows_every_key_of_a_mature_store_with_its_references() -> None:
    """The console folds the detector changelog itself: it reads the references back
    and does not take the stored values for keys."""
    store: dict[str, Any] = {}
    detect = _detect(store)
    batches = _batches(_simulated())
    for batch in batches[: len(batches) // 2]:
        detect.process(batch)
    changelog = {k: state.decode(encode(v)) for k, v in store.items()}  # as the console reads
    keys = {k for k in store if not is_frozen_key(k)}
    assert len(keys) < len(store)  # some references are stored apart
    settings = load_settings(env={}).detection
    for cap in (500, len(keys)):
        shown = {
            row.key
            for view in model_views(changelog, {}, settings, max_keys=cap)
            for row in view.rows
        }
        assert shown == keys


PARTITIONS = 2


class _Changelogs(dict[str, Any]):
    """faust's memory store: one dict, each write also sent to the changelog partition of
    faust's current event (``current``)."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.sent: dict[int, dict[str, Any]] = {p: {} for p in range(PARTITIONS)}

    def __setitem__(self, key: str, value: Any) -> None:
        self.sent[self.current][key] = value
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.sent[self.current].pop(key, None)  # compacted: the tombstone wins
        super().__delitem__(key)


def test_every_write_of_a_key_goes_to_its_models_partition() -> None:
    """A busy worker evicts and expires keys of other partitions while it handles one
    partition's batch: those writes still go to the key's own changelog partition, so a
    worker that takes a partition over finds each record there with the references it
    names."""
    det = load_settings(env={}).detection.model_copy(update={"max_live_keys": 10})
    store = _Changelogs()

    @contextlib.contextmanager
    def home(kid: str) -> Iterator[None]:
        before, store.current = store.current, key_partition(kid, PARTITIONS)
        try:
            yield
        finally:
            store.current = before

    wall = [0.0]
    policy, playbooks = load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir)
    detect = Detect(
        det,
        policy,
        playbooks,
        store,
        {},
        flush_interval_s=5.0,
        clock=lambda: wall[0],
        write_scope=home,
    )
    for batch in _batches(_simulated()):
        wall[0] += 1.0
        parts: dict[int, list[Observation]] = {}
        for obs in batch:
            parts.setdefault(key_partition(obs.model + "|*|", PARTITIONS), []).append(obs)
        for part, group in parts.items():  # one partition's records at a time, as the worker
            store.current = part
            detect.process(group)
    detect.live_sets.write_dirty(lambda kid: True)
    for part, sent in store.sent.items():
        for kid, record in sent.items():
            if is_frozen_key(kid):
                continue
            assert key_partition(kid, PARTITIONS) == part
            assert record == store[kid]
            assert all(name in sent for name in record.get(NAMES, ()))
    assert sum(len(sent) for sent in store.sent.values()) == len(store)
