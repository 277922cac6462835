"""A model that goes silent with its worker is still paged, on the real broker.

Worker A reads 75 simulated minutes of every model's traffic, the end marked by a certain
self-harm output per model, and is killed (SIGKILL) once the markers paged, before its
silence watch could judge the quiet that follows. No event arrives after it. Worker B
starts in its place with nothing but the engines table (read back from the changelog)
to tell it the models exist: before, it ticked only models it had seen an event of, so
none was ever found silent. Now each model's stored traffic is resumed at B's first
wall-clock tick and every model pages ``traffic_silence``, from B.
"""

from __future__ import annotations

import signal
from datetime import timedelta
from pathlib import Path

import pytest

from alerting.model import IncidentAction, IncidentEvent
from streams.devtools.scenario import Scenario
from streams.devtools.simulate import Simulator
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.traffic import AlertsReader, critical_marker, publish_lines
from tests.integration.workers import worker_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SILENCE_MINUTES = 1.0
"""The floor of a silence: long enough that worker A is killed before it could judge one
(the markers' pages are read within seconds), short enough for a quick test."""


@pytest.mark.timeout(600)
def test_a_model_silent_across_a_restart_is_paged_by_the_restarted_worker(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    scenario = Scenario(seed=31, duration=timedelta(minutes=75), events_per_hour=3600)
    lines = list(Simulator(scenario).lines())
    versions = {m.name: m.version for m in scenario.models}
    end = scenario.start + scenario.duration
    markers = [
        critical_marker(m, v, end + timedelta(seconds=i), i)
        for i, (m, v) in enumerate(versions.items())
    ]
    detection = service_settings.detection.model_copy(update={"silence_minutes": SILENCE_MINUTES})
    reader = AlertsReader(kafka_broker.bootstrap, service_settings.topics.alerts)
    argv = ["-m", "streams.cli.main", "run"]

    def worker_settings(data_dir: Path) -> Settings:
        worker = service_settings.worker.model_copy(update={"data_dir": data_dir})
        return service_settings.model_copy(update={"worker": worker, "detection": detection})

    def triggered(kind: str, events: list[IncidentEvent]) -> set[str]:
        return {
            e.labels.model
            for e in events
            if e.action == IncidentAction.TRIGGER and e.incident_type.startswith(kind)
        }

    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    try:
        with worker_process(worker_settings(tmp_path / "a"), argv, log_a) as worker_a:
            publish_lines(kafka_broker.bootstrap, service_settings, [*lines, *markers], rate=3000)
            paged = reader.wait(lambda ev: triggered("critical", ev) == set(versions), 240)
            worker_a.send_signal(signal.SIGKILL)  # before a minute of quiet: no silence yet
            worker_a.wait(timeout=10)
        assert paged, "worker A did not page the end markers"
        assert triggered("traffic_silence", reader.poll()) == set()
        with worker_process(worker_settings(tmp_path / "b"), argv, log_b):
            found = reader.wait(lambda ev: triggered("traffic_silence", ev) == set(versions), 300)
    finally:
        reader.close()
    silences = [e for e in reader.events if e.incident_type == "traffic_silence"]
    print("\n".join(f"{e.emitted_at:%H:%M:%S} {e.action} {e.summary}" for e in silences))
    assert found, f"silences paged for {triggered('traffic_silence', reader.events)} only"
    assert "traffic_silence" not in log_a.read_text(errors="replace")
    assert log_b.read_text(errors="replace").count("incident trigger traffic_silence") == len(
        versions
    )
    for e in silences:
        # judged from the models' last events: a quiet of at least the floor
        assert e.evidence.signal.statistic >= SILENCE_MINUTES
