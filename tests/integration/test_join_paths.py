"""Both ways into the join reach the alerts topic on the real broker.

Records keyed by request id (as the SDK and the simulator publish) are joined in the
ingress agent; records keyed otherwise, or not keyed, travel through the
``<app>-by-request`` topic first. An output with a certain self-harm score pages at
once, so one such marker per path shows the path works end to end.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.traffic import AlertsReader, critical_marker
from tests.integration.workers import worker_process

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
    with worker_process(service_settings, ["-m", "streams.cli.main", "run"], log):
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        try:
            for model, line in markers.items():
                rid = json.loads(line)["gen_ai.response.id"].encode()
                key = rid if model == "keyed-by-request" else keys[model]
                producer.send(service_settings.topics.outputs, key=key, value=line.encode())
            producer.flush(timeout=30)
        finally:
            producer.close()
        paged = reader.wait(
            lambda events: {e.labels.model for e in events} >= set(keys), timeout_s=120
        )
    reader.close()
    got = {e.labels.model: e.incident_type for e in reader.events}
    assert paged, f"paged only {sorted(got)}; worker log: {log.read_text()[-3000:]}"
    assert all(t.startswith("critical_event") for t in got.values()), got
    print(f"checked: in-place and by-request join paths both paged: {sorted(got.items())}")
