"""Faust agents: event topics -> ingress (+ join) -> detect -> alerts topic.

Three agents, two internal topics, and three changelog-backed tables:

``ingress``  (raw event topics) decodes and validates each record once (dead letters to
             the dead-letter topic) and joins it right there when the record already sits
             in its request id's partition (keyed by request id with Kafka's default
             partitioner, as the SDK and the simulator publish, and the topic has the
             service's partition count). Other records go to ``<app_id>-by-request``.
``join``     (by request id) joins the records that arrived elsewhere.
             Both resolve model and version of feedback and evaluations from the output
             they rate (table ``join``) and send the observations on to
             ``<app_id>-by-model``.
``detect``   (by model) runs the keyed detectors (table ``detectors``, one entry per
             model / version / segment key) and one incident engine per model (table
             ``engines``), and publishes incident events to the alerts topic keyed by
             their dedup key.

Everything after faust's own per-record work is batched: agents take batches from their
streams (``take_events``), and the internal topics carry *envelopes* of many observations
(one per model, or per target partition, per batch), so an event costs one faust record,
not three. A faust table sends a changed key to the changelog partition of the *current
event*, so state is written while the current event is a record of the partition that
owns it: state always follows its partition on rebalance. Table values are plain JSON,
always written back, never mutated in place.

Processing is at-least-once. After a crash, events since the last commit are processed
again; the incident engine drops detections it has seen and gives every incident event a
stable id, so a record processed twice never creates a second incident.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2
from faust.exceptions import ConsumerNotStarted
from faust.serializers.codecs import Codec
from faust.streams import _current_event
from faust.tables.base import Collection
from faust.types import TableT

from alerting.model import IncidentEvent
from alerting.playbooks import load_playbooks
from alerting.policy import Silence, load_policy
from alerting.relearn import relearn_topic
from alerting.silences import (
    SilenceRecord,
    active_silences,
    fold_silence_records,
    silences_topic,
)
from streams.contract.decode import Coordinates, IngressLimits
from streams.kafka.security import kafka_python_kwargs
from streams.kafka.topics import watermarks_topic
from streams.pipeline import state
from streams.pipeline.detect import Detect, logged_nth
from streams.pipeline.join import Joiner
from streams.pipeline.keys import model_of_key
from streams.pipeline.live_sets import WriteScope
from streams.pipeline.load import WATCH_INTERVAL_S, LoadWatch
from streams.pipeline.observation import Observation
from streams.pipeline.sampling import sample_fraction, sampled_models
from streams.runtime.batching import BatchApp, BatchConsumer, Peers
from streams.runtime.draining import DrainingApp
from streams.runtime.ingress import (
    TAKE_MAX,
    TAKE_WITHIN_S,
    Accepted,
    Ingress,
    raw_topic,
    register_ingress,
)
from streams.runtime.solves import BackgroundSolves
from streams.settings import Settings

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 30.0
"""Wall-clock period of the engines' tick (resolve, escalate at deadlines without traffic)."""
DETECT_CHUNK = 10
"""Observations the detect agent processes between yields to the event loop. Each new key
builds and calibrates detectors, and an HTTP request needs several turns of the loop: long
turns left /metrics and /healthz unanswered under load. Chunks this small cost nothing in
total (measured in docs/validation.md, "Event-loop turns")."""
TICK: bytes = b'{"tick":true}'
"""A by-model record that asks the partition's owner to tick that model's engine."""

ENVELOPE_BYTES = 256 * 1024
"""Target size of one envelope on an internal topic (well under Kafka's 1 MiB default
message limit; one observation larger than this travels alone)."""


@dataclass
class Service:
    """What :func:`register_pipeline` put on the app (for metrics, status and tests)."""

    ingress: Ingress
    joiner: Joiner
    detect: Detect
    tables: dict[str, TableT[str, Any]]
    topics: dict[str, faust.TopicT]
    processed_hooks: list[Callable[[Sequence[Observation]], None]] = field(default_factory=list)
    """Called with each batch after detection (e.g. the processing-latency histogram)."""
    solves: BackgroundSolves | None = None
    """Where threshold solves run while the worker runs (``worker.background_solves``)."""
    load_watch: LoadWatch | None = None
    """What detection needs of the worker for its traffic (:mod:`streams.pipeline.load`)."""


@contextlib.contextmanager
def _as_current(event: Any) -> Iterator[None]:
    """Make ``event`` faust's current event, so table writes go to its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int


@dataclass(frozen=True)
class _PartitionWrite:
    """faust's current event for a table write made outside an event's handling: faust's
    table reads only the message's topic (to check that its partition count matches the
    changelog's) and partition (the changelog partition the write goes to)."""

    message: _Message


def _in_key_partition(topic: str, partitions: int) -> WriteScope:
    """The write scope of the detector table: a key's writes go to the changelog partition
    of its model, the by-model ``topic``'s partition that owns it, also when another
    partition's batch evicts or expires it."""

    def scope(kid: str) -> contextlib.AbstractContextManager[None]:
        return _as_current(_PartitionWrite(_Message(topic, key_partition(kid, partitions))))

    return scope


def _by_partition(events: Sequence[Any]) -> list[list[Any]]:
    groups: dict[tuple[str, int], list[Any]] = {}
    for event in events:
        tp = (event.message.topic, event.message.partition)
        groups.setdefault(tp, []).append(event)
    return list(groups.values())


def home_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as in the Java client, kafka-
    python and aiokafka) gives ``key`` among ``partitions``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def key_partition(kid: str, partitions: int) -> int:
    """The detection (and changelog) partition of a detector key's state: its model's."""
    return home_partition(model_of_key(kid).encode(), partitions)


def envelopes(observations: Sequence[Observation]) -> Iterator[bytes]:
    """Observations packed as JSON arrays of at most about :data:`ENVELOPE_BYTES`. Text
    stays UTF-8 (not ``\\u`` escapes, which made a record of emoji text three times its
    size, past what the producer sends)."""
    parts: list[bytes] = []
    size = 0
    for obs in observations:
        item = observation_bytes(obs)
        if parts and size + len(item) > ENVELOPE_BYTES:
            yield b"[" + b",".join(parts) + b"]"
            parts, size = [], 0
        parts.append(item)
        size += len(item) + 1
    if parts:
        yield b"[" + b",".join(parts) + b"]"


def observation_bytes(obs: Observation) -> bytes:
    """One observation as the internal topics carry it (an item of an envelope; the value
    of its dead letter when detection raised on it)."""
    return json.dumps(obs.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def unwrap(value: bytes) -> list[Observation]:
    """The observations of an envelope (a lone object: one observation, as an earlier
    version of the service wrote them)."""
    data = json.loads(value)
    items = data if isinstance(data, list) else [data]
    return [Observation.from_json(item) for item in items]


class StateCodec(Codec):
    """The faust codec of the detectors and engines tables: it writes :func:`state.encode`'s
    bytes and reads them back *as bytes*, which :func:`state.restore` decodes when the
    pipeline first uses the key (bytes given to write go out as they are).

    faust decodes every changelog record a worker reads: a recovery reads a partition's
    history (every write of every key, each a whole detector set or engine), and a
    RocksDB standby follows all of another worker's writes. RocksDB stores a record's raw
    bytes and dropped what had been decoded; the memory store keeps each key's last value,
    which the pipeline reads once it uses the key. Decoded on read, a value costs its
    decompression and JSON parse only when it is used (docs/validation.md, "Stop 64")."""

    def _dumps(self, s: Any) -> bytes:
        return s if isinstance(s, bytes) else state.encode(s)

    def _loads(self, s: bytes) -> Any:
        return s


def register_pipeline(app: faust.App, settings: Settings) -> Service:
    """Register the ingress, join and detect agents and their tables on ``app``."""
    det = settings.detection
    partitions = settings.kafka.topic_partitions
    # Internal: faust creates them with the table partition count (co-partitioning).
    topics = {
        stage: raw_topic(app, name, partitions=partitions, internal=True)
        for stage, name in settings.worker.internal_topics.items()
    }
    topics["alerts"] = raw_topic(app, settings.topics.alerts, partitions=partitions)
    tables: dict[str, TableT[str, Any]] = {
        name: app.Table(name, default=None, key_type=str, value_type=None, partitions=partitions)
        for name in ("join", "detectors", "engines")
    }
    # faust takes a table's codec from its value type only, and made the changelog topic
    # (which recovery decodes with) when it registered the table: set the codec and make
    # the topic again, before the store and the changelog are first used. A join entry
    # is small and stays plain JSON.
    for name in ("detectors", "engines"):
        table = tables[name]
        assert isinstance(table, Collection)
        table.value_serializer = StateCodec()
        table.changelog_topic = table._new_changelog_topic()
    joiner = Joiner(det, tables["join"])
    for model, fraction in sampled_models(det).items():
        # Not silent: this worker's pages for the model rest on part of its requests.
        log.warning(
            "detection of model %r sees %.3g of its requests (detection.sample_fractions)",
            model,
            fraction,
        )
    detect = Detect(
        det,
        load_policy(det.alerting_policy),
        load_playbooks(det.playbooks_dir),
        tables["detectors"],
        tables["engines"],
        flush_interval_s=det.state_flush_seconds,
        write_scope=_in_key_partition(topics["by_model"].get_topic_name(), partitions),
        isolate_failures=True,
    )
    agents = _Agents(app, partitions, topics, joiner, detect, settings.worker.load_watch_seconds)
    app.on_partitions_assigned.connect(agents.on_assigned)
    if isinstance(app, DrainingApp):
        app.drained.append(agents.write_back)
    window = IngressLimits(
        max_past_s=settings.detection.max_past_hours * 3600.0,
        max_future_s=settings.detection.max_future_seconds,
    )
    ingress = agents.ingress = register_ingress(app, settings, agents.to_join, limits=window)
    _follow_silences(app, settings, detect)
    _follow_relearns(app, settings, detect)
    _follow_watermarks(app, settings)
    app.timer(TICK_INTERVAL_S)(agents.wall_clock_tick)
    app.agent(topics["by_request"], name="sentinel.join")(agents.join)
    app.agent(topics["by_model"], name="sentinel.detect")(agents.detect_batches)
    service = Service(
        ingress=ingress,
        joiner=joiner,
        detect=detect,
        tables=tables,
        topics=topics,
        processed_hooks=agents.hooks,
        load_watch=agents.load_watch,
    )
    if settings.worker.background_solves:
        _solve_in_background(app, service)
    return service


SOLVES_COLLECT_S: Final = 0.5
"""Seconds between collections of background threshold solves besides the one after each
detect batch."""


def _solve_in_background(app: faust.App, service: Service) -> None:
    """Threshold solves in a child process while the app runs (streams.runtime.solves):
    installed when the app starts, answers collected after each detect batch and every
    :data:`SOLVES_COLLECT_S` (so that requests still go out while no batch comes), the
    child stopped at shutdown."""
    solves = service.solves = BackgroundSolves()

    def collect(observations: Sequence[Observation]) -> None:
        solves.collect()

    async def install() -> None:
        solves.install()

    async def collect_idle() -> None:
        solves.collect()

    service.processed_hooks.append(collect)
    app.task(install)
    app.timer(SOLVES_COLLECT_S)(collect_idle)

    def close(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        solves.close()

    app.on_before_shutdown.connect(close)


class _Agents:
    """The bodies of the pipeline's agents, its timer and its rebalance hook, over the
    topics and stages :func:`register_pipeline` made (one instance per app)."""

    def __init__(
        self,
        app: faust.App,
        partitions: int,
        topics: dict[str, faust.TopicT],
        joiner: Joiner,
        detect: Detect,
        load_watch_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self.app = app
        self.partitions = partitions
        self.by_request, self.by_model = topics["by_request"], topics["by_model"]
        self.alerts = topics["alerts"]
        self.joiner = joiner
        self.detect = detect
        self.load_watch = LoadWatch(
            detect.load, lambda m: sample_fraction(detect.settings, m), interval_s=load_watch_s
        )
        """Warns when detection needs most of the worker for its traffic (looked at after
        each detect batch and at each wall-clock tick, at most once an interval)."""
        self.hooks: list[Callable[[Sequence[Observation]], None]] = []
        self.failures = 0
        """Records of the internal topics the join or detection raised on since the process
        started (dead-lettered, or a tick skipped)."""
        self.ingress: Ingress | None = None
        """Where records the join and detection cannot handle go (its dead-letter topic):
        set once the ingress is registered."""
        self.owned: frozenset[int] = frozenset()
        """The detection (by-model) partitions this worker owns since the last assignment."""

    def on_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """After a rebalance (faust sends the assigned topic partitions): keep the live
        detector sets of the detection partitions this worker owned before and still
        owns (no one else touched them, and their unwritten changes stay); drop the
        others, which another worker may have changed. This worker's share of the
        false-alarm budget follows the detection partitions it now owns."""
        assigned = args[0] if args else kwargs.get("assigned", ())
        topic = self.by_model.get_topic_name()
        owned = frozenset(tp.partition for tp in assigned if tp.topic == topic)
        stayed, self.owned = owned & self.owned, owned

        self.detect.invalidate(lambda kid: self.partition_of_key(kid) in stayed)
        self.joiner.reassigned()
        self.detect.live_sets.set_share(len(owned), self.partitions)
        log.info(
            "detection partitions: %d of %d (%d kept their live state); "
            "false-alarm budget share %d/%d",
            len(owned),
            self.partitions,
            len(stayed),
            len(owned),
            self.partitions,
        )

    def partition_of_key(self, kid: str) -> int:
        """The detection partition (and changelog partition) of a detector key's state:
        its model's."""
        return key_partition(kid, self.partitions)

    def write_back(self) -> None:
        """Write every detector set changed since its last write, each to its model's
        partition: when the agents have drained for a rebalance or a stop
        (:class:`~streams.runtime.draining.DrainingApp`), so that the next owner restores
        what this worker learned."""
        topic = self.by_model.get_topic_name()
        for part in range(self.partitions):

            def in_part(kid: str, part: int = part) -> bool:
                return self.partition_of_key(kid) == part

            with _as_current(_PartitionWrite(_Message(topic, part))):
                written = self.detect.live_sets.write_dirty(in_part)
            if written:
                log.info("wrote %d detector set(s) of partition %d back", written, part)

    def in_place(self, item: Accepted, rid: bytes, home: int, partitions: int | None) -> bool:
        """Whether the record sits in the partition that owns its request id's join state
        (its topic has ``partitions`` partitions, as the join's topic has)."""
        return item.key == rid and item.coords.partition == home and partitions == self.partitions

    def _join_partition(self, part: int) -> contextlib.AbstractContextManager[None]:
        """The write scope of the join table's ``part``: the by-request topic's."""
        return _as_current(_PartitionWrite(_Message(self.by_request.get_topic_name(), part)))

    async def to_detect(self, observations: Sequence[Observation]) -> None:
        """Observations to the by-model topic, in envelopes per model."""
        per_model: dict[str, list[Observation]] = {}
        for obs in observations:
            per_model.setdefault(obs.model, []).append(obs)
        for model, group in per_model.items():
            for envelope in envelopes(group):
                await self.by_model.send(key=model.encode(), value=envelope)

    async def to_join(self, items: Sequence[Accepted]) -> None:
        """The ingress's accepted events: joined here when they sit in their request id's
        partition, else sent there (by-request topic)."""
        local: dict[int, list[Accepted]] = {}
        elsewhere: dict[int, list[Observation]] = {}
        counts: dict[str, int | None] = {}
        for item in items:
            rid = item.event.request_id.encode()
            home = home_partition(rid, self.partitions)
            topic = item.coords.topic
            if topic not in counts:
                counts[topic] = partition_count(self.app.consumer, topic)
            if self.in_place(item, rid, home, counts[topic]):
                local.setdefault(home, []).append(item)
            else:
                placeholder = Observation(item.event, "", "", {}, item.coords)
                elsewhere.setdefault(home, []).append(placeholder)
        for home, group in elsewhere.items():
            for envelope in envelopes(group):
                await self.by_request.send(value=envelope, partition=home)
        with self.joiner.holding_releases(self._join_partition):
            ready: list[Observation] = []
            for part, mine in local.items():
                with _as_current(mine[0].record):
                    for item in mine:
                        ready.extend(self.joiner.process(item.event, item.coords, part))
            await self.to_detect(ready)

    async def join(self, stream: Any) -> None:
        """Agent over the by-request topic: join, then on to detection."""
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            with self.joiner.holding_releases(self._join_partition):
                ready: list[Observation] = []
                for record in batch:
                    with _as_current(record):
                        part = record.message.partition
                        try:  # the whole envelope goes on, or is dead-lettered whole
                            joined = [
                                j
                                for obs in unwrap(record.value)
                                for j in self.joiner.process(obs.event, obs.coords, part)
                            ]
                        except Exception as exc:
                            await self._set_aside(record, exc)
                        else:
                            ready += joined
                await self.to_detect(ready)

    async def detect_batches(self, stream: Any) -> None:
        """Agent over the by-model topic: detection and the engines' wall-clock ticks, per
        partition of each batch, then the incident events to the alerts topic."""
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            for group in _by_partition(batch):
                ticks = [r for r in group if r.value == TICK]
                observations: list[Observation] = []
                for record in group:
                    if record.value != TICK:
                        try:
                            observations += unwrap(record.value)
                        except Exception as exc:
                            await self._set_aside(record, exc)
                with _as_current(group[-1]):
                    incidents = []
                    for part in self.detect.process_steps(observations, DETECT_CHUNK):
                        incidents += part
                        await asyncio.sleep(0)  # let /metrics, health and heartbeats in
                    for record in ticks:
                        try:  # (a tick is no data: nothing to dead-letter)
                            incidents += self.detect.tick_wall(record.key.decode())
                        except Exception:
                            self._log_failure(record.message)
                for failure in self.detect.take_failures():
                    obs = failure.observation
                    await self._dead_letter(observation_bytes(obs), obs.coords, failure.error)
                for hook in self.hooks:
                    hook(observations)
                await self.publish(incidents)
            self.watch_load()

    async def _set_aside(self, record: Any, exc: Exception) -> None:
        """An internal topic's record that a stage raised on: dead-lettered at its own
        coordinates (it holds the observations), and the batch goes on."""
        msg = record.message
        self._log_failure(msg)
        coords = Coordinates(msg.topic, msg.partition, msg.offset)
        await self._dead_letter(record.value, coords, f"{type(exc).__name__}: {exc}")

    def _log_failure(self, msg: Any) -> None:
        """The exception being handled, on an internal topic's record (``msg``: its faust
        message), logged at the 1st, 2nd, 4th, 8th, ... failure of the process."""
        self.failures += 1
        if logged_nth(self.failures):
            log.exception(
                "failed on %s[%d]@%d, the batch goes on (failure %d of this process; logged "
                "at the 1st, 2nd, 4th, 8th, ...)",
                msg.topic,
                msg.partition,
                msg.offset,
                self.failures,
            )

    async def _dead_letter(self, raw: bytes | None, coords: Coordinates, error: str) -> None:
        if self.ingress is None:  # (an app without the ingress: nowhere to put it)
            raise RuntimeError(f"no dead-letter topic for {coords}: {error}")
        await self.ingress.dead_letters.handler_error(raw, None, coords, error)

    async def publish(self, incidents: Sequence[IncidentEvent]) -> None:
        """Incident events to the alerts topic (keyed by dedup key), each logged."""
        for incident in incidents:
            await self.alerts.send(key=incident.key(), value=incident.to_json_bytes())
            log.info(
                "incident %s %s %s %s",
                incident.action,
                incident.incident_type,
                incident.labels.describe(),
                incident.severity,
            )

    def watch_load(self) -> None:
        """The look at what detection needs (:class:`streams.pipeline.load.LoadWatch`): a
        warning when it needed most of the worker over the last interval, naming the models
        and the sample fractions that would relieve it."""
        report = self.load_watch.check()
        if report is not None:
            log.warning("%s", report.message())

    async def wall_clock_tick(self) -> None:
        """Engines tick on the wall clock too: a tick record per model this worker has
        seen, through the by-model topic, so the partition's owner ticks it with the
        partition's table (state writes need the current event's partition)."""
        self.watch_load()
        for model in self.detect.models():
            await self.by_model.send(key=model.encode(), value=TICK)


def partition_count(consumer: Any, topic: str) -> int | None:
    """How many partitions ``topic`` has, by the cluster metadata of faust's consumer
    (None: not known). Not faust's ``Consumer.topic_partitions``: that reads the group
    coordinator's metadata snapshot, which aiokafka keeps on the group's leader only, so
    on every other worker it said "unknown" and every event took the by-request topic to
    its join (docs/validation.md, "Stop 63")."""
    try:
        cluster = consumer._thread._ensure_consumer()._client.cluster
        parts = cluster.partitions_for_topic(topic)
    except (AttributeError, KeyError, ConsumerNotStarted):
        return None
    return len(parts) if parts else None


class SilenceFollower:
    """The worker's view of the silences topic (``sentinel silence``, the console): every
    engine holds the silences active for its model.

    Only once the follower has read the topic to the end it saw at start: until then an
    engine keeps the silences stored with it (``Detect.silences`` stays unset). Before, it
    was set at once with nothing read yet, and each engine restored in the first seconds
    after a start lost its runtime silences: a maintenance window paged."""

    def __init__(self, detect: Detect) -> None:
        self.detect = detect
        self.state: dict[str, SilenceRecord] = {}

    def fold(self, records: list[tuple[bytes | None, bytes | None]]) -> None:
        """One fetch's ``(key, value)`` pairs, in log order (a tombstone deletes its
        silence: the fold's result replaces the state, not updates it)."""
        self.state = fold_silence_records(records, self.state)

    def active(self, now: datetime, model: str) -> list[Silence]:
        return active_silences(self.state, now, model=model)

    def caught_up(self) -> None:
        self.detect.silences = self.active


def _follow_silences(app: faust.App, settings: Settings, detect: Detect) -> None:
    """Silences added with ``sentinel silence`` reach every engine (:class:`SilenceFollower`)."""
    follower = SilenceFollower(detect)
    topic = silences_topic(settings.topics.control)
    _follow_control(app, settings, topic, follower.fold, caught_up=follower.caught_up)


def _follow_relearns(app: faust.App, settings: Settings, detect: Detect) -> None:
    """Re-learns requested with ``sentinel relearn`` (or in the console) reach every key's
    detectors (:class:`alerting.relearn.RelearnBook`, applied as each key is next used)."""
    _follow_control(app, settings, relearn_topic(settings.topics.control), detect.relearns.update)


def _follow_watermarks(app: faust.App, settings: Settings) -> None:
    """Each worker with the batch ingress publishes its low watermark and follows the
    other workers' (:class:`streams.runtime.batching.Peers`), so that a group draining a
    backlog stays in step in event time across its workers. The fetch loop publishes
    after each fetch call; this timer keeps it fresh while a delivery waits and deletes
    dead workers' records; a clean stop deletes the worker's own."""
    if not isinstance(app, BatchApp):
        return
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    peers = app.peers = Peers(me, watermarks_topic(settings.topics.control))
    _follow_control(app, settings, peers.topic, peers.fold)

    async def refresh() -> None:
        consumer = app.consumer
        if isinstance(consumer, BatchConsumer):
            await consumer.publish_watermark()
            await consumer.forget_gone_peers()

    async def farewell(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        consumer = app.consumer
        if isinstance(consumer, BatchConsumer):
            await consumer.farewell()

    app.timer(1.0)(refresh)
    app.on_before_shutdown.connect(farewell)


def _follow_control(
    app: faust.App,
    settings: Settings,
    topic: str,
    fold: Callable[[list[tuple[bytes | None, bytes | None]]], None],
    *,
    caught_up: Callable[[], None] | None = None,
) -> None:
    """Every worker follows a (single-partition, compacted) control topic from the start,
    handing each fetch's ``(key, value)`` pairs to ``fold``; ``caught_up`` is called once,
    when the topic has been read to the end it had when the follower started."""

    async def follow() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=_bootstrap(app),
            enable_auto_commit=False,
            **_aiokafka_security(settings),
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            waiting = caught_up
            while True:
                if waiting is not None and await consumer.position(tp) >= end:
                    waiting()
                    waiting = None
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    fold([(r.key, r.value) for r in records])
        finally:
            await consumer.stop()

    app.task(follow)


def _aiokafka_security(settings: Settings) -> dict[str, Any]:
    """aiokafka takes kafka-python's security arguments, except the hostname check (which
    lives in the SSL context)."""
    kwargs = kafka_python_kwargs(settings.kafka.security)
    kwargs.pop("ssl_check_hostname", None)
    return kwargs


def _bootstrap(app: faust.App) -> list[str]:
    return [f"{url.host}:{url.port or 9092}" for url in app.conf.broker]
