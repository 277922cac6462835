"""The detector sets of the keys in memory: how many stay live, when they are written back,
when an idle key goes, and how many keys share the weekly false-alarm budget.

One concern apart from detection itself (:mod:`streams.pipeline.detect`): the memory per
key (issue 17) and the changelog traffic. The ``max_live_keys`` most recently used sets
stay live between batches; a set is written back to the store at most every
``flush_interval_s`` seconds (0: every batch), always before it leaves memory, and on
:meth:`LiveSets.write_dirty` (a model's wall-clock tick, a rebalance, a stop); a key
idle for ``idle_key_hours`` of event time is dropped from memory and from the store (a
changelog tombstone) and frees its cardinality slot. The keys seen since the last
rebalance are the budget's key count (:func:`streams.pipeline.budget.seconds_per_test`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from alerting.model import labels_of_key
from alerting.relearn import RelearnBook
from streams.detection_settings import DetectionSettings
from streams.pipeline.cardinality import CardinalityFold
from streams.pipeline.detectorset import DetectorSet, per_test_seconds
from streams.pipeline.expiry import IdleKeys
from streams.pipeline.frozen import FrozenStore, is_frozen_key
from streams.pipeline.join import Store
from streams.pipeline.state import restore, stamp

log = logging.getLogger(__name__)

EXPIRE_PER_BATCH: Final = 1000
"""Idle keys dropped per batch at most (bounded work; the rest go with the next batches)."""

WriteScope: TypeAlias = Callable[[str], contextlib.AbstractContextManager[Any]]
"""The context a key's store writes run in: the worker's puts them in the changelog
partition of the key's model (:func:`streams.runtime.agents.register_pipeline`), whatever
partition's batch is being handled (an evicted or expired key may be another's)."""


def one_store(kid: str) -> contextlib.AbstractContextManager[Any]:
    """The write scope of a store without partitions (replay, tests)."""
    return contextlib.nullcontext()


class LiveSets:
    """Detector sets by key id, over the detector store (a faust table in the worker)."""

    def __init__(
        self,
        settings: DetectionSettings,
        store: Store,
        fold: CardinalityFold,
        arl0: float,
        *,
        flush_interval_s: float,
        clock: Callable[[], float],
        write_scope: WriteScope = one_store,
    ) -> None:
        self.settings = settings
        self.store = store
        self.frozen = FrozenStore(store)
        """The sets' records in ``store``, their frozen values written once per key."""
        self.write_scope = write_scope
        self.fold = fold
        self.arl0 = arl0
        """Per-test ARL0 floor in events of a new set (see :class:`Detect`)."""
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.live: dict[str, DetectorSet] = {}
        """Deserialized detector sets, least recently used first (at most max_live_keys)."""
        self._written: dict[str, float] = {}
        self._dirty: set[str] = set()
        """Live keys changed since their last write to the store."""
        self._counted: set[str] = set()
        """Live keys sharing the weekly budget (added on first use, removed on expiry)."""
        self._seconds = (-1, 0.0)
        """(key count, per-test ARL0 in seconds at that count); -1: not computed yet."""
        self.share = 1.0
        """This worker's share of the service's weekly budget (:meth:`set_share`)."""
        self.idle = IdleKeys()
        self.idle_s = settings.idle_key_hours * 3600.0
        self._seed = True
        self._horizon = -math.inf
        self.relearns = RelearnBook()
        """Operator re-learns (:mod:`alerting.relearn`): a set applies those covering its
        key when it is next used."""

    def invalidate(self, keep: Callable[[str], bool] | None = None) -> None:
        """Forget the in-memory sets after a rebalance: another worker may own, and
        change, their state in the meantime. ``keep``: the keys whose sets stay, with
        their changes not yet written (their partition stayed with this worker, so no
        one else touched them); the others are read back from the store when their key
        returns."""
        for kid in [k for k in self.live if keep is None or not keep(k)]:
            del self.live[kid]
            self._written.pop(kid, None)
            self._dirty.discard(kid)
        self.frozen.retain(lambda kid: keep is not None and keep(kid))
        if keep is None:
            self._counted.clear()
        else:
            self._counted = {k for k in self._counted if keep(k)}
        self.idle.clear()
        self._seed = True

    def known(self, kid: str) -> bool:
        """Whether key ``kid`` has a set, live or stored."""
        return kid in self.live or kid in self.store

    def get(self, kid: str, level: str, cache: dict[str, DetectorSet]) -> DetectorSet:
        """Key ``kid``'s set for this batch (``cache``): live, restored, or new."""
        ds = cache.get(kid) or self.live.get(kid)
        if ds is not None:
            cache[kid] = ds
        else:
            state = self.store.get(kid)
            restored = (
                restore(
                    "detectors",
                    state,
                    lambda data: DetectorSet.from_json(
                        self.frozen.read(kid, data), self.settings, level, self.arl0
                    ),
                )
                if state is not None
                else None
            )
            if state is not None and restored is None:
                with self.write_scope(kid):
                    self.frozen.discard(kid, state)
            ds = restored or DetectorSet(self.settings, level, self.arl0)
            cache[kid] = ds
        self._counted.add(kid)
        if ds.relearn_generation != self.relearns.generation:
            for rec, dropped in ds.follow_relearns(self.relearns, labels_of_key(kid)):
                if dropped:
                    log.info(
                        "re-learning %s on key %s: %s (by %s, %s)",
                        ",".join(dropped),
                        kid,
                        rec.id,
                        rec.requested_by,
                        rec.reason,
                    )
        return ds

    def key_arl0(self, kid: str) -> float | None:
        """The per-test ARL0 in events that key ``kid`` runs at now (``None`` for a key not
        live): what its budget gives each of its tests (benchmarks compare against it)."""
        ds = self.live.get(kid)
        return ds.arl0 if ds is not None else None

    def set_share(self, owned: int, partitions: int) -> None:
        """This worker owns ``owned`` of the ``partitions`` detection partitions: its keys
        share that fraction of the weekly budget (a worker that owns none keeps 1: it
        runs no detector)."""
        share = min(1.0, owned / partitions) if owned > 0 and partitions > 0 else 1.0
        if share != self.share:
            self.share = share
            self._seconds = (-1, 0.0)

    def budget_seconds(self) -> float:
        """Per-test ARL0 in seconds for the live keys (recomputed when their count or the
        worker's share changes)."""
        keys = len(self._counted)
        if self._seconds[0] != keys:
            self._seconds = (keys, per_test_seconds(self.settings, keys, self.share))
        return self._seconds[1]

    def keep(self, sets: dict[str, DetectorSet]) -> None:
        """Keep the touched sets live; write them back at the flush interval.

        At most ``max_live_keys`` sets stay live, least recently used first out: a set
        leaving is written back first if it changed since its last write, and lives on
        only in the store (read back if its key returns). Without the bound every key
        was held twice, live and in the store (issue 17's memory per key)."""
        wall = self.clock()
        for kid, ds in sets.items():
            self.live.pop(kid, None)
            self.live[kid] = ds  # most recently used last
            if wall - self._written.get(kid, -math.inf) >= self.flush_interval_s:
                self._write(kid, ds, wall)
            else:
                self._dirty.add(kid)
        excess = len(self.live) - self.settings.max_live_keys
        if excess > 0:
            for kid in list(itertools.islice(self.live, excess)):
                ds = self.live.pop(kid)
                if kid in self._dirty:
                    self._write(kid, ds, wall)
                self._written.pop(kid, None)
                self.frozen.forget(kid)

    def write_dirty(self, select: Callable[[str], bool]) -> int:
        """Write back now every live set that changed since its last write and whose key
        ``select`` accepts; how many. The flush interval only defers a write to a key's next
        batch: a key that went quiet would keep its last changes in memory alone, and a
        rebalance, a stop or a crash would lose them (up to the whole catch-up of a backlog,
        which a worker reads in seconds). The worker calls this at each model's wall-clock
        tick and when it drains before a rebalance or a stop."""
        wall = self.clock()
        due = [kid for kid in self._dirty if select(kid)]
        for kid in due:
            self._write(kid, self.live[kid], wall)
        return len(due)

    def _write(self, kid: str, ds: DetectorSet, wall: float) -> None:
        with self.write_scope(kid):
            self.frozen.write(kid, stamp("detectors", ds.to_json()))
        self._written[kid] = wall
        self._dirty.discard(kid)

    def expire(self, sets: dict[str, DetectorSet], touched: dict[str, float]) -> bool:
        """Track the keys this batch touched; drop keys idle for ``idle_key_hours`` of event
        time from memory and from the store (a changelog tombstone), at most
        :data:`EXPIRE_PER_BATCH` per batch, and free their cardinality slots. Whether any
        key went."""
        if not touched:
            return False
        newest = max(touched.values())
        if self._seed:
            self._seed = False
            self.idle.seed([k for k in self.store if not is_frozen_key(k)], newest)
        for kid, t in touched.items():
            self.idle.touch(kid, t)
        self._horizon = max(self._horizon, newest - self.idle_s)
        due = self.idle.due(self._horizon, EXPIRE_PER_BATCH)
        for kid in due:
            self.live.pop(kid, None)
            self._counted.discard(kid)
            self._written.pop(kid, None)
            self._dirty.discard(kid)
            sets.pop(kid, None)
            with self.write_scope(kid):
                self.frozen.delete(kid)
            labels = labels_of_key(kid)
            for label, value in labels.segment.items():
                self.fold.release(labels.model, label, value)
            if labels.version is not None and not labels.segment:
                self.fold.release(labels.model, "version", labels.version)
        return bool(due)
