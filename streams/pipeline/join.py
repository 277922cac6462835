"""Stage 1 of the pipeline: the join, partitioned by request id.

Feedback and evaluations often lack the model version, so they are joined to the output
they rate. Join state is bounded: an entry lives ``join_ttl_minutes`` of event time, and at
most ``join_max_entries`` per partition are kept (oldest evicted first). Feedback that
arrives before its output waits in the same bounded state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

from streams.contract.decode import Coordinates
from streams.contract.events import AnyEvent, Evaluation, Feedback, InferenceInput, InferenceOutput
from streams.detection_settings import DetectionSettings
from streams.pipeline.observation import Observation, event_time
from streams.pipeline.sampling import Sampler
from streams.pipeline.state import restore, stamp

Store = MutableMapping[str, Any]
"""A state store: a faust table in the worker, a dict in replay and tests."""


MAX_PARKED: Final = 8
"""Events of one request kept waiting for its output; older ones are dropped (counted in
``JoinStats.expired_unjoined``): join state stays bounded per request id."""


COMPACT_SLACK: Final = 1024
"""A partition's eviction order is rid of its stale entries once they outnumber the live
ones by this many (keys written again, parked events released)."""


@dataclass
class JoinStats:
    """Counters of the join stage (exported as metrics)."""

    joined: int = 0
    parked: int = 0
    expired_unjoined: int = 0
    """Parked events that never met their output: evicted (TTL, or the entry bound), or
    pushed out by newer ones of their request (at most :data:`MAX_PARKED` wait each)."""
    evicted: int = 0
    unsampled: int = 0
    """Observations of requests outside their model's sample, dropped after the join
    (:mod:`streams.pipeline.sampling`; critical outputs among them are not counted: they
    go on)."""


class Joiner:
    """Resolve model and version for feedback and evaluations by request id.

    ``store`` maps ``o:<request_id>`` to the output's labels and ``p:<request_id>`` to
    events waiting for their output. Eviction happens per partition, in the order entries
    were written, from a FIFO that is rebuilt from the store after a restart, so that
    every entry is deleted while processing an event of the partition that owns it.
    """

    def __init__(self, settings: DetectionSettings, store: Store) -> None:
        self.ttl_s = settings.join_ttl_minutes * 60.0
        self.max_entries = settings.join_max_entries
        self.store = store
        self.stats = JoinStats()
        self.sampler = Sampler(settings)
        self._fifo: dict[int, deque[tuple[float, str]]] | None = None
        """Per partition, (time, key) of each write, oldest first: the eviction order. A
        key written again, or deleted, leaves a stale entry behind (skipped when reached)."""
        self._live: dict[int, int] = {}
        """Per partition, the entries in the store: what ``join_max_entries`` bounds (the
        FIFO's length counts stale entries too, and evicted live ones early)."""
        self._held: ContextVar[dict[str, int] | None] = ContextVar("held", default=None)
        """Within :meth:`holding_releases`: the parked entries whose events were released,
        with their partitions, deleted from the store only when the block completes. Per
        asyncio task: the ingress and join agents share this joiner, and each holds its
        own block open across the await of its hand-off."""

    @contextmanager
    def holding_releases(
        self, in_partition: Callable[[int], AbstractContextManager[Any]] = lambda _: nullcontext()
    ) -> Iterator[None]:
        """Keep released parked events in the store until the block completes.

        A worker hands the observations :meth:`process` returns to the next stage inside
        this block. Deleting a parked entry as its output arrives, before the released
        events were handed on, lost them whenever the hand-off raised (the batch is
        retried, and the entry was gone) or the process died between the entry's
        tombstone reaching its changelog and the hand-off's records reaching theirs. Held,
        a failed block leaves the entries in place, so the retried output releases them
        again (at least once). Within the block a released entry reads as absent, so a
        second copy of the output in the same block does not release its events twice
        (one read by another task's block may: a duplicate, as at-least-once allows). The
        deletions run in ``in_partition(partition)`` (the worker's table writes go to the
        changelog partition of the current event).
        """
        if self._held.get() is not None:
            raise RuntimeError("holding_releases is not reentrant within one task")
        released: dict[str, int] = {}
        token = self._held.set(released)
        try:
            yield
        except BaseException:
            self._fifo = None  # a held entry may have left the eviction order: rebuilt
            raise
        finally:
            self._held.reset(token)
        for key, part in released.items():
            if key in self.store:
                with in_partition(part):
                    self._delete(key, part)

    def reassigned(self) -> None:
        """After a rebalance: the eviction order is rebuilt from the store on next use,
        with the entries of the partitions assigned now (restored from their changelog),
        which otherwise would never be evicted."""
        self._fifo = None

    def _fifos(self) -> dict[int, deque[tuple[float, str]]]:
        if self._fifo is None:
            entries = sorted(
                (value.get("t", 0.0), value.get("part", 0), key)
                for key, value in list(self.store.items())
            )
            self._fifo = {}
            self._live = {}
            for t, part, key in entries:
                self._fifo.setdefault(part, deque()).append((t, key))
                self._live[part] = self._live.get(part, 0) + 1
        return self._fifo

    def _read(self, key: str) -> dict[str, Any] | None:
        """A join entry of the current state version (an older one reads as absent; the
        FIFO still evicts it in its own partition)."""
        if (held := self._held.get()) is not None and key in held:
            return None
        value = self.store.get(key)
        return None if value is None else restore("join", value, lambda data: data)

    def _release(self, key: str, partition: int) -> None:
        """A parked entry whose events were released: deleted now, or when the current
        :meth:`holding_releases` block completes."""
        if (held := self._held.get()) is None:
            self._delete(key, partition)
        else:
            held[key] = partition

    def _remember(self, key: str, value: dict[str, Any], partition: int) -> None:
        value = stamp("join", {**value, "part": partition})
        if (held := self._held.get()) is not None:
            held.pop(key, None)  # written again: the new value stays
        fifos = self._fifos()
        if key not in self.store:
            self._live[partition] = self._live.get(partition, 0) + 1
        self.store[key] = value
        fifo = fifos.setdefault(partition, deque())
        fifo.append((value["t"], key))
        if len(fifo) > 2 * self._live[partition] + COMPACT_SLACK:
            fifos[partition] = deque(e for e in fifo if self._current(e))

    def _current(self, entry: tuple[float, str]) -> bool:
        """Whether a FIFO entry is its key's latest write (not stale)."""
        value = self.store.get(entry[1])
        return value is not None and value.get("t") == entry[0]

    def _delete(self, key: str, partition: int) -> None:
        self._fifos()
        del self.store[key]
        self._live[partition] = self._live.get(partition, 1) - 1

    def _evict(self, partition: int, now: float) -> None:
        fifo = self._fifos().get(partition)
        while fifo and (
            now - fifo[0][0] > self.ttl_s or self._live.get(partition, 0) > self.max_entries
        ):
            t, key = fifo.popleft()
            value = self.store.get(key)
            if value is None or value.get("t") != t:
                continue  # overwritten later (a newer FIFO entry owns it), or deleted
            if (held := self._held.get()) is not None and key in held:
                continue  # released: deleted when its block completes, not expired
            if key.startswith("p:"):
                self.stats.expired_unjoined += len(value.get("events", ()))
            else:
                self.stats.evicted += 1
            self._delete(key, partition)

    def process(
        self, event: AnyEvent, coords: Coordinates, partition: int | None = None
    ) -> list[Observation]:
        """Observations ready for detection now (possibly parked events released).

        ``partition`` is the partition that owns this request id's join state (the
        worker's by-request partition); it defaults to the event's own partition.
        """
        part = coords.partition if partition is None else partition
        out: list[Observation] = []
        if isinstance(event, InferenceInput):
            out.append(Observation(event, event.model, event.model_version, event.segment, coords))
        elif isinstance(event, InferenceOutput):
            labels = {
                "m": event.model,
                "v": event.model_version,
                "s": event.segment,
                "t": event_time(event),
            }
            self._remember("o:" + event.request_id, labels, part)
            out.append(Observation(event, event.model, event.model_version, event.segment, coords))
            parked = self._read("p:" + event.request_id)
            if parked is not None:
                self._release("p:" + event.request_id, part)
                for item in parked["events"]:
                    obs = Observation.from_json(item)
                    out.append(self._with_labels(obs.event, obs.coords, labels))
                    self.stats.joined += 1
        else:
            out.extend(self._join(event, coords, part))
        self._evict(part, event_time(event))
        return self._sample(out) if self.sampler.active else out

    def _sample(self, observations: list[Observation]) -> list[Observation]:
        """The observations detection sees (:class:`Sampler`), the others counted."""
        kept: list[Observation] = []
        for obs in observations:
            sampled = self.sampler.keep(obs)
            if sampled is None:
                self.stats.unsampled += 1
            else:
                kept.append(sampled)
        return kept

    def _with_labels(
        self, event: AnyEvent, coords: Coordinates, labels: dict[str, Any]
    ) -> Observation:
        segment = {**labels["s"], **event.segment}
        return Observation(event, labels["m"], labels["v"], segment, coords, labels.get("t"))

    def _join(
        self, event: Feedback | Evaluation, coords: Coordinates, part: int
    ) -> list[Observation]:
        labels = self._read("o:" + event.request_id)
        if event.model is not None and event.model_version is not None:
            # Labelled by its producer: no join needed, but the output's time still
            # dates what it reports on (Observation.served_t).
            served = None if labels is None else labels.get("t")
            return [
                Observation(event, event.model, event.model_version, event.segment, coords, served)
            ]
        if labels is not None:
            self.stats.joined += 1
            return [self._with_labels(event, coords, labels)]
        key = "p:" + event.request_id
        waiting = self._read(key)
        placeholder = Observation(event, "", "", {}, coords).to_json()
        events = [*(waiting["events"] if waiting else []), placeholder]
        if len(events) > MAX_PARKED:
            self.stats.expired_unjoined += len(events) - MAX_PARKED
            events = events[-MAX_PARKED:]
        self._remember(key, {"t": event_time(event), "events": events}, part)
        self.stats.parked += 1
        return []
