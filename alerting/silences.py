"""Runtime silences: records on a compacted topic, folded into the engines' silence sets.

``sentinel silence add|expire`` publishes a :class:`SilenceRecord` to the silences topic
(:func:`silences_topic`, by default ``sentinel.control.silences``: compacted, one partition,
keyed by silence id). The latest record per id is the silence's current state; expiring a
silence publishes the same silence again with ``expired_at`` set, so ``silence list --all``
can still show it. A ``None`` value (tombstone) deletes the id.

The worker folds the topic with :func:`fold_silence_records` (latest per key, pure) and
hands :func:`active_silences` to each model's engine with :func:`sync_engine_silences`,
which adds new silences and removes expired or deleted ones, leaving silences from the
policy file alone. No Kafka and no clock here: ``now`` is always passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from alerting.model import UtcDatetime, iso_utc, require_utc, stable_hash
from alerting.policy import Silence
from alerting.records import fold_latest

SILENCES_SUFFIX = ".silences"


def silences_topic(control_topic: str) -> str:
    """Name of the silences topic derived from the control topic (``<control>.silences``)."""
    return control_topic + SILENCES_SUFFIX


class SilenceRecord(BaseModel):
    """The value on the silences topic (key: the silence id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    silence: Silence
    expired_at: UtcDatetime | None = None
    updated_at: UtcDatetime

    @property
    def id(self) -> str:
        return self.silence.id

    def key(self) -> bytes:
        return self.silence.id.encode()

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def ends_at(self) -> datetime:
        """When the silence stops muting: its end, or its early expiry if sooner."""
        end = self.silence.ends_at
        return min(end, self.expired_at) if self.expired_at is not None else end

    def is_active(self, now: datetime) -> bool:
        """Not yet over at ``now`` (a silence that starts later counts as active)."""
        return self.ends_at() > require_utc(now)

    def state(self, now: datetime) -> str:
        now = require_utc(now)
        if self.expired_at is not None and self.expired_at <= now:
            return "expired"
        if self.silence.ends_at <= now:
            return "ended"
        if self.silence.starts_at > now:
            return "pending"
        return "active"

    def expire(self, now: datetime) -> SilenceRecord:
        now = require_utc(now)
        return self.model_copy(update={"expired_at": now, "updated_at": now})


def new_silence(
    *,
    model: str,
    duration: timedelta,
    now: datetime,
    comment: str,
    created_by: str,
    version: str | None = None,
    segment: dict[str, str] | None = None,
    incident_type: str | None = None,
    starts_at: datetime | None = None,
) -> SilenceRecord:
    """A new silence record from ``starts_at`` (default ``now``) for ``duration``."""
    now = require_utc(now)
    start = require_utc(starts_at) if starts_at is not None else now
    if start + duration <= now:
        raise ValueError(
            f"the silence would end at {iso_utc(start + duration)}, already past: "
            "nothing would be silenced (a later --starts-at or a longer --duration)"
        )
    scope = {
        "model": model,
        "version": version,
        "segment": dict(sorted((segment or {}).items())),
        "incident_type": incident_type,
    }
    sid = "sil-" + stable_hash(scope, iso_utc(start), iso_utc(now), comment, length=12)
    silence = Silence(
        id=sid,
        model=model,
        version=version,
        segment=segment or {},
        incident_type=incident_type,
        starts_at=start,
        ends_at=start + duration,
        created_by=created_by,
        comment=comment,
    )
    return SilenceRecord(silence=silence, updated_at=now)


def fold_silence_records(
    records: Iterable[tuple[bytes | None, bytes | None]],
    state: dict[str, SilenceRecord] | None = None,
) -> dict[str, SilenceRecord]:
    """Fold ``(key, value)`` pairs from the silences topic, in log order, into the current
    record per silence id (:func:`alerting.records.fold_latest`). Pure: ``state`` is not
    mutated."""
    return fold_latest(records, SilenceRecord, lambda r: r.id, state)


def active_silences(
    records: dict[str, SilenceRecord], now: datetime, *, model: str | None = None
) -> list[Silence]:
    """The silences an engine should hold at ``now`` (early expiry applied as the end);
    only those for ``model`` when given. Sorted by id, so the result is deterministic."""
    out: list[Silence] = []
    for rec in sorted(records.values(), key=lambda r: r.id):
        if not rec.is_active(now) or (model is not None and rec.silence.model != model):
            continue
        s = rec.silence
        if rec.expired_at is not None and rec.expired_at < s.ends_at:
            s = s.model_copy(update={"ends_at": rec.expired_at})
        out.append(s)
    return out


def fold_silences(
    records: Iterable[tuple[bytes | None, bytes | None]],
    now: datetime,
    *,
    model: str | None = None,
) -> list[Silence]:
    """``active_silences(fold_silence_records(records), now, model=model)``."""
    return active_silences(fold_silence_records(records), now, model=model)


class SilenceHolder(Protocol):
    """The part of :class:`alerting.engine.IncidentEngine` that holds silences."""

    def silences(self) -> list[Silence]: ...

    def add_silence(self, silence: Silence) -> None: ...

    def remove_silence(self, silence_id: str) -> bool: ...


def sync_engine_silences(
    engine: SilenceHolder, active: Iterable[Silence], *, keep_ids: Iterable[str] = ()
) -> bool:
    """Make the engine's runtime silences equal ``active``; returns True if it changed.

    Silences whose id is in ``keep_ids`` (pass the policy file's silence ids) are left
    alone. After a change, call ``engine.tick(now)``: an incident whose silence was expired
    early then emits its trigger ("mute lifted"), and the engine state must be stored.
    """
    wanted = {s.id: s for s in active}
    keep = set(keep_ids)
    changed = False
    for s in engine.silences():
        if s.id not in keep and s.id not in wanted:
            engine.remove_silence(s.id)
            changed = True
    current = {s.id: s for s in engine.silences()}
    for sid, s in wanted.items():
        if current.get(sid) != s:
            engine.add_silence(s)
            changed = True
    return changed
