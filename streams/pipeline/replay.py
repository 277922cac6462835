"""Offline replay: the streaming pipeline's own stages over JSONL lines, without Kafka.

Used by ``sentinel replay --input events.jsonl`` (:mod:`streams.cli.replay`), backtests
and the quality benchmark.

Input: one JSON event per line (the simulator's ``--out`` format, see README "File
formats"); ``-`` reads stdin. Each line is decoded by the same ingress code as the worker
(a bad line is counted and, with ``--dead-letter FILE``, written there with its reason; it
never stops the replay), joined, and fed to the same keyed detectors and incident engine.
A line's coordinates are the topic of its event type, partition 0, offset = line number
(0-based), so evidence in incidents points back at lines of the file.

Output: one :class:`alerting.model.IncidentEvent` JSON per line, marked ``replay: true``
(replayed incidents never page). Deterministic: the same file and config give the same
output byte for byte (only the ``received_at`` of dead letters is wall-clock time); the
future-timestamp check of ingress is off (history is replayed at any later time).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from alerting.clock import SYSTEM_CLOCK, Clock
from alerting.model import IncidentEvent
from streams.contract.decode import DEFAULT_LIMITS, Coordinates, DeadLetter, IngressLimits
from streams.contract.jsonl import decode_lines
from streams.pipeline.detect import in_memory_detect
from streams.pipeline.join import Joiner
from streams.pipeline.observation import Observation
from streams.pipeline.parallel import ParallelPipeline
from streams.settings import Settings, kind_topics

REPLAY_LIMITS = DEFAULT_LIMITS.model_copy(update={"max_future_s": 1e10, "max_past_s": 1e12})
"""Ingress limits during replay: history replayed later is never out of the time window."""

BATCH = 1024


@dataclass
class ReplayResult:
    """What a replay did, for the summary line and for tests."""

    lines: int = 0
    events: int = 0
    dead_letters: int = 0
    incidents: list[IncidentEvent] = field(default_factory=list)
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    relearns: int = 0
    """Operator re-learns applied at their request time (a replay of Kafka history): a
    key of the range dropped detectors for each."""
    relearns_unmatched: int = 0
    """Operator re-learns of the range that dropped no detector (another scope or signal
    kinds, or no event of a key they cover after them)."""
    relearns_unreached: int = 0
    """Operator re-learns of the range requested after its last event: not applied."""

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0

    def summary(self, unit: str = "lines") -> str:
        """What the replay read and raised, for the commands' closing line (``unit``:
        what it read, "lines" of a file or "records" of Kafka)."""
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items())) or "none"
        triggers = sum(1 for e in self.incidents if e.action == "trigger")
        relearns = f", {self.relearns} operator re-learn(s) applied" if self.relearns else ""
        if self.relearns_unmatched:
            relearns += (
                f", {self.relearns_unmatched} operator re-learn(s) that dropped no detector "
                "(another scope or signal, or no later event of its keys)"
            )
        if self.relearns_unreached:
            relearns += f", {self.relearns_unreached} requested after the last event (not applied)"
        return (
            f"{self.lines:,} {unit}, {self.events:,} events, {self.dead_letters:,} dead "
            f"letters ({reasons}); {triggers:,} incident(s) triggered, {len(self.incidents):,} "
            f"incident events{relearns}; {self.seconds:.1f} s "
            f"({self.lines_per_second:,.0f} {unit}/s)"
        )

    def require_events(self, source: str) -> None:
        """Refuse a file that held no event at all (empty, or another format: CSV, a
        compressed file, an incidents file): a replay of it would "succeed" with nothing."""
        if self.events:
            return
        if not self.lines:
            raise ValueError(f"{source} holds no lines: expected one JSON event per line")
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items()))
        raise ValueError(
            f"none of the {self.lines:,} lines of {source} is an event ({reasons}): expected "
            "one JSON event per line (README, 'File formats'); --dead-letter FILE keeps "
            "each rejected line with its reason"
        )


class Pipeline:
    """The join and detect stages over in-memory stores (what the worker keeps in tables)."""

    def __init__(self, settings: Settings, *, replay: bool = True, batch: int = BATCH) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.batch = batch
        self.joiner = Joiner(settings.detection, {})
        self.detect = in_memory_detect(settings.detection, replay=replay)
        self._batch: list[Observation] = []

    def feed(self, event: Any, coords: Coordinates) -> list[IncidentEvent]:
        """One decoded event; returns incident events as batches complete."""
        self._batch.extend(self.joiner.process(event, coords))
        if len(self._batch) >= self.batch:
            return self.flush()
        return []

    def flush(self) -> list[IncidentEvent]:
        batch, self._batch = self._batch, []
        return self.detect.process(batch) if batch else []


def replay_lines(
    lines: Iterable[bytes],
    settings: Settings,
    *,
    limits: IngressLimits = REPLAY_LIMITS,
    clock: Clock = SYSTEM_CLOCK,
    dead_letters: IO[str] | None = None,
    sink: IO[str] | None = None,
    progress: Any = None,
    batch: int = BATCH,
    pipeline: Pipeline | None = None,
    source: str = "replay",
    jobs: int = 1,
) -> ReplayResult:
    """Run the pipeline over raw JSONL lines; write incidents to ``sink`` as they happen.

    ``batch`` is how many observations detection takes at once (the worker's batches are
    whatever a fetch brought); the incidents do not depend on it. ``pipeline``: one built
    by the caller (then ``batch`` is its own), so that it can read the detectors' state
    while the lines are consumed (benchmarks). ``source``: what a dead letter names as
    its topic (the command passes the input file's name). ``jobs`` > 1: detection in that
    many processes, partitioned by model (:mod:`streams.pipeline.parallel`; incidents come
    at the end, and each process's keys have a ``1 / jobs`` share of the budget)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, not {jobs}")
    if jobs > 1 and pipeline is not None:
        raise ValueError("give a pipeline or jobs > 1, not both")
    topics = kind_topics(settings)
    parallel = ParallelPipeline(settings, jobs, batch=batch) if jobs > 1 else None
    stages = parallel or pipeline or Pipeline(settings, batch=batch)
    result = ReplayResult()
    started = time.perf_counter()

    def emit(events: list[IncidentEvent]) -> None:
        for ev in events:
            result.incidents.append(ev)
            if sink is not None:
                sink.write(ev.model_dump_json() + "\n")

    def counted(lines: Iterable[bytes]) -> Iterator[bytes]:
        for line in lines:
            result.lines += 1
            if progress is not None:
                progress.update(1)
            yield line

    try:
        decoded_lines = decode_lines(counted(lines), source, now=clock.now(), limits=limits)
        for offset, decoded in decoded_lines:
            if isinstance(decoded, DeadLetter):
                result.dead_letters += 1
                result.reasons[decoded.reason] = result.reasons.get(decoded.reason, 0) + 1
                if dead_letters is not None:
                    dead_letters.write(decoded.model_dump_json() + "\n")
                continue
            result.events += 1
            coords = Coordinates(topics[decoded.event_type], 0, offset)
            emit(stages.feed(decoded, coords))
        emit(stages.flush())
    finally:
        if parallel is not None:
            parallel.close()
    result.seconds = time.perf_counter() - started
    return result
