"""Ingress: decode and validate every consumed record exactly once; dead-letter the rest.

:func:`decode` is pure and never raises: a record becomes either a typed event or a
:class:`DeadLetter` that says why (a reason code and the validation errors), carries the
original key and value bytes (base64) and where the record came from (topic, partition,
offset). :func:`register_ingress` puts that on a faust app: one agent consumes the raw event
topics in batches, sends dead letters to ``settings.topics.dead_letter`` (keyed by source
topic) and hands each batch of valid events to the next stage. A bad record, or a next
stage that raises on one event, never stops the stream.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.events import (
    EVENT_ADAPTER,
    EVENT_MODELS,
    SCHEMA_VERSION,
    AnyEvent,
    EventType,
    UtcDatetime,
)
from streams.log_limit import DeadLetterLog
from streams.settings import Settings

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

Reason: TypeAlias = Literal[
    "empty",
    "too_large",
    "not_json",
    "not_object",
    "missing_event_type",
    "unknown_event_type",
    "unsupported_schema_version",
    "missing_field",
    "non_finite",
    "out_of_range",
    "naive_timestamp",
    "future_timestamp",
    "wrong_type",
    "invalid",
    "handler_error",
    "internal_error",
]
"""Why a record was dead-lettered. Stable codes: dashboards and alerts key on them."""

# When a record has several problems, the reason is the first of these that applies.
_PRIORITY: Final[tuple[Reason, ...]] = (
    "not_json",
    "not_object",
    "missing_event_type",
    "unknown_event_type",
    "unsupported_schema_version",
    "missing_field",
    "non_finite",
    "out_of_range",
    "naive_timestamp",
    "wrong_type",
    "invalid",
)
_RANGE_ERRORS: Final = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
)
_MAX_ERRORS: Final = 20


class IngressLimits(BaseModel):
    """What ingress accepts beyond the schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(default=512 * 1024, ge=64, description="Largest record value.")
    max_future_s: float = Field(
        default=300.0, ge=0, description="How far ahead of the clock an event time may be."
    )
    max_dead_letter_value_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="Original bytes kept in a dead letter; longer values are truncated "
        "(the sha256 and the coordinates still identify the record).",
    )


DEFAULT_LIMITS: Final = IngressLimits()


@dataclass(frozen=True, slots=True)
class Coordinates:
    """Where a record was read: enough to fetch it again."""

    topic: str
    partition: int
    offset: int


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    loc: str = Field(description="Dotted path of the offending field ('' for the record).")
    type: str = Field(description="pydantic error type, e.g. 'finite_number'.")
    msg: str


class DeadLetter(BaseModel):
    """A record that could not be used, as written to the dead-letter topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal["1"] = SCHEMA_VERSION
    reason: Reason
    error: str = Field(description="One line for humans.")
    errors: list[ErrorDetail] = Field(default_factory=list, max_length=_MAX_ERRORS)
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None = Field(default=None, description="The record key, base64.")
    value_b64: str | None = Field(default=None, description="The record value, base64.")
    value_size: int = Field(description="Length of the original value in bytes.")
    value_sha256: str | None = Field(default=None, description="Digest of the full value.")
    value_truncated: bool = False
    received_at: UtcDatetime

    @property
    def coordinates(self) -> Coordinates:
        return Coordinates(self.source_topic, self.partition, self.offset)

    def original_value(self) -> bytes | None:
        """The original value bytes (possibly truncated, see ``value_truncated``)."""
        return None if self.value_b64 is None else base64.b64decode(self.value_b64)


def _loc(loc: tuple[int | str, ...]) -> str:
    # The first element of a tagged-union error is the tag; drop it for readability.
    parts = [str(p) for p in loc]
    if parts and parts[0] in EVENT_MODELS:
        parts = parts[1:]
    return ".".join(parts)


def _classify(err: Mapping[str, Any]) -> Reason:
    kind = str(err["type"])
    loc = _loc(tuple(err["loc"]))
    if kind == "json_invalid":
        return "not_json"
    if loc == "" and kind in {"dict_type", "model_type", "model_attributes_type", "json_type"}:
        return "not_object"
    if kind == "union_tag_not_found":
        return "missing_event_type"
    if kind == "union_tag_invalid":
        return "unknown_event_type"
    if kind == "literal_error" and loc == "schema_version":
        return "unsupported_schema_version"
    if kind == "missing":
        return "missing_field"
    if kind == "finite_number":
        return "non_finite"
    if kind in _RANGE_ERRORS:
        return "out_of_range"
    if kind == "timezone_aware":
        return "naive_timestamp"
    if kind.endswith(("_type", "_parsing")):
        return "wrong_type"
    return "invalid"


def _dead(
    reason: Reason,
    error: str,
    raw: bytes | None,
    key: bytes | None,
    coords: Coordinates,
    now: datetime,
    limits: IngressLimits,
    errors: list[ErrorDetail] | None = None,
) -> DeadLetter:
    value = raw or b""
    kept = value[: limits.max_dead_letter_value_bytes]
    return DeadLetter(
        reason=reason,
        error=error[:2000],
        errors=(errors or [])[:_MAX_ERRORS],
        source_topic=coords.topic,
        partition=coords.partition,
        offset=coords.offset,
        key_b64=None if key is None else base64.b64encode(key[:1024]).decode(),
        value_b64=None if raw is None else base64.b64encode(kept).decode(),
        value_size=len(value),
        value_sha256=None if raw is None else hashlib.sha256(value).hexdigest(),
        value_truncated=len(kept) < len(value),
        received_at=now,
    )


def decode(
    raw: bytes | None,
    coords: Coordinates,
    *,
    now: datetime,
    limits: IngressLimits = DEFAULT_LIMITS,
    default_type: EventType | None = None,
    key: bytes | None = None,
) -> AnyEvent | DeadLetter:
    """Decode and validate one record value. Never raises.

    ``now`` (aware) is the ingress clock, for the future-timestamp check. ``default_type``
    is the kind assumed when a record has no ``event_type`` (the kind its topic carries);
    ``None`` makes a missing ``event_type`` an error.
    """
    try:
        return _decode(raw, coords, now, limits, default_type, key)
    except Exception as exc:  # the contract: nothing escapes the dead-letter path
        try:
            return _dead(
                "internal_error", f"{type(exc).__name__}: {exc}", raw, key, coords, now, limits
            )
        except Exception:
            return DeadLetter(
                reason="internal_error",
                error=type(exc).__name__,
                source_topic=str(coords.topic),
                partition=-1,
                offset=-1,
                value_size=-1,
                received_at=datetime.now(UTC),
            )


def _decode(
    raw: bytes | None,
    coords: Coordinates,
    now: datetime,
    limits: IngressLimits,
    default_type: EventType | None,
    key: bytes | None,
) -> AnyEvent | DeadLetter:
    if not raw:
        return _dead("empty", "empty record value (tombstone?)", raw, key, coords, now, limits)
    if len(raw) > limits.max_bytes:
        msg = f"record value is {len(raw)} bytes, over the {limits.max_bytes}-byte limit"
        return _dead("too_large", msg, raw, key, coords, now, limits)
    try:
        event: AnyEvent = EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False)
        if default_type is not None and errs and errs[0]["type"] == "union_tag_not_found":
            try:
                event = EVENT_MODELS[default_type].model_validate_json(raw)
            except ValidationError as exc2:
                errs = exc2.errors(include_url=False, include_input=False)
                return _invalid(errs, raw, key, coords, now, limits)
        else:
            return _invalid(errs, raw, key, coords, now, limits)
    if event.timestamp > now + timedelta(seconds=limits.max_future_s):
        msg = (
            f"timestamp {event.timestamp.isoformat()} is more than {limits.max_future_s:g} s "
            f"after the ingress clock ({now.isoformat()})"
        )
        detail = ErrorDetail(loc="timestamp", type="future_timestamp", msg=msg)
        return _dead("future_timestamp", msg, raw, key, coords, now, limits, [detail])
    return event


def _invalid(
    errs: list[Any],
    raw: bytes,
    key: bytes | None,
    coords: Coordinates,
    now: datetime,
    limits: IngressLimits,
) -> DeadLetter:
    details = [
        ErrorDetail(loc=_loc(tuple(e["loc"])), type=str(e["type"]), msg=str(e["msg"])[:500])
        for e in errs[:_MAX_ERRORS]
    ]
    reasons = {_classify(e) for e in errs}
    reason: Reason = next((r for r in _PRIORITY if r in reasons), "invalid")
    first = next((d for d, e in zip(details, errs, strict=False) if _classify(e) == reason), None)
    summary = f"{first.loc or 'record'}: {first.msg}" if first else "invalid record"
    if len(errs) > 1:
        summary += f" (and {len(errs) - 1} more)"
    return _dead(reason, summary, raw, key, coords, now, limits, details)


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
    """A valid event, where it came from, and the faust record that carried it (table
    writes made while handling it go to that record's partition)."""

    event: AnyEvent
    coords: Coordinates
    key: bytes | None
    record: Any


Handle: TypeAlias = Callable[[Sequence[Accepted]], Awaitable[None]]
"""The next stage: called with each batch of valid events, in partition order."""
Clock: TypeAlias = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def topic_kinds(settings: Settings) -> dict[str, EventType]:
    """The event kind each configured event topic carries by default."""
    t = settings.topics
    return {
        t.inputs: "input",
        t.outputs: "output",
        t.feedback: "feedback",
        t.evaluations: "evaluation",
    }


def kind_topics(settings: Settings) -> dict[EventType, str]:
    """The topic each event kind is published to (the inverse of :func:`topic_kinds`)."""
    return {kind: topic for topic, kind in topic_kinds(settings).items()}


@dataclass
class Ingress:
    """What :func:`register_ingress` registered: the agent, its source topic and counters."""

    agent: Any
    source: Any
    dead_letter_topic: Any
    stats: IngressStats


def register_ingress(
    app: faust.App,
    settings: Settings,
    handle: Handle,
    *,
    limits: IngressLimits = DEFAULT_LIMITS,
    clock: Clock = _utc_now,
    stats: IngressStats | None = None,
    agent_name: str = "sentinel.ingress",
) -> Ingress:
    """Register the ingress agent on ``app`` (built by :func:`streams.app.create_app`).

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
    source = app.topic(
        *kinds,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )
    dlq = app.topic(
        settings.topics.dead_letter,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )
    counters = stats if stats is not None else IngressStats()
    dead_log = DeadLetterLog(log)

    async def _send_dead(letter: DeadLetter) -> None:
        await dlq.send(key=letter.source_topic.encode(), value=letter.model_dump_json().encode())

    def _accept(record: Any) -> Accepted | DeadLetter:
        msg = record.message
        coords = Coordinates(msg.topic, msg.partition, msg.offset)
        raw = record.value
        key = record.key if isinstance(record.key, bytes) else None
        now = clock()
        result = decode(
            raw if isinstance(raw, bytes) or raw is None else bytes(raw),
            coords,
            now=now,
            limits=limits,
            default_type=kinds.get(msg.topic),
            key=key,
        )
        counters.record(coords, result)
        if isinstance(result, DeadLetter):
            where = f"{coords.topic}[{coords.partition}]@{coords.offset}"
            dead_log.record(now, where, result.reason, result.error)
            return result
        return Accepted(result, coords, key, record)

    async def _handle_each(items: Sequence[Accepted]) -> None:
        """The batch failed: hand the events over one by one, so only the event the next
        stage cannot take is dead-lettered (the others may be handled twice: at least
        once)."""
        for item in items:
            try:
                await handle([item])
            except Exception as exc:
                log.exception("next stage failed on %s[%d]@%d", *_c(item.coords))
                raw = item.record.value
                letter = _dead(
                    "handler_error",
                    f"{type(exc).__name__}: {exc}",
                    raw if isinstance(raw, bytes) or raw is None else bytes(raw),
                    item.key,
                    item.coords,
                    clock(),
                    limits,
                )
                counters.accepted[(item.coords.topic, item.event.event_type)] -= 1
                counters.dead[(item.coords.topic, "handler_error")] += 1
                await _send_dead(letter)

    async def ingress(stream: Any) -> None:
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            dead_log.tick(clock())
            accepted: list[Accepted] = []
            for record in batch:
                result = _accept(record)
                if isinstance(result, DeadLetter):
                    await _send_dead(result)
                else:
                    accepted.append(result)
            if not accepted:
                continue
            try:
                await handle(accepted)
            except Exception:
                log.exception(
                    "next stage failed on a batch of %d; retrying one by one", len(accepted)
                )
                await _handle_each(accepted)

    agent = app.agent(source, name=agent_name, concurrency=1)(ingress)
    return Ingress(agent=agent, source=source, dead_letter_topic=dlq, stats=counters)


def _c(coords: Coordinates) -> tuple[str, int, int]:
    return coords.topic, coords.partition, coords.offset


def forward_to_topic(app: faust.App, topic_name: str, *, partitions: int | None = None) -> Handle:
    """A :data:`Handle` that republishes each valid event (canonical JSON, keyed by request
    id) to ``topic_name``: a 'validated' stream for consumers that want clean events."""
    from streams.events import dump_event

    topic = app.topic(
        topic_name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )

    async def _forward(items: Sequence[Accepted]) -> None:
        for item in items:
            await topic.send(key=item.event.request_id.encode(), value=dump_event(item.event))

    return _forward
