"""Baseline re-learns: an operator's "this is the new normal" for a scope's detectors.

A detector judges against the baseline it learned. When that baseline no longer describes
normal traffic (an intended change: a new prompt, a retrained judge, a new tenant mix; or
a reference that happened to sit low), the detector keeps alarming and its incident keeps
paging or reopening: nothing in the statistics can tell an intended change from a failure.
``sentinel relearn add`` (or the console's incident page) publishes a
:class:`RelearnRecord` on the compacted topic ``<control>.relearn`` (:func:`relearn_topic`,
one partition, keyed by record id). Every worker follows it; the detectors of the named
signal kinds, in every key the scope covers (:meth:`alerting.model.Labels.covers`: a
model's scope covers its versions and segments), start again from nothing and learn a new
baseline from the traffic that follows (a segment's start from its parent's, as any new
segment does). Each key applies a record once, when its set is next used
(:class:`RelearnBook`), and keeps in its state the mark of the newest it applied
(:meth:`RelearnRecord.mark`), so restarts and rebalances do not repeat it. An incident
whose detector re-learns has no detector to read its cause from and resolves by the
quiet rule.

Records stay on the topic (an audit trail; ``relearn list`` shows them): a key created
later applies them at once to its empty set, a no-op that only moves its mark. A record
published after a newer one that a key has applied (two operators' clocks apart) is not
applied there. Pure: no Kafka, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from alerting.model import Labels, UtcDatetime, iso_utc, require_utc, stable_hash
from alerting.records import fold_latest
from detectors.base import SignalKind

RELEARN_SUFFIX: Final = ".relearn"

NO_BASELINE: Final = frozenset({SignalKind.CRITICAL_EVENT, SignalKind.TRAFFIC_SILENCE})
"""Signal kinds without a learned baseline to re-learn: a critical event is judged alone
against a fixed cutoff; traffic silence against the gap the model's own rate allows."""

_MARK_TIME: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
"""The request time in :meth:`RelearnRecord.mark`: always with its microseconds."""


def _fixed_width(mark: tuple[str, str]) -> tuple[str, str]:
    """A key's stored mark in the form :meth:`RelearnRecord.mark` writes now (a mark
    stored by an earlier release has no fraction at a whole second)."""
    at, rid = mark
    try:
        return (datetime.fromisoformat(at).astimezone(UTC).strftime(_MARK_TIME), rid)
    except ValueError:
        return mark


def relearnable(kind: SignalKind) -> bool:
    """Whether detectors raising ``kind`` learned a baseline that a re-learn replaces."""
    return kind not in NO_BASELINE


def relearn_topic(control_topic: str) -> str:
    """Name of the re-learn topic derived from the control topic (``<control>.relearn``)."""
    return control_topic + RELEARN_SUFFIX


class RelearnRecord(BaseModel):
    """The value on the re-learn topic (key: the record id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    id: str = Field(min_length=1)
    scope: Labels
    signals: tuple[SignalKind, ...] = Field(
        default=(), description="The signal kinds whose detectors re-learn (empty: all)."
    )
    requested_at: UtcDatetime
    requested_by: str = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=2000)
    incident_id: str | None = Field(default=None, description="The incident it answers.")

    def key(self) -> bytes:
        return self.id.encode()

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def mark(self) -> tuple[str, str]:
        """Its place in the order records apply in: request time, then id. The time is
        written at a fixed width (marks are compared, and stored, as strings): ISO 8601
        leaves out a zero fraction, and ``.`` sorts before ``Z``, so a record half a
        second after another one sorted before it and was never applied."""
        return (self.requested_at.astimezone(UTC).strftime(_MARK_TIME), self.id)

    def covers(self, labels: Labels) -> bool:
        """Whether a key with ``labels`` is in this record's scope."""
        return self.scope.covers(labels)

    def selects(self, kind: SignalKind) -> bool:
        """Whether a detector raising ``kind`` re-learns."""
        return relearnable(kind) and (not self.signals or kind in self.signals)

    def describe(self) -> str:
        what = ", ".join(self.signals) if self.signals else "every detector"
        return f"{what} on {self.scope.describe()}"


def new_relearn(
    scope: Labels,
    signals: Iterable[SignalKind],
    *,
    now: datetime,
    by: str,
    reason: str,
    incident_id: str | None = None,
) -> RelearnRecord:
    """A re-learn of ``signals`` (empty: every detector with a baseline) in ``scope``."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a reason is required (it goes into the audit trail)")
    kinds = tuple(sorted(set(signals)))
    refused = [k for k in kinds if not relearnable(k)]
    if refused:
        raise ValueError(
            f"{', '.join(refused)} has no learned baseline to re-learn (a critical event is "
            "judged against a fixed cutoff, silence against the model's own rate)"
        )
    now = require_utc(now)
    rid = "rl-" + stable_hash(scope.model_dump(), kinds, iso_utc(now), by, reason, length=12)
    return RelearnRecord(
        id=rid,
        scope=scope,
        signals=kinds,
        requested_at=now,
        requested_by=by,
        reason=reason,
        incident_id=incident_id,
    )


def fold_relearn_records(
    records: Iterable[tuple[bytes | None, bytes | None]],
    state: dict[str, RelearnRecord] | None = None,
) -> dict[str, RelearnRecord]:
    """Fold ``(key, value)`` pairs from the re-learn topic into the record per id."""
    return fold_latest(records, RelearnRecord, lambda r: r.id, state)


class RelearnBook:
    """The re-learn records a worker holds, and a generation that moves when they change.

    A key's detector set remembers the generation it was last checked at (in memory) and
    the mark of the newest record it applied (in its state): the check runs when a set is
    first used and after each change of the book, not per event.
    """

    def __init__(self) -> None:
        self.records: dict[str, RelearnRecord] = {}
        self.generation = 0
        self._scheduled: list[RelearnRecord] = []
        self.next_release = math.inf
        """Event time (Unix s) of the earliest scheduled record (:meth:`schedule`)."""
        self.released = 0
        """Scheduled records that an observation has reached so far (:meth:`release`)."""
        self.applied: set[str] = set()
        """Ids of the records that made some key drop detectors since this book was made
        (:meth:`record_applied`): what a replay reports; a worker's keys keep their own
        marks."""

    def schedule(self, records: Iterable[RelearnRecord]) -> None:
        """Records to apply by event time, as a replay of history does: each joins the
        book at the first observation at or after its request time (:meth:`release`), so a
        replay re-learns where the worker did (up to the worker's lag)."""
        self._scheduled = sorted([*self._scheduled, *records], key=RelearnRecord.mark)
        self._next()

    def release(self, t: float) -> None:
        """Move the scheduled records requested at or before event time ``t`` into the book
        (a no-op, cheap enough for every observation, before the next one is due)."""
        if t < self.next_release:
            return
        due = [r for r in self._scheduled if r.requested_at.timestamp() <= t]
        if due:
            self._scheduled = self._scheduled[len(due) :]
            self.records.update((r.id, r) for r in due)
            self.generation += 1
            self.released += len(due)
        self._next()

    @property
    def waiting(self) -> int:
        """Scheduled records that no observation has reached yet (requested after the
        latest event time seen)."""
        return len(self._scheduled)

    def outcome(self) -> tuple[int, int, int]:
        """What a replay did with its scheduled records: (applied: some key dropped
        detectors; reached but applied by no key: another scope or signal kinds, or no
        later event of a key it covers; requested after the last event seen)."""
        applied = len(self.applied)
        return applied, self.released - applied, self.waiting

    def record_applied(self, record: RelearnRecord, dropped: list[str]) -> None:
        """Count ``record`` as applied once a key dropped detectors for it (a key with none
        of its signal kinds, or a key created after it, only moves its mark)."""
        if dropped:
            self.applied.add(record.id)

    def _next(self) -> None:
        first = self._scheduled[0] if self._scheduled else None
        self.next_release = first.requested_at.timestamp() if first else math.inf

    def update(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Fold more records from the topic; a change moves the generation."""
        folded = fold_relearn_records(records, self.records)
        if folded != self.records:
            self.records = folded
            self.generation += 1

    def pending(self, labels: Labels, mark: tuple[str, str] | None) -> list[RelearnRecord]:
        """The records covering a key with ``labels`` after its ``mark`` (the newest it
        applied; None: none), oldest first."""
        after = None if mark is None else _fixed_width(mark)
        return sorted(
            (
                r
                for r in self.records.values()
                if (after is None or r.mark() > after) and r.covers(labels)
            ),
            key=RelearnRecord.mark,
        )
