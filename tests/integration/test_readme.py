"""The README's examples run: the SDK block publishes to the real test broker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from tests.conftest import KafkaBroker

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_sdk_example_publishes_an_output_and_its_feedback(
    kafka_broker: KafkaBroker,
) -> None:
    [block] = [b for b in _python_blocks() if "SentinelPublisher" in b]
    code = block.replace('"127.0.0.1:9092"', repr(kafka_broker.bootstrap))
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    consumer = KafkaConsumer(
        "sentinel.outputs",
        "sentinel.feedback",
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    try:
        keys = {(record.topic, record.key) for record in consumer}
    finally:
        consumer.close()
    assert ("sentinel.outputs", b"req-123") in keys
    assert ("sentinel.feedback", b"req-123") in keys
