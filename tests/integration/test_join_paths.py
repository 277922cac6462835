"""Both ways into the join reach the alerts topic on the real broker.

Records keyed by request id (as the SDK and the simulator publish) are joined in the
ingress agent; records keyed otherwise, or not keyed, travel through the
``<app>-by-request`` topic first. An output with a certain self-harm score pages at
once, so one such marker per path shows the path works end to end.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.kafka.topics import read_topic_to_end
from streams.pipeline.sampling import request_draw
from streams.runtime.agents import home_partition
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.traffic import AlertsReader, critical_marker
from tests.integration.workers import http_get, metric_total, wait_for, with_web, worker_process
from tests.unit.hardening.test_observability import parse

pytestmark = pytest.mark.integration


def test_in_place_and_forwarded_records_both_page(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    keys: dict[str, bytes | None] = {
        "keyed-by-request": None,  # filled in below: the request id itself
        "keyed-by-user": b"user-42",
        "not-keyed": None,
    }
    markers = {model: critical_marker(model, "v1", now, i) for i, model in enumerate(keys)}
    log = tmp_path / "worker.log"
    reader = AlertsReader(kafka_broker.bootstrap, service_settings.topics.alerts)
    parked: dict[str, int] = {}  # request id: the partition that owns its join state
    partitions = service_settings.kafka.topic_partitions
    changelog = f"{service_settings.worker.app_id}-join-changelog"

    def entries() -> dict[str, tuple[int, bytes | None]]:
        return {
            key: write
            for key, write in _last_writes(kafka_broker.bootstrap, changelog).items()
            if key.removeprefix("p:") in parked
        }

    with worker_process(service_settings, ["-m", "streams.cli.main", "run"], log):
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        try:
            # Feedback before its output on the two keyed paths: parked in the join.
            for model, line in markers.items():
                rid = json.loads(line)["gen_ai.response.id"]
                key = rid.encode() if model == "keyed-by-request" else keys[model]
                if key is not None:
                    parked[rid] = home_partition(rid.encode(), partitions)
                    vote = {"request_id": rid, "timestamp": now.isoformat(), "vote": "down"}
                    fb = json.dumps({"event_type": "feedback", **vote}).encode()
                    producer.send(service_settings.topics.feedback, key=key, value=fb)
            producer.flush(timeout=30)
            wait_for(
                lambda: (
                    {k: p for k, (p, v) in entries().items() if v is not None}
                    == {f"p:{rid}": part for rid, part in parked.items()}
                ),
                120,
                "each feedback parked in its request's partition",
                log,
            )
            for model, line in markers.items():
                rid = json.loads(line)["gen_ai.response.id"]
                key = rid.encode() if model == "keyed-by-request" else keys[model]
                producer.send(service_settings.topics.outputs, key=key, value=line.encode())
            producer.flush(timeout=30)
        finally:
            producer.close()
        paged = reader.wait(
            lambda events: {e.labels.model for e in events} >= set(keys), timeout_s=120
        )
        wait_for(
            lambda: entries() == {f"p:{rid}": (part, None) for rid, part in parked.items()},
            60,
            "each parked feedback released and its entry deleted in its partition",
            log,
        )
    reader.close()
    got = {e.labels.model: e.incident_type for e in reader.events}
    assert paged, f"paged only {sorted(got)}; worker log: {log.read_text()[-3000:]}"
    assert all(t.startswith("critical_event") for t in got.values()), got
    print(f"checked: in-place and by-request join paths both paged: {sorted(got.items())}")
    print(f"checked: feedback parked before its output released on both paths: {parked}")


def _last_writes(bootstrap: str, topic: str) -> dict[str, tuple[int, bytes | None]]:
    """The partition and value of each key's last write in a changelog topic. Read by
    assignment: a subscribed kafka-python consumer creates a missing topic (whatever its
    ``allow_auto_create_topics``), and a join changelog made before the worker's, with the
    broker's default partition count, stops the worker's join."""
    return {
        json.loads(r.key): (r.partition, r.value)
        for r in read_topic_to_end(bootstrap, topic)
        if r.key is not None
    }


def test_a_sampled_model_is_detected_on_its_sample_and_its_critical_outputs_still_page(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    """``detection.sample_fractions`` in the worker: the join drops the events of requests
    outside the model's sample (counted in /metrics), detection takes the rest, and a
    critical output outside the sample pages all the same."""
    now = datetime.now(UTC).replace(microsecond=0)
    fraction = 0.2
    detection = service_settings.detection.model_copy(
        update={"sample_fractions": {"busy": fraction}}
    )
    settings, base = with_web(service_settings.model_copy(update={"detection": detection}))
    outputs = [
        json.dumps(
            {
                "event_type": "output",
                "gen_ai.response.id": f"busy-{i}",
                "timestamp": (now - timedelta(seconds=300 - i)).isoformat(),
                "gen_ai.request.model": "busy",
                "model_version": "v1",
                "confidence": 0.8,
                "moderation": {"toxicity": 0.01},
            }
        )
        for i in range(300)
    ]
    inside = sum(request_draw(f"busy-{i}") < fraction for i in range(300))
    # A critical marker of the sampled model outside its sample, and one of another model.
    n = next(n for n in range(100) if request_draw(f"marker-busy-{n}") >= fraction)
    markers = [critical_marker("busy", "v1", now, n), critical_marker("calm", "v1", now, 0)]
    log = tmp_path / "worker.log"
    reader = AlertsReader(kafka_broker.bootstrap, settings.topics.alerts)
    with worker_process(settings, ["-m", "streams.cli.main", "run"], log):
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        try:
            for line in [*outputs, *markers]:
                key = json.loads(line)["gen_ai.response.id"].encode()
                producer.send(settings.topics.outputs, key=key, value=line.encode())
            producer.flush(timeout=30)
        finally:
            producer.close()
        paged = reader.wait(
            lambda events: {e.labels.model for e in events} >= {"busy", "calm"}, timeout_s=120
        )
        counts: dict[str, float] = {}

        def counted() -> bool:
            code, text = http_get(f"{base}/metrics")
            if code != 200:
                return False
            m = parse(text)
            counts["unsampled"] = metric_total(m, "sentinel_join_unsampled_total")
            counts["observations"] = metric_total(m, "sentinel_detect_observations_total")
            return counts["unsampled"] + counts["observations"] >= len(outputs) + len(markers)

        wait_for(counted, 120, "every output joined and then dropped or detected", log)
    reader.close()
    got = {e.labels.model: e for e in reader.events}
    assert paged, f"paged only {sorted(got)}; worker log: {log.read_text()[-3000:]}"
    assert all(e.incident_type.startswith("critical_event") for e in got.values()), got
    assert got["busy"].labels.version == "v1"  # named as a page in the sample would be
    # At least once: a record read twice after a rebalance counts twice, never less.
    assert counts["unsampled"] >= 300 - inside, (counts, inside)
    assert counts["observations"] >= inside + 2, (counts, inside)
    assert counts["unsampled"] + counts["observations"] <= 2 * (len(outputs) + len(markers))
    print(f"checked: sampled at {fraction}: {inside} of 300 detected ({counts}), marker paged")


def _handler_errors(bootstrap: str, topic: str) -> list[dict[str, object]]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    try:
        letters = [json.loads(r.value) for r in consumer]
    finally:
        consumer.close()
    return [d for d in letters if d["reason"] == "handler_error"]


def test_a_record_the_join_or_detection_cannot_handle_is_dead_lettered_and_the_rest_go_on(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    """Records on the worker's internal topics that its join or detection raises on (here
    not JSON at all: the service writes none such, a bug would) are dead-lettered at their
    coordinates, and the records after them are handled. Before, the agent raised and
    faust acked its whole batch, handled or not."""
    now = datetime.now(UTC).replace(microsecond=0)
    internal = service_settings.worker.internal_topics
    partitions = service_settings.kafka.topic_partitions
    log = tmp_path / "worker.log"
    reader = AlertsReader(kafka_broker.bootstrap, service_settings.topics.alerts)
    with worker_process(service_settings, ["-m", "streams.cli.main", "run"], log):
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        try:
            first = critical_marker("before-poison", "v1", now, 0)
            producer.send(service_settings.topics.outputs, key=b"user-1", value=first.encode())
            producer.flush(timeout=30)
            # the pipeline runs (and made its internal topics): poison on every partition
            assert reader.wait(lambda events: len(events) >= 1, timeout_s=120), log.read_text()
            for name in internal.values():
                for partition in range(partitions):
                    producer.send(name, key=b"chat", value=b"{not json", partition=partition)
            for i in range(4):  # keyed by user: through the by-request topic, then by model
                line = critical_marker(f"after-poison-{i}", "v1", now, i)
                producer.send(service_settings.topics.outputs, key=b"user-2", value=line.encode())
            producer.flush(timeout=30)
        finally:
            producer.close()
        models = {f"after-poison-{i}" for i in range(4)}
        paged = reader.wait(
            lambda events: {e.labels.model for e in events} >= models, timeout_s=120
        )
        dead: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(dead) < 2 * partitions:
            dead = _handler_errors(kafka_broker.bootstrap, service_settings.topics.dead_letter)
    reader.close()
    assert paged, (
        f"paged {sorted({e.labels.model for e in reader.events})}; {log.read_text()[-3000:]}"
    )
    where = {(d["source_topic"], d["partition"]) for d in dead}
    assert where == {(name, p) for name in internal.values() for p in range(partitions)}, dead
    print(f"checked: {len(dead)} poison records dead-lettered, 4 later records paged")
