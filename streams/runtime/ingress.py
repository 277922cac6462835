"""The worker's ingress agent: consume the raw event topics in batches, decode each record
once (:func:`streams.contract.decode.decode`), send dead letters to
``settings.topics.dead_letter`` (keyed by source topic) and hand each batch of valid events
to the next stage. A bad record, or a next stage that raises on one event, never stops the
stream.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from alerting.clock import SYSTEM_CLOCK, Clock
from streams.contract.decode import (
    DEFAULT_LIMITS,
    Coordinates,
    DeadLetter,
    IngressLimits,
    dead_letter,
    decode,
)
from streams.contract.events import AnyEvent, EventType
from streams.runtime.batching import BatchApp
from streams.runtime.log_limit import DeadLetterLog
from streams.settings import Settings, topic_kinds

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)


@dataclass
class IngressStats:
    """Counters, readable by the web view / metrics exporter and by tests."""

    accepted: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(source topic, event_type) -> events handed to the next stage."""
    dead: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(source topic, reason) -> records dead-lettered."""

    def record(self, coords: Coordinates, result: AnyEvent | DeadLetter) -> None:
        if isinstance(result, DeadLetter):
            self.dead[(coords.topic, result.reason)] += 1
        else:
            self.accepted[(coords.topic, result.event_type)] += 1

    def total_dead(self) -> int:
        return sum(self.dead.values())

    def total_accepted(self) -> int:
        return sum(self.accepted.values())


TAKE_MAX: Final = 2000
"""Records per batch an agent takes from its stream (faust ``take_events``)."""
TAKE_WITHIN_S: Final = 0.25
"""How long an agent waits to fill a batch before it processes what it has (seconds)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event, where it came from, and the faust event that carried it (the
    record, or its batch; table writes made while handling it go to that partition)."""

    event: AnyEvent
    coords: Coordinates
    key: bytes | None
    record: Any
    raw: bytes | None = None
    """The record value (for a dead letter if the next stage cannot take the event)."""


Handle: TypeAlias = Callable[[Sequence[Accepted]], Awaitable[None]]
"""The next stage: called with each batch of valid events, in partition order."""


@dataclass(frozen=True)
class DeadLetters:
    """The dead-letter topic and how a record goes there: a JSON :class:`DeadLetter`, keyed
    by its source topic."""

    topic: Any
    counters: IngressStats
    limits: IngressLimits = DEFAULT_LIMITS
    clock: Clock = SYSTEM_CLOCK

    async def send(self, letter: DeadLetter) -> None:
        await self.topic.send(
            key=letter.source_topic.encode(), value=letter.model_dump_json().encode()
        )

    async def handler_error(
        self, raw: bytes | None, key: bytes | None, coords: Coordinates, error: str
    ) -> None:
        """A record (or what it became) that a stage after decoding raised on:
        dead-lettered with reason ``handler_error`` at its coordinates and counted, so
        that the stream goes on and nothing is lost (over an internal topic, an agent that
        raised would have its batch acked by faust, unhandled)."""
        self.counters.dead[(coords.topic, "handler_error")] += 1
        letter = dead_letter(
            "handler_error", error, raw, key, coords, self.clock.now(), self.limits
        )
        await self.send(letter)


@dataclass
class Ingress:
    """What :func:`register_ingress` registered: the agent, its source topic, where its
    dead letters go, and its counters."""

    agent: Any
    source: Any
    dead_letters: DeadLetters
    stats: IngressStats


DEAD_LETTER_TICK_S: Final = 1.0
"""Seconds between looks at whether the dead-letter log's summary is due."""


def register_ingress(
    app: faust.App,
    settings: Settings,
    handle: Handle,
    *,
    limits: IngressLimits = DEFAULT_LIMITS,
    clock: Clock = SYSTEM_CLOCK,
    stats: IngressStats | None = None,
    agent_name: str = "sentinel.ingress",
) -> Ingress:
    """Register the ingress agent on ``app`` (built by :func:`streams.runtime.app.create_app`).

    It consumes the inputs, outputs, feedback and evaluations topics as raw bytes in batches
    (``take_events``: one faust event per record is the framework's main cost, so all work
    after it is batched), decodes each record once, awaits ``handle(accepted)`` with each
    batch's valid events, and sends dead letters (JSON :class:`DeadLetter`, key = source
    topic) to the dead-letter topic. If ``handle`` raises, the batch is handed over again
    one event at a time; an event it still raises on is dead-lettered with reason
    ``handler_error``, and the stream goes on. Processing is at-least-once: after a crash,
    records since the last commit are decoded (and handled) again.
    """
    kinds = topic_kinds(settings)
    partitions = settings.kafka.topic_partitions
    source: Any
    if isinstance(app, BatchApp):
        source = app.batch_topic(*kinds, partitions=partitions)
    else:
        source = raw_topic(app, *kinds, partitions=partitions)
    counters = stats if stats is not None else IngressStats()
    dlq = raw_topic(app, settings.topics.dead_letter, partitions=partitions)
    dead = DeadLetters(dlq, counters, limits, clock)
    body = _IngressAgent(handle, dead, kinds, limits, clock, counters)
    fun = body.batches if isinstance(app, BatchApp) else body.records
    agent = app.agent(source, name=agent_name, concurrency=1)(fun)

    # The dead-letter log's summary is due at the end of its interval, whether or not
    # another batch comes then, and what it still holds is summarised at shutdown.
    async def summarise_dead_letters() -> None:
        body.dead_log.tick(clock.now())

    def flush_dead_letters(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        body.dead_log.flush(clock.now())

    app.timer(DEAD_LETTER_TICK_S)(summarise_dead_letters)
    app.on_before_shutdown.connect(flush_dead_letters)
    return Ingress(agent=agent, source=source, dead_letters=dead, stats=counters)


def raw_topic(app: faust.App, *names: str, partitions: int, internal: bool = False) -> Any:
    """A topic of raw bytes keys and values (decoding is the ingress's, not faust's)."""
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=internal,
    )


class _IngressAgent:
    """The ingress agent's body (see :func:`register_ingress`): decode each record once,
    hand the valid events of a batch to the next stage, dead-letter the rest."""

    def __init__(
        self,
        handle: Handle,
        dead: DeadLetters,
        kinds: dict[str, EventType],
        limits: IngressLimits,
        clock: Clock,
        counters: IngressStats,
    ) -> None:
        self.handle = handle
        self.dead = dead
        self.kinds = kinds
        self.limits = limits
        self.clock = clock
        self.counters = counters
        self.dead_log = DeadLetterLog(log)

    def accept(
        self, topic: str, partition: int, offset: int, key: Any, raw: Any, carrier: Any
    ) -> Accepted | DeadLetter:
        """Decode one record; ``carrier`` is the faust event that carried it."""
        coords = Coordinates(topic, partition, offset)
        key = key if isinstance(key, bytes) else None
        value = raw if isinstance(raw, bytes) or raw is None else bytes(raw)
        now = self.clock.now()
        result = decode(
            value,
            coords,
            now=now,
            limits=self.limits,
            default_type=self.kinds.get(topic),
            key=key,
        )
        self.counters.record(coords, result)
        if isinstance(result, DeadLetter):
            where = f"{coords.topic}[{coords.partition}]@{coords.offset}"
            self.dead_log.record(now, where, result.reason, result.error)
            return result
        return Accepted(result, coords, key, carrier, value)

    async def handle_each(self, items: Sequence[Accepted]) -> None:
        """The batch failed: hand the events over one by one, so only the event the next
        stage cannot take is dead-lettered (the others may be handled twice: at least
        once)."""
        for item in items:
            try:
                await self.handle([item])
            except Exception as exc:
                log.exception("next stage failed on %s[%d]@%d", *_c(item.coords))
                raw = item.raw
                self.counters.accepted[(item.coords.topic, item.event.event_type)] -= 1
                await self.dead.handler_error(
                    raw if isinstance(raw, bytes) or raw is None else bytes(raw),
                    item.key,
                    item.coords,
                    f"{type(exc).__name__}: {exc}",
                )

    async def process(self, accepted: list[Accepted]) -> None:
        if not accepted:
            return
        try:
            await self.handle(accepted)
        except Exception:
            log.exception("next stage failed on a batch of %d; retrying one by one", len(accepted))
            await self.handle_each(accepted)

    async def records(self, stream: Any) -> None:
        """Faust's per-record path: batches of faust events (``take_events``)."""
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            self.dead_log.tick(self.clock.now())
            accepted: list[Accepted] = []
            for record in batch:
                msg = record.message
                result = self.accept(
                    msg.topic, msg.partition, msg.offset, record.key, record.value, record
                )
                if isinstance(result, DeadLetter):
                    await self.dead.send(result)
                else:
                    accepted.append(result)
            await self.process(accepted)

    async def batches(self, stream: Any) -> None:
        """Stream items are :class:`RecordBatch` values (one partition, one fetch); the
        batch's event is the stream's current event, so table writes go to its partition."""
        async for batch in stream:
            self.dead_log.tick(self.clock.now())
            carrier = stream.current_event
            accepted: list[Accepted] = []
            for r in batch.records:
                result = self.accept(r.topic, r.partition, r.offset, r.key, r.value, carrier)
                if isinstance(result, DeadLetter):
                    await self.dead.send(result)
                else:
                    accepted.append(result)
            await self.process(accepted)


def _c(coords: Coordinates) -> tuple[str, int, int]:
    return coords.topic, coords.partition, coords.offset
