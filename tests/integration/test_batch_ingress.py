"""At-least-once through the batch ingress (streams.runtime.batching), on the real broker.

Worker processes run a probe agent over a batch topic (this module is their entry point:
``python -m tests.integration.test_batch_ingress SOURCE OUT NAME MARKS STALL``). For each
batch the probe publishes the coordinates of every record in it and adds the batch size to
a changelog-backed table keyed by partition. A probe started with STALL = n handles n
batches, then publishes and counts the first half of batch n + 1 and stops there, inside
the batch: a kill then lands mid-batch, with no race, and a batch committed too early
would show as records never published.

Worker A handles a batch, the group commits it, and A is killed with SIGKILL inside its
next batch. B then takes over the same way (one batch, then stuck inside the next); C
joins, and B is killed with SIGKILL as soon as it sees the rebalance begin.
C must end up having processed every record of the source topic (some twice: at least
once), and the table's changelog must count at least every record of each partition (state
recovered from the changelog, not restarted).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.workers import REPO, child_env, stop_process, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4


def _worker_main(
    source: str, out: str, name: str, marks: str, stall: str
) -> None:  # pragma: no cover
    import faust

    from streams.runtime.app import create_app
    from streams.runtime.batching import BatchApp, RecordBatch
    from streams.runtime.worker import quiet_worker
    from streams.settings import load_settings

    settings = load_settings(env=os.environ)
    app = create_app(settings)
    assert isinstance(app, BatchApp)
    src = app.batch_topic(source, partitions=PARTITIONS)
    dest = app.topic(
        out, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    counts = app.Table("probe-counts", default=int, partitions=PARTITIONS)
    mark_dir = Path(marks)

    stall_after = int(stall)
    done = 0

    async def probe(stream: Any) -> None:
        nonlocal done
        async for batch in stream:
            assert isinstance(batch, RecordBatch)
            done += 1
            stalls = bool(stall_after) and done > stall_after
            # A stalling probe handles only the first half of its batch, then stops.
            records = batch.records[: max(1, len(batch) // 2)] if stalls else batch.records
            coords = ",".join(f"{r.partition}:{r.offset}" for r in records)
            await dest.send(key=name.encode(), value=coords.encode())
            key = str(batch.tp.partition)
            counts[key] = counts[key] + len(records)
            if stalls:
                (mark_dir / f"{name}.inside").touch()
                while True:  # stuck inside this batch until killed; say when a rebalance starts
                    if app.rebalancing:
                        (mark_dir / f"{name}.rebalancing").touch()
                    await asyncio.sleep(0.1)

    app.agent(src, name="probe", concurrency=1)(probe)
    quiet_worker(faust.Worker(app, loglevel="info")).execute_from_commandline()


def _publish(bootstrap: str, topic: str, start: int, n: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    try:
        for i in range(start, start + n):
            producer.send(topic, value=f"record-{i}".encode(), partition=i % PARTITIONS)
        producer.flush(timeout=60)
    finally:
        producer.close()


class Seen:
    """What the probes published: every (partition, offset) processed, per worker."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        self.coords: set[tuple[int, int]] = set()
        self.by_worker: dict[str, int] = defaultdict(int)
        self.total = 0

    def poll(self) -> None:
        for records in self.consumer.poll(timeout_ms=200).values():
            for r in records:
                items = r.value.decode().split(",")
                self.by_worker[r.key.decode()] += len(items)
                self.total += len(items)
                for item in items:
                    p, o = item.split(":")
                    self.coords.add((int(p), int(o)))

    def close(self) -> None:
        self.consumer.close()


def _counts(bootstrap: str, changelog: str) -> dict[str, int]:
    """The last value of each key in the probe table's changelog."""
    consumer = KafkaConsumer(
        changelog,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        consumer_timeout_ms=5000,
    )
    last: dict[str, int] = {}
    try:
        for r in consumer:
            if r.key is not None and r.value is not None:
                last[json.loads(r.key)] = int(json.loads(r.value))
    finally:
        consumer.close()
    return last


def _spawn(settings: Settings, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_batch_ingress", *args],
            env=child_env(settings),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.timeout(900)
def test_no_record_lost_when_workers_are_killed_mid_batch_and_mid_rebalance(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    worker = service_settings.worker.model_copy(update={"batch_ingress": True})
    service_settings = service_settings.model_copy(update={"worker": worker})
    bootstrap = kafka_broker.bootstrap
    prefix = service_settings.worker.app_id
    source, out = f"{prefix}.probe-in", f"{prefix}.probe-out"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(source, PARTITIONS, 1), NewTopic(out, 1, 1)])
    finally:
        admin.close()
    marks = tmp_path / "marks"
    marks.mkdir()
    first, second = 8000, 8000
    _publish(bootstrap, source, 0, first)
    seen = Seen(bootstrap, out)
    procs: list[subprocess.Popen[bytes]] = []
    logs = {n: tmp_path / f"worker-{n}.log" for n in "abc"}

    def start(name: str, stall: int) -> subprocess.Popen[bytes]:
        proc = _spawn(service_settings, [source, out, name, str(marks), str(stall)], logs[name])
        procs.append(proc)
        return proc

    group = service_settings.worker.app_id
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)

    def committed() -> int:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return sum(m.offset for tp, m in offsets.items() if tp.topic == source and m.offset > 0)

    try:
        a = start("a", stall=1)
        wait_for((marks / "a.inside").exists, 300, "worker a inside its second batch", logs["a"])
        wait_for(lambda: committed() > 0, 120, "worker a's first commit", logs["a"])
        _kill(a)  # mid-batch: published, table written, not acked

        _publish(bootstrap, source, first, second)
        b = start("b", stall=1)
        wait_for((marks / "b.inside").exists, 300, "worker b inside its second batch", logs["b"])
        c = start("c", stall=0)
        wait_for((marks / "b.rebalancing").exists, 300, "a rebalance at worker b", logs["b"])
        _kill(b)  # mid-batch, mid-rebalance

        wanted = {(i % PARTITIONS, i // PARTITIONS) for i in range(first + second)}

        def complete() -> bool:
            seen.poll()
            return wanted <= seen.coords

        wait_for(complete, 600, "worker c to process every record", logs["c"])
        assert wanted <= seen.coords
        assert seen.by_worker["c"] > 0
        print(
            f"\nrecords {len(wanted)}, processed {seen.total} "
            f"({seen.total - len(wanted)} twice: at least once); per worker "
            f"{dict(seen.by_worker)}"
        )
        # The table counts every record of its partition at least once: recovered from
        # the changelog after each kill, never restarted from zero. (c flushes its last
        # writes at its next commit, hence the wait.)
        per_partition = (first + second) // PARTITIONS
        counts: dict[str, int] = {}

        def counted() -> bool:
            counts.update(_counts(bootstrap, f"{prefix}-probe-counts-changelog"))
            return len(counts) == PARTITIONS and min(counts.values()) >= per_partition

        wait_for(counted, 120, "the changelog to count every record", logs["c"])
        print(f"table counts per partition {counts} (records per partition {per_partition})")
        # And c commits everything it processed: the group's lag falls to 0 (faust's
        # Cython stream acked only each batch's last offset, and commits stopped).
        wait_for(
            lambda: committed() == first + second,
            120,
            "worker c to commit every record",
            logs["c"],
        )
        stop_process(c)
    finally:
        for proc in procs:
            _kill(proc)
        seen.close()
        admin.close()


if __name__ == "__main__":  # pragma: no cover
    _worker_main(*sys.argv[1:6])
