"""Same events, four arrival orders: how much the incidents depend on the order events reach
the detectors.

``sentinel replay`` feeds events in file order (a Kafka-history replay merges partitions
by record timestamp); a live worker started behind its input drains each partition's
backlog as its consumer fetches it, so one partition (or topic) can run ahead of another
in event time. This bench replays the end-to-end test's 14 simulated hours with six
failures through the pipeline's own code (:func:`streams.pipeline.replay.replay_lines`):
in event time, and as a worker started behind all of it receives it, modelled on
aiokafka's consumer (each partition fetched up to ``--fetch-bytes`` at a time, each fetch
call drawing at most ``--max-records`` records partition by partition from what is
buffered, the worker's settings): delivered as drawn, cut against the partitions of each
call alone (stop 61), and cut against every partition's standing
(:class:`streams.runtime.batching.Timeline`, the worker's fetch loop). For each order it
prints how far events arrive behind the newest one delivered, how many records were
fetched per record delivered, and the triggers.

    .venv/bin/python -m bench.order_sensitivity
"""

from __future__ import annotations

import argparse
import json
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from streams.devtools.scenario import Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.replay import replay_lines
from streams.runtime.batching import Timeline, event_time_cuts, event_time_slices
from streams.settings import load_settings

FETCH_BYTES = 8 * 1024 * 1024
"""The worker's ``consumer_max_fetch_size`` (aiokafka's ``max_partition_fetch_bytes``)."""
MAX_RECORDS = 10_000
"""The worker's ``broker_max_poll_records``: records one fetch call returns at most."""

Queue = tuple[str, int]  # (event type, partition)


@dataclass(frozen=True)
class _Fetched:
    """What :func:`streams.runtime.batching.event_time_cuts` reads of a fetched record."""

    offset: int
    timestamp: int
    raw: bytes


@dataclass
class Delivered:
    """An order of the backlog, and what delivering it cost."""

    lines: list[bytes]
    fetched: int  # records fetched, each time a record was fetched


def _queues(lines: list[bytes], partitions: int) -> dict[Queue, list[_Fetched]]:
    """Per (event type, partition of the request id), the records in offset order."""
    queues: dict[Queue, list[_Fetched]] = {}
    for raw in lines:
        data = json.loads(raw)
        part = zlib.crc32(data["gen_ai.response.id"].encode()) % partitions
        queue = queues.setdefault((data["event_type"], part), [])
        ts = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")).timestamp()
        queue.append(_Fetched(len(queue), int(ts * 1000), raw))
    return queues


def drain(
    lines: list[bytes],
    partitions: int,
    order: str,
    *,
    fetch_bytes: int = FETCH_BYTES,
    max_records: int = MAX_RECORDS,
    seed: int = 0,
) -> Delivered:
    """The backlog ``lines`` as a consumer started behind all of it receives it: each
    partition with nothing buffered is fetched from its position up to ``fetch_bytes``
    (at least one record; the partitions of one fetch response in a shuffled order, as
    aiokafka shuffles them), and each call draws up to ``max_records`` records from the
    buffered partitions in the order they arrived. ``order``: ``"drawn"`` delivers each
    call as drawn; ``"per-call"`` cuts it against its own partitions (stop 61) and seeks
    a cut partition back, to be fetched again; ``"timeline"`` is the worker's fetch loop
    (:class:`streams.runtime.batching.Timeline`: cut against every partition, the rest
    held, held partitions not drawn from; its clock counts calls)."""
    rng = random.Random(seed)
    queues = _queues(lines, partitions)
    position = dict.fromkeys(queues, 0)  # the next record to draw (aiokafka's position)
    buffered: dict[Queue, list[_Fetched]] = {}
    calls = [0.0]
    timeline: Timeline[Queue] = Timeline(clock=lambda: calls[0])
    timeline.assign(queues)
    out: list[bytes] = []
    fetched = 0

    def behind(q: Queue, offset: int) -> bool:
        return offset + 1 < len(queues[q])

    while any(position[q] < len(queues[q]) for q in queues) or timeline.held():
        due = [q for q in sorted(queues) if q not in buffered and position[q] < len(queues[q])]
        rng.shuffle(due)
        for q in due:
            recs: list[_Fetched] = []
            size = 0
            for rec in queues[q][position[q] :]:
                if recs and size + len(rec.raw) > fetch_bytes:
                    break
                recs.append(rec)
                size += len(rec.raw)
            buffered[q] = recs
            fetched += len(recs)
        held = timeline.held()
        drawn: list[tuple[Queue, list[_Fetched]]] = []
        room = max_records
        for q in [q for q in buffered if q not in held]:
            take, buffered[q] = buffered[q][:room], buffered[q][room:]
            if not buffered[q]:
                del buffered[q]
            drawn.append((q, take))
            position[q] += len(take)
            room -= len(take)
            if not room:
                break
        calls[0] += 0.01  # a fetch call: far inside the wait limit
        if order == "timeline":
            runs = timeline.take(drawn, behind, lambda q: position[q] < len(queues[q]))
        elif order == "per-call":
            cuts = event_time_cuts(drawn, behind)
            for q, recs in drawn:
                if cuts[q] < len(recs):
                    position[q] = recs[cuts[q]].offset  # sought back: fetched again
                    buffered.pop(q, None)
            runs = event_time_slices([(q, recs[: cuts[q]]) for q, recs in drawn])
        else:
            runs = list(drawn)
        for _, run in runs:
            out += [r.raw for r in run]
    return Delivered(out, fetched)


def lateness_minutes(lines: list[bytes]) -> tuple[float, float]:
    """How far behind the newest event delivered before it each event arrives: the 99th
    percentile and the largest, in minutes of event time."""
    newest = float("-inf")
    late: list[float] = []
    for raw in lines:
        ts = datetime.fromisoformat(json.loads(raw)["timestamp"].replace("Z", "+00:00"))
        t = ts.timestamp()
        late.append(max(0.0, newest - t) / 60.0)
        newest = max(newest, t)
    late.sort()
    return late[int(0.99 * (len(late) - 1))], late[-1]


def scenario(seed: int) -> Scenario:
    """The end-to-end test's 14 hours and six failures
    (tests/integration/test_pipeline_e2e.py)."""
    hour = timedelta(hours=1)
    injections = [
        ("toxicity_spike", 6, 2, 8.0, "support-chat"),
        ("downvote_spike", 5, 3, 6.0, "summarizer"),
        ("confidence_drop", 6, 2, 0.2, "intent-classifier"),
        ("input_drift", 10, 2, 2.0, "support-chat"),
        ("prompt_injection_wave", 10, 2, 20.0, "summarizer"),
        ("bad_deploy", 10, 2, 3.0, "intent-classifier"),
    ]
    return Scenario(
        seed=seed,
        duration=14 * hour,
        events_per_hour=3600,
        injections=[
            Injection(
                type=kind,
                start=start * hour,
                duration=hours * hour,
                strength=strength,
                scope={"model": model},
            )
            for kind, start, hours, strength, model in injections
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    parser.add_argument("--fetch-bytes", type=int, default=FETCH_BYTES)
    parser.add_argument("--max-records", type=int, default=MAX_RECORDS)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    lines = [line.encode() for line in Simulator(scenario(args.seed)).lines()]
    settings = load_settings(env={}, overrides={"worker.store": "memory://"})
    limits: dict[str, Any] = {"fetch_bytes": args.fetch_bytes, "max_records": args.max_records}
    print(
        f"{len(lines):,} events, {args.partitions} partitions per topic, fetches of "
        f"{args.fetch_bytes / 2**20:.0f} MiB per partition, {args.max_records:,} records per "
        "call; each order replayed through the pipeline (about 40 s each)",
        flush=True,
    )
    by_time = sorted(lines, key=lambda raw: json.loads(raw)["timestamp"])
    orders: dict[str, Callable[[], Delivered]] = {
        "event time (replay)": lambda: Delivered(by_time, len(lines)),
        "backlog as drawn": lambda: drain(lines, args.partitions, "drawn", **limits),
        "cut per fetch call (stop 61)": lambda: drain(lines, args.partitions, "per-call", **limits),
        "cut on the timeline, the rest held (the worker)": lambda: drain(
            lines, args.partitions, "timeline", **limits
        ),
    }
    for name, order in orders.items():
        delivered = order()
        p99, worst = lateness_minutes(delivered.lines)
        result = replay_lines(delivered.lines, settings)
        triggers = [e for e in result.incidents if e.action == "trigger"]
        print(
            f"{name}: {len(triggers)} trigger(s); events behind the newest delivered: "
            f"99th percentile {p99:.1f} min, worst {worst:.1f} min; "
            f"records fetched per event {delivered.fetched / len(lines):.2f}"
        )
        for ev in triggers:
            print(
                f"  {ev.evidence.window_end.isoformat()}  {ev.incident_type}  "
                f"{ev.labels.describe()}  ({ev.evidence.signal.detector})",
                flush=True,
            )


if __name__ == "__main__":
    main()
