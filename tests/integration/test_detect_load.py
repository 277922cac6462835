"""A worker whose detection cannot keep up with its traffic says so, on the real broker:
the model and the sample fraction to set (:mod:`streams.pipeline.load`).

Twelve seconds of a service at 2,000 requests a second (about 60,000 events) are
published at once, event times spanning those twelve seconds; the worker (its watch
looking every 5 s) detects on some thousand events a wall second, so its detection
advances the traffic's event time several times slower than the wall clock: it needs
several workers for that traffic, and it must warn. A machine several times faster
would still need more than the 60 % at which it warns.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.devtools.scenario import Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.load import WARN_NEED
from streams.settings import Settings, kind_topics
from tests.conftest import KafkaBroker
from tests.integration.workers import wait_for, worker_process

pytestmark = pytest.mark.integration

_FRACTION = re.compile(r'"([^"]+)" = (\d\.\d\d)')


def _warnings(log: Path) -> list[str]:
    out = []
    for raw in log.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            rec = json.loads(raw)
            if rec["level"] == "WARNING" and rec["message"].startswith("detection needed"):
                out.append(rec["message"])
    return out


def test_a_worker_behind_its_traffic_names_the_model_and_the_fraction_to_sample(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    worker = service_settings.worker.model_copy(update={"load_watch_seconds": 5.0})
    settings = service_settings.model_copy(update={"worker": worker})
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    scenario = Scenario(
        seed=4,
        start=start,
        duration=timedelta(seconds=12),
        events_per_hour=7_200_000,
        daily_amplitude=0.0,
    )
    lines = list(Simulator(scenario).lines())
    models = {m.name for m in scenario.models}
    topic_of = kind_topics(settings)
    log = tmp_path / "worker.log"
    with worker_process(settings, ["-m", "tests.integration.observability_worker"], log):
        producer = KafkaProducer(
            bootstrap_servers=kafka_broker.bootstrap, acks=1, linger_ms=20, batch_size=262_144
        )
        try:
            for line in lines:
                producer.send(topic_of[json.loads(line)["event_type"]], value=line.encode())
            producer.flush(timeout=60)
        finally:
            producer.close()
        wait_for(lambda: bool(_warnings(log)), 240, "a warning that detection falls behind", log)
    message = _warnings(log)[0]
    need = float(re.search(r"detection needed ([\d,]+)%", message).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert need >= WARN_NEED * 100, message
    fractions = dict(_FRACTION.findall(message))
    assert fractions, message
    assert set(fractions) <= models, message
    assert all(0.01 <= float(f) < 1.0 for f in fractions.values()), message
    assert "observations/s of traffic" in message
