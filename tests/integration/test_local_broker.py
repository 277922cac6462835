"""`sentinel kafka up|status|down` manage a real broker on chosen ports and directory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from streams.cli.main import main
from streams.devtools.broker import free_port
from tests.conftest import KafkaBroker

pytestmark = pytest.mark.integration


def test_up_status_down_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, ctl = free_port(), free_port()
    args = ["--port", str(port), "--controller-port", str(ctl), "--data-dir", str(tmp_path)]
    try:
        assert main(["kafka", "up", *args]) == 0
        assert f"SENTINEL_BROKER=kafka://127.0.0.1:{port}" in capsys.readouterr().out
        assert main(["kafka", "status", *args]) == 0
        assert "accepting connections" in capsys.readouterr().out
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}")
        meta = producer.send("cycle", b"x").get(timeout=30)
        producer.close()
        assert meta.offset == 0
        # A second `up` finds the running broker instead of starting another.
        assert main(["kafka", "up", *args]) == 0
        assert "already running" in capsys.readouterr().err
    finally:
        assert main(["kafka", "down", *args]) == 0
    assert "stopped" in capsys.readouterr().out
    assert main(["kafka", "status", *args]) == 3
    assert not (tmp_path / "broker.pid").exists()


def test_old_event_times_are_not_deleted_by_retention(
    kafka_broker: KafkaBroker, unique_name: str
) -> None:
    """The local broker keeps records by size, not by age: the SDK and the simulator stamp
    records with event time, and a simulated day of 2025 (the simulator's default start)
    would be deleted at the next retention check under Kafka's default of 7 days, leaving
    ``replay --from/--to`` and ``investigate`` nothing to read (it cost the investigation
    tests half their records whenever a check fell between publishing and reading)."""
    topic = f"retention-{unique_name}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
        configs = _topic_configs(admin, topic)
    finally:
        admin.close()
    assert configs["retention.ms"] == "-1"
    assert configs["retention.bytes"] == str(2**30)
    old = int(datetime(2025, 1, 6, tzinfo=UTC).timestamp() * 1000)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    try:
        meta = producer.send(topic, b"x", timestamp_ms=old).get(timeout=30)
    finally:
        producer.close()
    assert meta.timestamp == old  # CreateTime: retention would judge the record by this
    print(
        f"checked: a topic on the local broker has retention.ms {configs['retention.ms']} "
        f"and retention.bytes {configs['retention.bytes']} (1 GiB per partition); a record "
        "stamped 2025-01-06 keeps that timestamp"
    )


def _topic_configs(admin: KafkaAdminClient, topic: str) -> dict[str, str]:
    """The topic's effective configuration (broker defaults included), name -> value."""
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
    )
    entries = described["topic"][topic]
    return {name: str(data["value"]) for name, data in entries.items()}
