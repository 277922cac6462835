"""Replay and backtest over history: the recorded topics, or a JSONL file.

:func:`replay_from_kafka` reads the event topics between two times (``offsets_for_times``
on every partition), merges the records by timestamp and runs them through
:class:`streams.pipeline.replay.Pipeline`, with each record's real topic/partition/offset as its
coordinates, so the evidence of a replayed incident points at the records themselves.
Incidents are marked ``replay`` (they never page) and go to a file and/or a shadow topic,
never to the live alerts topic.

:func:`backtest` runs two configurations over the same history in one pass and
:func:`compare` matches their incidents (same dedup key, overlapping time) to show which
appear, disappear, or change severity or detection time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, Literal

from alerting.clock import SYSTEM_CLOCK, Clock
from alerting.model import IncidentAction, IncidentEvent, Severity, iso_utc
from alerting.relearn import RelearnRecord, fold_relearn_records, relearn_topic
from streams.contract.decode import Coordinates, DeadLetter, decode
from streams.contract.events import EventType
from streams.investigation.kafka_read import KafkaHistory, Record, Span
from streams.kafka.clients import SEND_TIMEOUT_S
from streams.kafka.security import kafka_python_kwargs
from streams.kafka.topics import read_topic_to_end
from streams.pipeline.replay import REPLAY_LIMITS, Pipeline, ReplayResult, replay_lines
from streams.progress import showing_progress
from streams.settings import Settings, topic_kinds

REPLAY_HEADER: Final = ("sentinel-replay", b"true")
"""Kafka header on every incident written to a shadow topic."""


event_topics = topic_kinds
"""The recorded event topics and the kind each carries by default."""


def check_range(start: datetime, end: datetime) -> None:
    for name, value in (("--from", start), ("--to", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must carry a UTC offset (e.g. 2025-01-06T00:00:00Z)")
    if end <= start:
        raise ValueError(f"--to ({iso_utc(end)}) must be after --from ({iso_utc(start)})")


def check_shadow_topic(settings: Settings, shadow_topic: str | None) -> None:
    """Replayed incidents never go to the live alerts topic."""
    if shadow_topic is not None and shadow_topic == settings.topics.alerts:
        raise ValueError(
            f"shadow topic {shadow_topic!r} is the live alerts topic: replayed incidents "
            "must go to a separate topic"
        )


class _Runner:
    """Decode records once and feed every pipeline (one per configuration)."""

    def __init__(
        self,
        settings: Sequence[Settings],
        kinds: dict[str, EventType],
        clock: Clock,
        relearns: Sequence[RelearnRecord] = (),
    ) -> None:
        self.pipelines = [Pipeline(s) for s in settings]
        self.results = [ReplayResult() for _ in settings]
        for pipeline in self.pipelines:
            pipeline.detect.relearns.schedule(relearns)
        self.kinds = kinds
        self.clock = clock
        self.started = time.perf_counter()

    def feed(self, rec: Record) -> list[list[IncidentEvent]]:
        coords = Coordinates(rec.topic, rec.partition, rec.offset)
        decoded = decode(
            rec.value,
            coords,
            now=self.clock.now(),
            limits=REPLAY_LIMITS,
            default_type=self.kinds.get(rec.topic),
            key=rec.key,
        )
        out: list[list[IncidentEvent]] = []
        for pipeline, result in zip(self.pipelines, self.results, strict=True):
            result.lines += 1
            if isinstance(decoded, DeadLetter):
                result.dead_letters += 1
                result.reasons[decoded.reason] = result.reasons.get(decoded.reason, 0) + 1
                out.append([])
                continue
            result.events += 1
            new = pipeline.feed(decoded, coords)
            result.incidents.extend(new)
            out.append(new)
        return out

    def finish(self) -> list[list[IncidentEvent]]:
        out = []
        for pipeline, result in zip(self.pipelines, self.results, strict=True):
            new = pipeline.flush()
            result.incidents.extend(new)
            result.seconds = time.perf_counter() - self.started
            book = pipeline.detect.relearns
            result.relearns, result.relearns_unmatched, result.relearns_unreached = book.outcome()
            out.append(new)
        return out


def _history_records(
    settings: Settings, start: datetime, end: datetime, history: KafkaHistory
) -> tuple[list[Span], Iterator[Record]]:
    spans = history.spans_between(event_topics(settings), start, end)
    return spans, history.read(spans)


def read_relearns(settings: Settings, start: datetime, end: datetime) -> list[RelearnRecord]:
    """The operator re-learns (:mod:`alerting.relearn`) requested in ``[start, end)``: a
    replay of that history applies each at its request time, as the worker did (one
    requested before ``start`` has nothing to act on: the replay's baselines start there)."""
    records = read_topic_to_end(
        settings.kafka.bootstrap_servers,
        relearn_topic(settings.topics.control),
        security=kafka_python_kwargs(settings.kafka.security),
    )
    book = fold_relearn_records((r.key, r.value) for r in records)
    return [r for r in book.values() if start <= r.requested_at < end]


def replay_from_kafka(
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    output: IO[str] | None = None,
    shadow_topic: str | None = None,
    progress: bool = False,
    progress_stream: IO[str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    history: KafkaHistory | None = None,
    producer: Any = None,
    relearns: Sequence[RelearnRecord] | None = None,
) -> ReplayResult:
    """Run the pipeline over the event topics' records with timestamps in ``[start, end)``.

    Incidents (all ``replay: true``) are written as JSON lines to ``output`` and/or
    produced to ``shadow_topic`` (key = dedup key, header ``sentinel-replay: true``) as they
    happen. ``history`` (the consumer side) and ``producer`` (kafka-python shape) are built
    from ``settings`` when not given; ``relearns`` are read from the re-learn topic when
    not given (:func:`read_relearns`). Raises ``ValueError`` for a bad range or when the
    shadow topic is the live alerts topic.
    """
    check_range(start, end)
    check_shadow_topic(settings, shadow_topic)
    own_history = history is None
    hist = history or KafkaHistory(settings)
    own_producer = False
    if shadow_topic is not None and producer is None:
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            acks="all",
            linger_ms=20,
            **kafka_python_kwargs(settings.kafka.security),
        )
        own_producer = True
    futures: list[Any] = []

    def emit(events: list[IncidentEvent]) -> None:
        for ev in events:
            if output is not None:
                output.write(ev.model_dump_json() + "\n")
            if producer is not None and shadow_topic is not None:
                futures.append(
                    producer.send(
                        shadow_topic,
                        key=ev.key(),
                        value=ev.to_json_bytes(),
                        headers=[REPLAY_HEADER],
                        timestamp_ms=int(ev.evidence.window_end.timestamp() * 1000),
                    )
                )

    try:
        spans, records = _history_records(settings, start, end, hist)
        if relearns is None:
            relearns = read_relearns(settings, start, end)
        runner = _Runner([settings], event_topics(settings), clock, relearns)
        total = sum(s.size for s in spans)
        with showing_progress(
            "replay", total=total, stream=progress_stream, enabled=progress
        ) as bar:
            for rec in records:
                emit(runner.feed(rec)[0])
                if bar is not None:
                    bar.update(1)
            emit(runner.finish()[0])
        if producer is not None:
            producer.flush(timeout=SEND_TIMEOUT_S)
            for fut in futures:
                fut.get(timeout=SEND_TIMEOUT_S)
        return runner.results[0]
    finally:
        if own_producer and producer is not None:
            producer.close()
        if own_history:
            hist.close()


# --------------------------------------------------------------------------------------
# Backtest: two configurations, one history.


@dataclass(frozen=True)
class IncidentSpan:
    """One incident of a run, folded from its events."""

    incident_id: str
    dedup_key: str
    incident_type: str
    labels: str
    triggered_at: datetime
    resolved_at: datetime | None
    severity: Severity
    worst_severity: Severity
    summary: str

    def end(self, horizon: datetime) -> datetime:
        return self.resolved_at or horizon


def fold_runs(events: Iterable[IncidentEvent]) -> list[IncidentSpan]:
    """Incidents of a run: trigger time, resolve time, latest and worst severity."""
    by_id: dict[str, list[IncidentEvent]] = {}
    for ev in events:
        by_id.setdefault(ev.incident_id, []).append(ev)
    out = []
    for iid, evs in by_id.items():
        evs.sort(key=lambda e: e.sequence)
        last = evs[-1]
        triggered = min(e.evidence.window_end for e in evs if e.action == IncidentAction.TRIGGER)
        worst = last.severity
        for e in evs:
            worst = worst.worse_of(e.severity)
        out.append(
            IncidentSpan(
                incident_id=iid,
                dedup_key=last.dedup_key,
                incident_type=last.incident_type,
                labels=last.labels.describe(),
                triggered_at=triggered,
                resolved_at=(last.last_seen if last.action == IncidentAction.RESOLVE else None),
                severity=last.severity,
                worst_severity=worst,
                summary=last.summary,
            )
        )
    out.sort(key=lambda s: (s.triggered_at, s.incident_id))
    return out


Change = Literal["unchanged", "severity", "appeared", "disappeared"]


@dataclass(frozen=True)
class Comparison:
    """One row of a backtest: an incident of the baseline run, the candidate run, or both."""

    change: Change
    baseline: IncidentSpan | None
    candidate: IncidentSpan | None

    @property
    def shift_minutes(self) -> float | None:
        """Candidate trigger time minus baseline trigger time (negative = earlier)."""
        if self.baseline is None or self.candidate is None:
            return None
        delta = self.candidate.triggered_at - self.baseline.triggered_at
        return delta.total_seconds() / 60.0

    def to_json(self) -> dict[str, Any]:
        def side(s: IncidentSpan | None) -> dict[str, Any] | None:
            if s is None:
                return None
            return {
                "incident_id": s.incident_id,
                "dedup_key": s.dedup_key,
                "incident_type": s.incident_type,
                "labels": s.labels,
                "triggered_at": iso_utc(s.triggered_at),
                "resolved_at": iso_utc(s.resolved_at) if s.resolved_at else None,
                "severity": s.worst_severity.value,
            }

        return {
            "change": self.change,
            "shift_minutes": self.shift_minutes,
            "baseline": side(self.baseline),
            "candidate": side(self.candidate),
        }


def compare(
    baseline: Sequence[IncidentSpan], candidate: Sequence[IncidentSpan], horizon: datetime
) -> list[Comparison]:
    """Match incidents by dedup key and overlapping time (largest overlap first, one to
    one); an incident still open is taken to last until ``horizon``."""
    pairs: list[tuple[float, int, int]] = []
    for i, a in enumerate(baseline):
        for j, b in enumerate(candidate):
            if a.dedup_key != b.dedup_key:
                continue
            lo = max(a.triggered_at, b.triggered_at)
            hi = min(a.end(horizon), b.end(horizon))
            if lo <= hi:
                pairs.append(((hi - lo).total_seconds(), i, j))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_a: set[int] = set()
    used_b: set[int] = set()
    rows: list[Comparison] = []
    for _, i, j in pairs:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        a, b = baseline[i], candidate[j]
        same = a.worst_severity == b.worst_severity
        rows.append(Comparison("unchanged" if same else "severity", a, b))
    rows += [Comparison("disappeared", a, None) for i, a in enumerate(baseline) if i not in used_a]
    rows += [Comparison("appeared", None, b) for j, b in enumerate(candidate) if j not in used_b]

    def when(c: Comparison) -> datetime:
        side = c.baseline or c.candidate
        assert side is not None
        return side.triggered_at

    rows.sort(key=when)
    return rows


@dataclass
class BacktestResult:
    baseline: ReplayResult
    candidate: ReplayResult
    rows: list[Comparison] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"unchanged": 0, "severity": 0, "appeared": 0, "disappeared": 0}
        for row in self.rows:
            out[row.change] += 1
        return out


def _horizon(results: Sequence[ReplayResult], fallback: datetime) -> datetime:
    ends = [e.evidence.window_end for r in results for e in r.incidents]
    return max([*ends, fallback]) if ends else fallback


def backtest_kafka(
    baseline: Settings,
    candidate: Settings,
    start: datetime,
    end: datetime,
    *,
    progress: bool = False,
    progress_stream: IO[str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    history: KafkaHistory | None = None,
) -> BacktestResult:
    """Both configurations over the event topics (named by ``baseline``) in one pass, each
    with the operator re-learns of the range (:func:`read_relearns`)."""
    check_range(start, end)
    own = history is None
    hist = history or KafkaHistory(baseline)
    try:
        spans, records = _history_records(baseline, start, end, hist)
        relearns = read_relearns(baseline, start, end)
        runner = _Runner([baseline, candidate], event_topics(baseline), clock, relearns)
        total = sum(s.size for s in spans)
        with showing_progress(
            "backtest", total=total, stream=progress_stream, enabled=progress
        ) as bar:
            for rec in records:
                runner.feed(rec)
                if bar is not None:
                    bar.update(1)
            runner.finish()
    finally:
        if own:
            hist.close()
    a, b = runner.results
    return BacktestResult(a, b, compare(fold_runs(a.incidents), fold_runs(b.incidents), end))


def _count_lines(path: Path) -> int:
    """Lines of a file (a progress bar's total), counted in 1 MiB blocks."""
    with path.open("rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


@contextmanager
def _lines_of(lines: Sequence[bytes] | Path) -> Iterator[Iterable[bytes]]:
    """The lines themselves, or a file's, read as they are consumed."""
    if not isinstance(lines, Path):
        yield lines
        return
    with lines.open("rb") as f:
        yield f


def backtest_lines(
    lines: Sequence[bytes] | Path,
    baseline: Settings,
    candidate: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    progress: bool = False,
    progress_stream: IO[str] | None = None,
) -> BacktestResult:
    """Both configurations over the same JSONL lines (``streams.pipeline.replay`` semantics);
    with ``progress``, a bar per configuration. A file (``Path``) is read once per
    configuration, line by line: a week of events need not fit in memory."""
    total = _count_lines(lines) if isinstance(lines, Path) else len(lines)
    runs = []
    for name, settings in (("baseline", baseline), ("candidate", candidate)):
        with (
            showing_progress(
                f"backtest {name}", total=total, stream=progress_stream, enabled=progress
            ) as bar,
            _lines_of(lines) as source,
        ):
            runs.append(replay_lines(source, settings, clock=clock, progress=bar))
    a, b = runs
    horizon = _horizon([a, b], clock.now())
    return BacktestResult(a, b, compare(fold_runs(a.incidents), fold_runs(b.incidents), horizon))
