"""The console's state: folded from the Kafka topics, followed live, nothing else kept.

Sources (no second source of truth; restart the console and it rebuilds the same state):

* alerts topic: every incident event, folded per incident id (:class:`IncidentIndex`:
  the latest step of an incident is its state, as in ``sentinel incidents``);
* control topic (compacted, per model): the containment snapshots ``sentinel contain``
  publishes (:class:`alerting.containment.ContainmentState`);
* ``<control>.silences``: silences (:func:`alerting.silences.fold_silence_records`);
* ``<control>.operator``: acknowledgements and manual resolutions
  (:mod:`alerting.operator`);
* the worker's ``<app_id>-detectors-changelog`` and ``<app_id>-engines-changelog``
  (compacted, faust tables): each key's detector state (how close it is to its threshold,
  its traffic) and each model's deploys, for the Models page.

Startup: one group-less consumer reads every partition of these topics from the beginning
and builds the index in memory; the web server answers from the first second and says how
far the read is. Validating an incident event costs far more than reading it, so the index
keeps each event's bytes and validates only the latest event of each incident as it
changes, and an incident's older events when its page is opened (:class:`IncidentIndex`).
It keeps polling after that, so new records show up within a poll (0.5 s). Everything
here is guarded by one lock; the follower thread writes, request handlers read.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from alerting.containment import ContainmentState, Measure, ModelContainment
from alerting.model import IncidentEvent
from alerting.operator import OperatorAction, Overlay, operator_topic, overlay
from alerting.silences import SilenceRecord, fold_silence_records, silences_topic
from streams.investigation.incidents import IncidentFilter, IncidentLog, select
from streams.kafka.security import kafka_python_kwargs
from streams.pipeline.state import decode as decode_state
from streams.settings import Settings

log = logging.getLogger(__name__)

POLL_MS: Final = 500
REFRESH_TOPICS_S: Final = 5.0
"""How often the follower looks for partitions of topics created after it started."""


@dataclass(frozen=True)
class Sources:
    """The topic of each kind of record the console folds."""

    alerts: str
    control: str
    silences: str
    operator: str
    detectors: str
    engines: str

    @classmethod
    def of(cls, settings: Settings) -> Sources:
        t, app = settings.topics, settings.worker.app_id
        return cls(
            alerts=t.alerts,
            control=t.control,
            silences=silences_topic(t.control),
            operator=operator_topic(t.control),
            detectors=f"{app}-detectors-changelog",
            engines=f"{app}-engines-changelog",
        )

    def all(self) -> list[str]:
        return [
            self.alerts,
            self.control,
            self.silences,
            self.operator,
            self.detectors,
            self.engines,
        ]


@dataclass
class Progress:
    """How far the startup read is (records, and when the first end was reached)."""

    started_monotonic: float
    records_read: int = 0
    records_at_start: int | None = None
    caught_up_s: float | None = None


def _table_key(key: bytes | None) -> str | None:
    """A faust table key as written to its changelog (JSON string or raw text)."""
    if key is None:
        return None
    text = key.decode(errors="replace")
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) else text
    return text


_HEAD: Final = re.compile(
    rb'"event_id":"([^"\\]+)","incident_id":"([^"\\]+)","dedup_key":"[^"\\]*","sequence":(\d+)'
)
"""The identity of an incident event as ``IncidentEvent.to_json_bytes`` writes it."""


class IncidentIndex:
    """Incident events per incident id, validated lazily.

    :meth:`add` reads an event's id, incident id and sequence from the head of its JSON
    (a full validation when the head is not in the usual form) and keeps the bytes;
    :meth:`latest` validates the highest-sequence event of each incident that changed
    since the last call; :meth:`history` validates one incident's events. Duplicates (the
    same event id, re-emitted after a crash) are kept once. An event that fails
    validation is counted in ``invalid`` and left out.
    """

    def __init__(self) -> None:
        self.raw: dict[str, dict[str, tuple[int, bytes]]] = {}
        self._latest: dict[str, IncidentEvent] = {}
        self._dirty: set[str] = set()
        self.invalid = 0

    def __len__(self) -> int:
        return len(self.raw)

    def add(self, value: bytes) -> str:
        """Index one alerts-topic value; returns its incident id. Raises ``ValueError``
        (``ValidationError``) for a value that is not an incident event."""
        head = _HEAD.search(value, 0, 512)
        if head is None:
            event = IncidentEvent.model_validate_json(value)
            event_id, incident_id, sequence = event.event_id, event.incident_id, event.sequence
        else:
            event_id, incident_id = head.group(1).decode(), head.group(2).decode()
            sequence = int(head.group(3))
        self.raw.setdefault(incident_id, {})[event_id] = (sequence, value)
        self._dirty.add(incident_id)
        return incident_id

    def _decode(self, incident_id: str, event_id: str) -> IncidentEvent | None:
        _, value = self.raw[incident_id][event_id]
        try:
            return IncidentEvent.model_validate_json(value)
        except ValidationError:
            self.invalid += 1
            del self.raw[incident_id][event_id]
            return None

    def refresh(self) -> None:
        """Validate the latest event of every incident that changed."""
        for incident_id in self._dirty:
            self._latest.pop(incident_id, None)
            while self.raw.get(incident_id):
                evs = self.raw[incident_id]
                event_id = max(evs, key=lambda e: evs[e][0])
                event = self._decode(incident_id, event_id)
                if event is not None:
                    self._latest[incident_id] = event
                    break
            if not self.raw.get(incident_id):
                self.raw.pop(incident_id, None)
        self._dirty.clear()

    def latest(self) -> list[IncidentEvent]:
        self.refresh()
        return list(self._latest.values())

    def history(self, incident_id: str) -> list[IncidentEvent]:
        """The events of one incident by sequence. Raises ``LookupError`` if unknown."""
        evs = self.raw.get(incident_id)
        if not evs:
            raise LookupError(incident_id)
        order = sorted(evs, key=lambda e: evs[e][0])
        out = [ev for ev in (self._decode(incident_id, e) for e in order) if ev is not None]
        if not out:
            raise LookupError(incident_id)
        return out


@dataclass
class ConsoleState:
    """Everything the pages show, folded from :class:`Sources` records in log order."""

    sources: Sources
    monotonic: Callable[[], float] = time.monotonic
    lock: threading.RLock = field(default_factory=threading.RLock)
    index: IncidentIndex = field(default_factory=IncidentIndex)
    silence_records: dict[str, SilenceRecord] = field(default_factory=dict)
    containment: ContainmentState = field(default_factory=ContainmentState)
    actions: dict[str, list[OperatorAction]] = field(default_factory=dict)
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    invalid: Counter[str] = field(default_factory=Counter)
    version: int = 0
    changes: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=2000))
    folded: dict[tuple[str, int], int] = field(default_factory=dict)
    """Per (topic, partition), the offset of the last record folded."""
    progress: Progress = field(init=False)
    _folded_cond: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.progress = Progress(self.monotonic())
        self._folded_cond = threading.Condition(self.lock)

    def note_folded(self, topic: str, partition: int, offset: int) -> None:
        """Record that the record at ``offset`` was folded (call with the lock held)."""
        key = (topic, partition)
        if offset > self.folded.get(key, -1):
            self.folded[key] = offset
            self._folded_cond.notify_all()

    def wait_folded(self, topic: str, partition: int, offset: int, timeout_s: float) -> bool:
        """Wait until the record at ``offset`` is folded (read your own writes: a page
        shown after an action shows it). False when ``timeout_s`` passed first."""
        with self._folded_cond:
            return self._folded_cond.wait_for(
                lambda: self.folded.get((topic, partition), -1) >= offset, timeout_s
            )

    # -- folding -------------------------------------------------------------------------

    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Fold one record (call with the lock held, records of a partition in order).
        A record that does not decode is counted in :attr:`invalid`, not raised: an
        exception here would end the follower's thread."""
        s = self.sources
        self.progress.records_read += 1
        changed = ""
        try:
            if topic == s.alerts:
                if value is None:
                    return
                changed = self.index.add(value)
            elif topic == s.operator:
                if value is None:
                    return
                action = OperatorAction.model_validate_json(value)
                acts = self.actions.setdefault(action.incident_id, [])
                if all(a.action_id != action.action_id for a in acts):
                    acts.append(action)
                changed = action.incident_id
            elif topic == s.silences:
                self.silence_records = fold_silence_records([(key, value)], self.silence_records)
                changed = "silences"
            elif topic == s.control:
                if value is None:
                    return
                snap = ModelContainment.model_validate_json(value)
                self.containment = self.containment.with_snapshot(snap)
                cmd = snap.last_command
                changed = cmd.incident_id if cmd is not None else "containment"
            elif topic in (s.detectors, s.engines):
                name = _table_key(key)
                if name is None:
                    return
                store = self.detectors if topic == s.detectors else self.engines
                if value is None:
                    store.pop(name, None)
                else:
                    data = decode_state(value)
                    if isinstance(data, dict):
                        store[name] = data
                changed = "models"
        except (ValidationError, ValueError, RecursionError):  # (JSON nested too deep)
            self.invalid[topic] += 1
            return
        if changed:
            self.version += 1
            self.changes.append((self.version, changed))

    # -- reading (hold the lock) ---------------------------------------------------------

    def changed_since(self, version: int) -> list[str]:
        return [what for v, what in self.changes if v > version]

    def incidents(self, flt: IncidentFilter) -> list[IncidentEvent]:
        latest = self.index.latest()
        return select(IncidentLog(events={e.incident_id: [e] for e in latest}), flt)

    def history(self, incident_id: str) -> list[IncidentEvent]:
        return self.index.history(incident_id)

    def overlay(self, incident_id: str) -> Overlay:
        actions = self.actions.get(incident_id, [])
        if not actions or incident_id not in self.index.raw:
            return overlay([], [])
        return overlay(self.index.history(incident_id), actions)

    def incident_actions(self, incident_id: str) -> list[OperatorAction]:
        return sorted(self.actions.get(incident_id, []), key=lambda a: a.at)

    def measures(self, event: IncidentEvent) -> list[Measure]:
        snap = self.containment.snapshot(event.labels.model)
        if snap is None:
            return []
        return [m for m in snap.measures if m.incident_id == event.incident_id]

    def counts_by_model(self) -> dict[str, tuple[int, int]]:
        """Per model: (open incidents, all incidents)."""
        out: dict[str, list[int]] = {}
        for ev in self.index.latest():
            row = out.setdefault(ev.labels.model, [0, 0])
            row[1] += 1
            if ev.status.value != "resolved":
                row[0] += 1
        return {m: (v[0], v[1]) for m, v in sorted(out.items())}


class Follower:
    """One background thread: reads :class:`Sources` from the beginning, then follows.

    ``consumer_factory`` builds a kafka-python ``KafkaConsumer``-shaped object (injected in
    tests). Partitions of topics that appear later (the silences topic is created by the
    first silence) are picked up every :data:`REFRESH_TOPICS_S`.
    """

    def __init__(self, state: ConsoleState, consumer_factory: Callable[[], Any]) -> None:
        self.state = state
        self._factory = consumer_factory
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-follower", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # surfaced on the pages and in /healthz
            self.error = exc
            log.exception("console follower stopped")

    def _follow(self) -> None:
        from kafka.structs import TopicPartition

        consumer = self._factory()
        state = self.state
        try:
            assigned: list[Any] = []
            initial_ends: dict[Any, int] = {}
            next_refresh = 0.0
            while not self._stop.is_set():
                now = state.monotonic()
                if now >= next_refresh:
                    next_refresh = now + REFRESH_TOPICS_S
                    found = [
                        TopicPartition(topic, p)
                        for topic in state.sources.all()
                        for p in sorted(consumer.partitions_for_topic(topic) or ())
                    ]
                    new = [tp for tp in found if tp not in assigned]
                    if new:
                        positions = {tp: consumer.position(tp) for tp in assigned}
                        assigned = assigned + new
                        consumer.assign(assigned)
                        for tp, pos in positions.items():
                            consumer.seek(tp, pos)
                        consumer.seek_to_beginning(*new)
                        if state.progress.records_at_start is None:
                            ends = consumer.end_offsets(new)
                            starts = consumer.beginning_offsets(new)
                            initial_ends = {tp: int(ends[tp]) for tp in new}
                            with state.lock:
                                state.progress.records_at_start = sum(
                                    int(ends[tp]) - int(starts[tp]) for tp in new
                                )
                polled = consumer.poll(timeout_ms=POLL_MS, max_records=20_000)
                with state.lock:
                    for batch in polled.values():
                        for rec in batch:
                            state.apply(rec.topic, rec.key, rec.value)
                        if batch:
                            last = batch[-1]
                            state.note_folded(last.topic, last.partition, last.offset)
                    state.index.refresh()
                if state.progress.caught_up_s is None and (
                    state.progress.records_at_start is not None
                    and all(consumer.position(tp) >= end for tp, end in initial_ends.items())
                ):
                    with state.lock:
                        state.progress.caught_up_s = (
                            state.monotonic() - state.progress.started_monotonic
                        )
                    log.info(
                        "console: read %d records in %.2f s; following",
                        state.progress.records_read,
                        state.progress.caught_up_s,
                    )
        finally:
            consumer.close()


def kafka_consumer_factory(settings: Settings, servers: Iterable[str]) -> Callable[[], Any]:
    """Build the follower's group-less consumer (no offsets committed, nothing disturbed)."""
    servers = list(servers)

    def make() -> Any:
        from kafka import KafkaConsumer

        return KafkaConsumer(
            bootstrap_servers=servers,
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            client_id="sentinel-console",
            fetch_max_bytes=64 * 1024 * 1024,
            # kafka-python checks record CRCs in pure Python unless the optional crc32c
            # package is installed: most of the startup read's time. The broker checked
            # them when the records were produced, and TCP guards the transfer.
            check_crcs=False,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            **kafka_python_kwargs(settings.kafka.security),
        )

    return make
