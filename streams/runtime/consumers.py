"""Thin kafka-python loops around the pure logic: containment here, and the client
plumbing it shares with the notify loop (:mod:`streams.runtime.notify_consumer`).

Each loop polls the alerts topic (``should_stop`` is checked between polled batches of at
most 100 records), hands every record to a pure ``handle_*`` function and
commits the record's offset only after it was delivered, dead-lettered or published (the
producer future is awaited first). A crash therefore re-processes at most the records after
the last commit; event ids make those duplicates harmless. The consumer and producer are
injectable (anything with kafka-python's ``poll``/``commit``/``send`` shape), so the loops
are unit-tested without a broker. No faust here, and no import of ``streams``.

Every Kafka client built here takes ``security``: the kafka-python keyword arguments for
the cluster's transport security (``streams.kafka.security.kafka_python_kwargs`` of the
``kafka.security`` settings, which the ``sentinel`` commands pass). They are handed to
each client's constructor as they are, so a SASL_SSL cluster is reached the same way by
all of them; ``None`` means PLAINTEXT. They hold the password: never log them.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from alerting.clock import Clock, SystemClock
from alerting.containment import ContainmentState, ModelContainment, commands_for, fold_control
from alerting.model import IncidentEvent, iso_utc
from alerting.playbooks import PlaybookSet
from streams.kafka import clients
from streams.kafka.clients import SEND_TIMEOUT_S, ClientSecurity
from streams.kafka.topics import polled_records, read_topic_to_end

log = logging.getLogger(__name__)


class RecordLike(Protocol):
    topic: str
    partition: int
    offset: int
    value: bytes | None


class FutureLike(Protocol):
    def get(self, timeout: float | None = None) -> Any: ...


class ProducerLike(Protocol):
    def send(self, topic: str, value: bytes | None = ..., key: bytes | None = ...) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...


class ConsumerLike(Protocol):
    def poll(self, timeout_ms: int = ..., max_records: int | None = ...) -> Any: ...

    def commit(self, offsets: Any = ...) -> None: ...

    def seek(self, partition: Any, offset: int) -> None: ...

    def close(self) -> None: ...


def send_and_wait(producer: ProducerLike, topic: str, key: bytes | None, value: bytes) -> None:
    """Publish one record and wait for the broker's ack (raises on failure), so the input
    record is committed only after its output is safe."""
    future = producer.send(topic, value=value, key=key)
    future.get(timeout=SEND_TIMEOUT_S)


def commit_record(consumer: ConsumerLike, record: RecordLike) -> None:
    """Commit the offset after ``record``: it is handled and is not read again."""
    from kafka.structs import OffsetAndMetadata, TopicPartition

    tp = TopicPartition(record.topic, record.partition)
    consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})


def undecodable_record(record: RecordLike, reason: str, at: str) -> bytes:
    """Dead-letter value for a record that is not a valid IncidentEvent."""
    return json.dumps(
        {
            "reason": reason,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "value_b64": base64.b64encode(record.value or b"").decode(),
            "failed_at": at,
        }
    ).encode()


def decode_event(value: bytes | None) -> IncidentEvent:
    if value is None:
        raise ValueError("empty record value")
    return IncidentEvent.model_validate_json(value)


@dataclass
class LoopStats:
    processed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.processed += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def is_assigned(consumer: Any) -> bool:
    """Whether a consumer has partitions to read yet (a group join can take seconds on a
    busy broker; a consumer without ``assignment``, e.g. an injected one, counts as ready)."""
    assignment = getattr(consumer, "assignment", None)
    return True if assignment is None else bool(assignment())


def group_consumer(
    servers: list[str],
    alerts_topic: str,
    group: str,
    security: ClientSecurity,
    consumer_options: Mapping[str, Any] | None = None,
) -> Any:
    """A group's consumer of ``alerts_topic`` for the notify and containment loops:
    offsets committed by hand (after each record is handled), a new group starting from
    the earliest record."""
    built = clients.consumer(
        servers,
        security,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **(consumer_options or {}),
    )
    built.subscribe([alerts_topic])
    return built


def handle_containment_event(
    event: IncidentEvent, state: ContainmentState, playbooks: PlaybookSet, *, dry_run: bool
) -> tuple[ContainmentState, list[ModelContainment]]:
    """Pure step: new state and the snapshots to publish (keyed by model; none for a
    command that changes nothing)."""
    snapshots: list[ModelContainment] = []
    for cmd in commands_for(event, playbooks, dry_run=dry_run):
        new = state.apply(cmd, event.sequence)
        if new is state:
            continue
        state = new
        snap = state.snapshot(cmd.model)
        if snap is not None:
            snapshots.append(snap)
    return state, snapshots


def restore_containment_state(
    consumer: ConsumerLike, *, idle_polls: int = 3, poll_timeout_ms: int = 500
) -> ContainmentState:
    """Read a control topic (already assigned, from the beginning) into a state."""
    values: list[bytes | None] = []
    idle = 0
    while idle < idle_polls:
        records = polled_records(consumer.poll(timeout_ms=poll_timeout_ms, max_records=500))
        if not records:
            idle += 1
            continue
        idle = 0
        values += [r.value for r in records]
    return _folded(values)


def _folded(values: Iterable[bytes | None]) -> ContainmentState:
    state, bad = fold_control(values)
    if bad:
        log.warning("ignored %d invalid control record(s) while restoring containment", bad)
    return state


def containment_loop(
    consumer: ConsumerLike,
    producer: ProducerLike | None,
    control_topic: str,
    playbooks: PlaybookSet,
    *,
    state: ContainmentState,
    dry_run: bool,
    should_stop: Callable[[], bool],
    dead_letter_raw: Callable[[bytes], None] | None = None,
    clock: Clock,
    poll_timeout_ms: int = 1000,
    commit: bool = True,
    stats: LoopStats | None = None,
    on_poll: Callable[[int, bool], None] | None = None,
) -> ContainmentState:
    """Apply playbooks for every alert; publish snapshots (unless dry-run); commit.

    Per-record outcomes counted in ``stats``: ``published`` (snapshots sent),
    ``would_publish`` (dry run), ``no_action`` and ``undecodable``. ``commit=False`` for a
    consumer without a group (a dry run must not move the real group's offsets).
    """
    stats = stats if stats is not None else LoopStats()
    while not should_stop():
        records = polled_records(consumer.poll(timeout_ms=poll_timeout_ms, max_records=100))
        if on_poll is not None:
            on_poll(len(records), is_assigned(consumer))
        for record in records:
            try:
                event = decode_event(record.value)
            except (ValidationError, ValueError) as exc:
                if dead_letter_raw is not None:
                    dead_letter_raw(undecodable_record(record, str(exc), iso_utc(clock.now())))
                if commit:
                    commit_record(consumer, record)
                stats.count("undecodable")
                continue
            state, snapshots = handle_containment_event(event, state, playbooks, dry_run=dry_run)
            for snap in snapshots:
                if dry_run or producer is None:
                    log.warning(
                        "DRY RUN: would publish to %s: %s", control_topic, snap.model_dump_json()
                    )
                else:
                    send_and_wait(producer, control_topic, snap.key(), snap.to_json_bytes())
            if commit:
                commit_record(consumer, record)
            if not snapshots:
                stats.count("no_action")
            else:
                stats.count("would_publish" if dry_run or producer is None else "published")
    return state


def run_containment_consumer(
    bootstrap: str,
    alerts_topic: str,
    control_topic: str,
    playbooks: PlaybookSet,
    *,
    dry_run: bool,
    should_stop: Callable[[], bool],
    dead_letter_topic: str | None = None,
    group_id: str = "sentinel-containment",
    clock: Clock | None = None,
    stats: LoopStats | None = None,
    on_poll: Callable[[int, bool], None] | None = None,
    security: ClientSecurity = None,
) -> ContainmentState:
    """``sentinel contain [--dry-run]``: publish playbook containment to ``control_topic``.

    On start the current state is restored from the compacted control topic, so releases
    after a restart still remove the right measures.

    A dry run publishes nothing (no control records, no dead letters) and joins no consumer
    group: it reads the alerts topic from the beginning and commits no offsets, so it never
    moves the real containment group's position. It ends once it has read up to the end
    offsets the alerts topic had when it started: it shows the current plan, then stops.
    """
    clock = clock or SystemClock()
    state = _folded(r.value for r in read_topic_to_end(bootstrap, control_topic, security=security))
    servers = [bootstrap] if isinstance(bootstrap, str) else bootstrap
    if dry_run:
        consumer, at_end = _read_to_current_end(servers, alerts_topic, security)
        user_stop = should_stop

        def should_stop() -> bool:
            return user_stop() or at_end()

    else:
        consumer = group_consumer(servers, alerts_topic, group_id, security)
    producer = None if dry_run else clients.producer(servers, security)

    def dead_letter_raw(value: bytes) -> None:
        if dead_letter_topic is not None and producer is not None:
            send_and_wait(producer, dead_letter_topic, None, value)

    try:
        return containment_loop(
            consumer,
            producer,
            control_topic,
            playbooks,
            state=state,
            dry_run=dry_run,
            should_stop=should_stop,
            dead_letter_raw=dead_letter_raw,
            clock=clock,
            commit=not dry_run,
            stats=stats,
            on_poll=on_poll,
        )
    finally:
        consumer.close()
        if producer is not None:
            producer.flush(timeout=SEND_TIMEOUT_S)
            producer.close()


def _read_to_current_end(
    bootstrap: list[str], topic: str, security: ClientSecurity
) -> tuple[Any, Callable[[], bool]]:
    """A consumer without a group assigned every partition of ``topic`` from the beginning,
    and a predicate that is true once it has read up to the end offsets of now (at once
    for a topic that is empty or does not exist)."""
    from kafka import TopicPartition

    consumer = clients.consumer(
        bootstrap,
        security,
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
    )
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    ends: dict[Any, int] = {}
    if parts:
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)

    def at_end() -> bool:
        return all(consumer.position(tp) >= ends[tp] for tp in parts)

    return consumer, at_end
