"""Smoke test: the three Kafka clients the project uses all work against the real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaConsumer, KafkaProducer

from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.workers import wait_for, worker_process

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        for value in values:
            # One key: one partition, so the order is kept (Kafka orders per partition).
            producer.send(topic, key=b"smoke", value=value).get(timeout=30)
    finally:
        producer.close()


async def _consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        got: list[bytes] = []
        while len(got) < count:
            msg = await asyncio.wait_for(consumer.getone(), timeout=30)
            assert msg.value is not None
            got.append(msg.value)
        return got
    finally:
        await consumer.stop()


def test_kafka_python_produces_and_aiokafka_consumes(
    kafka_broker: KafkaBroker, unique_name: str
) -> None:
    topic = f"smoke-{unique_name}"
    values = [f"event-{i}".encode() for i in range(20)]
    _produce(kafka_broker.bootstrap, topic, values)
    assert asyncio.run(_consume(kafka_broker.bootstrap, topic, len(values))) == values


def test_faust_agent_reads_one_topic_and_writes_another(
    kafka_broker: KafkaBroker, service_settings: Settings, unique_name: str, tmp_path: Path
) -> None:
    source, sink = f"smoke-src-{unique_name}", f"smoke-dst-{unique_name}"
    values = [f"hello-{i}".encode() for i in range(10)]
    _produce(kafka_broker.bootstrap, source, values)
    log = tmp_path / "worker.log"
    received: list[bytes] = []
    consumer = KafkaConsumer(
        sink,
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    )
    try:
        with worker_process(
            service_settings, ["tests/integration/smoke_worker.py", source, sink], log
        ):

            def all_arrived() -> bool:
                received.extend(record.value for record in consumer)
                return len(received) >= len(values)

            wait_for(all_arrived, 90, "the faust agent's output", log)
    finally:
        consumer.close()
    # The agent's output is spread over partitions: compare contents, not order.
    assert sorted(received) == sorted(v.upper() for v in values)
