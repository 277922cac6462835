"""Same events, three arrival orders: how much the incidents depend on the order events reach
the detectors.

``sentinel replay`` feeds events in file order (a Kafka-history replay merges partitions
by record timestamp); a live worker started behind its input drains each partition's
backlog in fetched chunks, so one partition (or topic) runs ahead of another in event
time. This bench replays the end-to-end test's 14 simulated hours with six failures three ways
through the pipeline's own code (:func:`streams.pipeline.replay.replay_lines`): in event
time, as a backlog delivered fetch by fetch, and as the worker's fetch loop now delivers
that backlog (partitions kept in step in event time); it prints the triggers of each.

    .venv/bin/python -m bench.order_sensitivity --chunk 2000 --partitions 4
"""

from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from streams.devtools.scenario import Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.replay import replay_lines
from streams.runtime.batching import event_time_cuts, event_time_slices
from streams.settings import load_settings


def chunked(lines: list[bytes], partitions: int, chunk: int) -> list[bytes]:
    """``lines`` as a consumer draining a backlog sees them: per (event type, partition of
    the request id) queue, ``chunk`` records at a time, round-robin over the queues."""
    queues: dict[tuple[str, int], list[bytes]] = {}
    for raw in lines:
        data = json.loads(raw)
        part = zlib.crc32(data["gen_ai.response.id"].encode()) % partitions
        queues.setdefault((data["event_type"], part), []).append(raw)
    out: list[bytes] = []
    while any(queues.values()):
        for key in sorted(queues):
            out += queues[key][:chunk]
            queues[key] = queues[key][chunk:]
    return out


@dataclass(frozen=True)
class _Fetched:
    """What :func:`streams.runtime.batching.event_time_cuts` reads of a fetched record."""

    offset: int
    timestamp: int
    raw: bytes


def aligned(lines: list[bytes], partitions: int, chunk: int) -> list[bytes]:
    """:func:`chunked` as the worker's fetch loop delivers it: each round's chunks cut at
    the horizon of the queues still behind (:func:`streams.runtime.batching.event_time_cuts`)
    and interleaved minute by minute (:func:`~streams.runtime.batching.event_time_slices`)."""
    queues: dict[tuple[str, int], list[_Fetched]] = {}
    for raw in lines:
        data = json.loads(raw)
        part = zlib.crc32(data["gen_ai.response.id"].encode()) % partitions
        queue = queues.setdefault((data["event_type"], part), [])
        ts = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")).timestamp()
        queue.append(_Fetched(len(queue), int(ts * 1000), raw))
    position = dict.fromkeys(queues, 0)
    out: list[bytes] = []
    while any(position[q] < len(queues[q]) for q in queues):
        fetched = [
            (q, queues[q][position[q] : position[q] + chunk])
            for q in sorted(queues)
            if position[q] < len(queues[q])
        ]
        cuts = event_time_cuts(fetched, lambda q, offset: offset + 1 < len(queues[q]))
        now = [(q, recs[: cuts[q]]) for q, recs in fetched]
        for q, run in event_time_slices(now):
            out += [r.raw for r in run]
            position[q] += len(run)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk", type=int, default=2000, help="records per fetch (2000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    hour = timedelta(hours=1)
    injections = [  # the end-to-end test's six (tests/integration/test_pipeline_e2e.py)
        ("toxicity_spike", 6, 2, 8.0, "support-chat"),
        ("downvote_spike", 5, 3, 6.0, "summarizer"),
        ("confidence_drop", 6, 2, 0.2, "intent-classifier"),
        ("input_drift", 10, 2, 2.0, "support-chat"),
        ("prompt_injection_wave", 10, 2, 20.0, "summarizer"),
        ("bad_deploy", 10, 2, 3.0, "intent-classifier"),
    ]
    scenario = Scenario(
        seed=args.seed,
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
    lines = [line.encode() for line in Simulator(scenario).lines()]
    settings = load_settings(env={}, overrides={"worker.store": "memory://"})
    orders = {
        "event time (replay)": sorted(lines, key=lambda raw: json.loads(raw)["timestamp"]),
        f"backlog, {args.chunk} records per fetch, {args.partitions} partitions": chunked(
            lines, args.partitions, args.chunk
        ),
        "the same backlog, partitions kept in step in event time (the worker)": aligned(
            lines, args.partitions, args.chunk
        ),
    }
    for name, ordered in orders.items():
        result = replay_lines(ordered, settings)
        triggers = [e for e in result.incidents if e.action == "trigger"]
        print(f"{name}: {len(triggers)} trigger(s)")
        for ev in triggers:
            print(
                f"  {ev.evidence.window_end.isoformat()}  {ev.incident_type}  "
                f"{ev.labels.describe()}  ({ev.evidence.signal.detector})"
            )


if __name__ == "__main__":
    main()
