"""Same events, two arrival orders: how much the incidents depend on the order events reach
the detectors.

``sentinel replay`` feeds events in file order (a Kafka-history replay merges partitions
by record timestamp); a live worker started behind its input drains each partition's
backlog in fetched chunks, so one partition (or topic) runs ahead of another in event
time. This bench replays one simulated downvote spike both ways through the pipeline's
own code (:func:`streams.pipeline.replay.replay_lines`) and prints the triggers.

    .venv/bin/python -m bench.order_sensitivity --chunk 500 --partitions 4
"""

from __future__ import annotations

import argparse
import json
import zlib
from datetime import timedelta

from streams.devtools.scenario import Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.replay import replay_lines
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk", type=int, default=500, help="records per fetch (500)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    scenario = Scenario.model_validate(
        {
            "seed": args.seed,
            "duration": timedelta(hours=5),
            "events_per_hour": 3600,
            "injections": [
                Injection(
                    type="downvote_spike",
                    start=timedelta(hours=2),
                    duration=timedelta(hours=3),
                    strength=3,
                    scope={"model": "support-chat"},
                )
            ],
        }
    )
    lines = [line.encode() for line in Simulator(scenario).lines()]
    settings = load_settings(env={}, overrides={"worker.store": "memory://"})
    orders = {
        "event time (replay)": sorted(lines, key=lambda raw: json.loads(raw)["timestamp"]),
        f"backlog, {args.chunk} records per fetch, {args.partitions} partitions": chunked(
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
