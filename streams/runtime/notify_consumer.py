"""``sentinel notify``: the kafka-python loop that delivers the alerts topic to one sink.

:func:`run_notify_consumer` reads the alerts topic in its consumer group, hands every
record to a :class:`alerting.delivery.DeliveryRunner` (:func:`handle_alert_record`) and
commits its offset only after it was delivered or dead-lettered; during a retry backoff
the consumer keeps polling with its partitions paused (:func:`polling_sleep`), so a long
outage of the endpoint does not cost it its group membership. A refreshing sink
(Alertmanager) first takes up the open incidents of the whole topic. The guarantees and
the client plumbing it shares with the containment loop are in
:mod:`streams.runtime.consumers`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from alerting.clock import Clock, SystemClock
from alerting.delivery import DeliveryRunner, FailedDelivery, RetryPolicy, handled_sequences
from alerting.delivery_state import DeliveryState, fold_delivery_states, refs_of
from alerting.model import IncidentEvent, iso_utc
from alerting.sinks import ReferencingSink, RefreshingSink, Sink
from alerting.status import fold_open_incidents
from alerting.transport import HttpTransport, UrllibTransport
from streams.kafka import clients
from streams.kafka.clients import SEND_TIMEOUT_S, ClientSecurity
from streams.kafka.topics import polled_records, read_topic_to_end
from streams.runtime.consumers import (
    ConsumerLike,
    LoopStats,
    ProducerLike,
    RecordLike,
    commit_record,
    decode_event,
    group_consumer,
    is_assigned,
    send_and_wait,
    undecodable_record,
)

log = logging.getLogger(__name__)


MEMBER_POLL_S = 1.0
"""While a delivery backs off, the consumer polls (its partitions paused) this often."""


HANDED_OVER: Final = "handed_over"
"""The outcome of a record whose delivery stopped because a rebalance during its backoff
took partitions from this member: not committed, delivered by whoever reads it next."""


class PartitionsRevokedError(Exception):
    """A rebalance during a backoff took partitions from this member (raised by the sleep
    of :func:`polling_sleep`). The delivery in progress may be of one of them: its new
    owner reads it from the last commit and delivers it, so going on would page twice (and
    the late commit could move the new owner's offset back)."""

    def __init__(self, lost: set[Any]) -> None:
        super().__init__(f"partitions revoked during a backoff: {sorted(map(str, lost))}")
        self.lost = lost


def polling_sleep(
    consumer: Any, sleep: Callable[[float], None] = time.sleep, *, slice_s: float = MEMBER_POLL_S
) -> Callable[[float], None]:
    """A ``sleep`` for retry backoffs that keeps ``consumer`` in its group.

    kafka-python drops a member that has not polled for ``max_poll_interval_ms`` (5 min by
    default), and a delivery retries for ``retry_for_s`` (30 min): after such an outage the
    commit failed and ``sentinel notify`` exited. During a backoff this pauses the
    consumer's partitions and polls in slices of ``slice_s``, then resumes them. A
    rebalance inside a poll can hand the member a partition that is not paused: whatever
    a poll returns is sought back (read again after the backoff), and every partition is
    paused again before the next slice. A rebalance that takes a partition away ends the
    backoff with :class:`PartitionsRevokedError`. After each slice ``sleep(0)``: a stop
    requested meanwhile (:meth:`streams.cli.common.Stopper.sleep` raises) ends the backoff
    then, not when the retries run out.
    """

    def _sleep(seconds: float) -> None:
        held = set(consumer.assignment())
        if not held:
            sleep(seconds)
            return
        try:
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                consumer.pause(*consumer.assignment())
                got = consumer.poll(timeout_ms=max(1, int(min(left, slice_s) * 1000)))
                for tp, records in (got or {}).items():
                    if records:
                        consumer.seek(tp, min(r.offset for r in records))
                if lost := held - set(consumer.assignment()):
                    raise PartitionsRevokedError(lost)
                sleep(0)
        finally:
            consumer.resume(*consumer.assignment())

    return _sleep


def handle_alert_record(
    record: RecordLike,
    runner: DeliveryRunner,
    *,
    dead_letter_raw: Callable[[bytes], None],
    clock: Clock,
) -> str:
    """Deliver one alerts-topic record; returns the outcome name."""
    try:
        event = decode_event(record.value)
    except (ValidationError, ValueError) as exc:
        dead_letter_raw(
            undecodable_record(record, f"invalid IncidentEvent: {exc}", iso_utc(clock.now()))
        )
        return "undecodable"
    return runner.deliver(event).value


def notify_loop(
    consumer: ConsumerLike,
    runner: DeliveryRunner,
    *,
    dead_letter_raw: Callable[[bytes], None],
    should_stop: Callable[[], bool],
    clock: Clock,
    poll_timeout_ms: int = 1000,
    stats: LoopStats | None = None,
    on_poll: Callable[[int, bool], None] | None = None,
) -> LoopStats:
    """Deliver until ``should_stop()``. ``stats`` (filled in place, so a caller still has
    the counts if delivery is interrupted) and ``on_poll`` (called with the size of each
    polled batch and whether the consumer has partitions yet, e.g. for idle detection) are
    optional. Between polls (at least every ``poll_timeout_ms``) a refreshing sink re-posts
    its alerts when due (:meth:`DeliveryRunner.refresh`)."""
    stats = stats if stats is not None else LoopStats()
    while not should_stop():
        runner.refresh()
        records = polled_records(consumer.poll(timeout_ms=poll_timeout_ms, max_records=100))
        if on_poll is not None:
            on_poll(len(records), is_assigned(consumer))
        for i, record in enumerate(records):
            try:
                outcome = handle_alert_record(
                    record, runner, dead_letter_raw=dead_letter_raw, clock=clock
                )
            except PartitionsRevokedError as exc:
                log.warning(
                    "%s; %s[%d]@%d is left to whoever reads it next",
                    exc,
                    record.topic,
                    record.partition,
                    record.offset,
                )
                stats.count(HANDED_OVER)
                _read_again(consumer, records[i:], exc.lost)
                break
            stats.count(outcome)
            commit_record(consumer, record)
    return stats


def _read_again(consumer: ConsumerLike, records: list[RecordLike], lost: set[Any]) -> None:
    """Seek each partition this member kept to the first of ``records`` it did not handle
    (kafka-python keeps a kept partition's position across a rebalance, which is past the
    poll's records); the ``lost`` partitions are their new owner's."""
    from kafka.structs import TopicPartition

    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first[tp] = min(first.get(tp, record.offset), record.offset)
    for tp, offset in first.items():
        if tp not in lost:
            consumer.seek(tp, offset)


def run_notify_consumer(
    bootstrap: str,
    alerts_topic: str,
    sink: Sink,
    *,
    dead_letter_topic: str,
    should_stop: Callable[[], bool],
    group_id: str | None = None,
    transport: HttpTransport | None = None,
    retry: RetryPolicy | None = None,
    clock: Clock | None = None,
    sleep: Callable[[float], None] = time.sleep,
    consumer: ConsumerLike | None = None,
    producer: ProducerLike | None = None,
    stats: LoopStats | None = None,
    on_poll: Callable[[int, bool], None] | None = None,
    security: ClientSecurity = None,
    consumer_options: Mapping[str, Any] | None = None,
    restore_open: bool = True,
    state_topic: str | None = None,
) -> LoopStats:
    """``sentinel notify <sink>``: deliver every incident event on ``alerts_topic``.

    Permanent failures go to ``dead_letter_topic`` as
    :class:`alerting.delivery.FailedDelivery` JSON keyed by the dedup key; offsets are committed
    only after delivery or dead-lettering. ``security``
    and ``consumer_options`` (extra kafka-python consumer settings) apply to the clients
    built here (not to injected ones); a consumer built here stays in its group through
    backoffs of any length (:func:`polling_sleep`). A :class:`RefreshingSink`
    (Alertmanager) first takes up the open incidents of the whole alerts topic
    (``restore_open``), since its alerts expire unless re-posted. With ``state_topic``,
    every change of a delivery's state goes there (:mod:`alerting.delivery_state`), for
    ``sentinel status``; failing to publish one is logged, never stops delivery.
    """
    clock = clock or SystemClock()
    group = group_id or f"sentinel-notify-{sink.name}"
    servers = [bootstrap] if isinstance(bootstrap, str) else bootstrap
    if consumer is None:
        consumer = group_consumer(servers, alerts_topic, group, security, consumer_options)
        sleep = polling_sleep(consumer, sleep)
    prod = producer if producer is not None else clients.producer(servers, security)
    outputs = _NotifyOutputs(prod, dead_letter_topic, state_topic, group, sink.name)
    runner = DeliveryRunner(
        sink,
        transport or UrllibTransport(),
        dead_letter=outputs.dead_letter,
        sleep=sleep,
        clock=clock,
        retry=retry,
        on_state=outputs.publish_state,
    )
    if isinstance(sink, RefreshingSink) and restore_open:
        _restore_open_incidents(sink, bootstrap, alerts_topic, security, clock)
    if state_topic is not None:
        _restore_delivery_states(runner, bootstrap, state_topic, group, security)
    try:
        return notify_loop(
            consumer,
            runner,
            dead_letter_raw=outputs.dead_letter_raw,
            should_stop=should_stop,
            clock=clock,
            stats=stats,
            on_poll=on_poll,
        )
    finally:
        consumer.close()
        prod.flush(timeout=SEND_TIMEOUT_S)


@dataclass(frozen=True)
class _NotifyOutputs:
    """Where ``sentinel notify`` writes besides the sink: dead letters (awaited, so a
    failure stops the commit) and delivery states (best effort, for ``sentinel status``)."""

    producer: ProducerLike
    dead_letter_topic: str
    state_topic: str | None
    group: str
    sink_name: str

    def dead_letter(self, dl: FailedDelivery) -> None:
        """A delivery that failed for good, keyed by its incident's dedup key."""
        send_and_wait(
            self.producer, self.dead_letter_topic, dl.event.key(), dl.model_dump_json().encode()
        )

    def dead_letter_raw(self, value: bytes) -> None:
        """A record that is not an incident event (see :func:`undecodable_record`)."""
        send_and_wait(self.producer, self.dead_letter_topic, None, value)

    def publish_state(self, state: DeliveryState) -> None:
        """A delivery's new state, tagged with the group; a failure is only logged."""
        if self.state_topic is None:
            return
        state = state.model_copy(update={"group": self.group})
        try:
            send_and_wait(
                self.producer, self.state_topic, state.key(), state.model_dump_json().encode()
            )
        except Exception as exc:  # the delivery matters more than its report
            log.warning("%s: delivery state not published (%s)", self.sink_name, type(exc).__name__)


def _restore_delivery_states(
    runner: DeliveryRunner,
    bootstrap: str | list[str],
    state_topic: str,
    group: str,
    security: ClientSecurity,
) -> None:
    """Take up what this notify group published in earlier runs, from the delivery-state
    topic (undecodable states are skipped): the highest step of each incident it handled
    (an older step read again is not sent: :class:`alerting.delivery.HandledSequences`)
    and the receiver's references (Slack threads)."""
    records = read_topic_to_end(bootstrap, state_topic, security=security)
    states, _ = fold_delivery_states(r.value for r in records)
    runner.handled = handled_sequences(
        (state for sinks in states.values() for state in sinks.values()), group
    )
    log.info(
        "%s: %d incident(s) handled before, restored from %s",
        group,
        len(runner.handled),
        state_topic,
    )
    if isinstance(runner.sink, ReferencingSink):
        refs = refs_of(states, group)
        runner.sink.restore_refs(refs)
        log.info("%s: %d incident reference(s) restored from %s", group, len(refs), state_topic)


def _restore_open_incidents(
    sink: RefreshingSink,
    bootstrap: str,
    alerts_topic: str,
    security: ClientSecurity,
    clock: Clock,
) -> None:
    """Alerts expire unless re-posted: take up the open incidents where the last run left
    them (the consumer only sees events after its committed offset), read from the whole
    alerts topic; records that are not incident events are skipped here."""
    events: list[IncidentEvent] = []
    for r in read_topic_to_end(bootstrap, alerts_topic, security=security):
        with contextlib.suppress(ValidationError, ValueError):
            events.append(decode_event(r.value))
    open_ = fold_open_incidents(events)
    sink.restore(open_, clock.now())
    log.info("%s: %d open incident(s) restored from %s", sink.name, len(open_), alerts_topic)
