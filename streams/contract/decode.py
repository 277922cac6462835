"""Decoding at the edge: a record becomes a typed event or a dead letter, never an error.

:func:`decode` is pure and never raises: a record becomes either a typed event or a
:class:`DeadLetter` that says why (a reason code and the validation errors), carries the
original key and value bytes (base64) and where the record came from
(:class:`Coordinates`: topic, partition, offset). The worker's ingress
(:mod:`streams.runtime.ingress`), offline replay and investigation all decode with it, so
a record is judged the same way everywhere. No Kafka here.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.contract.events import (
    EVENT_ADAPTER,
    EVENT_MODELS,
    SCHEMA_VERSION,
    AnyEvent,
    EventType,
    UtcDatetime,
)

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
    "past_timestamp",
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
    max_past_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="How far behind the clock an event time may be (older: dead-lettered "
        "as past_timestamp; years 1, 1900 or 1970 are not current traffic).",
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


def dead_letter(
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
            return dead_letter(
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
        return dead_letter(
            "empty", "empty record value (tombstone?)", raw, key, coords, now, limits
        )
    too_large = size_problem(len(raw), limits)
    if too_large is not None:
        return dead_letter("too_large", too_large, raw, key, coords, now, limits)
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
    outside = window_problem(event.timestamp, now, limits)
    if outside is not None:
        reason, msg = outside
        detail = ErrorDetail(loc="timestamp", type=reason, msg=msg)
        return dead_letter(reason, msg, raw, key, coords, now, limits, [detail])
    return event


def size_problem(size: int, limits: IngressLimits) -> str | None:
    """Why a record value of ``size`` bytes is refused (``too_large``), or None."""
    if size > limits.max_bytes:
        return f"record value is {size} bytes, over the {limits.max_bytes}-byte limit"
    return None


def window_problem(
    timestamp: datetime, now: datetime, limits: IngressLimits
) -> tuple[Reason, str] | None:
    """The reason (``future_timestamp``, ``past_timestamp``) and message for an event time
    outside the window ingress accepts around ``now``, or None. The publisher SDK checks
    the same before it sends."""
    if timestamp > now + timedelta(seconds=limits.max_future_s):
        return "future_timestamp", (
            f"timestamp {timestamp.isoformat()} is more than {limits.max_future_s:g} s "
            f"after the ingress clock ({now.isoformat()})"
        )
    if (now - timestamp).total_seconds() > limits.max_past_s:
        return "past_timestamp", (
            f"timestamp {timestamp.isoformat()} is more than {limits.max_past_s:g} s "
            f"before the ingress clock ({now.isoformat()})"
        )
    return None


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
    return dead_letter(reason, summary, raw, key, coords, now, limits, details)
