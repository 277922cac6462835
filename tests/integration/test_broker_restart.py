"""The broker restarts under a running worker: the worker reconnects and loses nothing.

The test owns its broker (not the session one): it stops it with the worker running,
starts it again on the same ports and data directory, and then injects a failure that the
worker must still detect from the baselines it learned before the restart.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from alerting.model import IncidentAction, IncidentEvent
from streams.devtools.scenario import Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.settings import Settings
from tests.integration.traffic import (
    SKEW,
    AlertsReader,
    critical_marker,
    publish_lines,
    split_at,
)
from tests.integration.workers import own_broker, worker_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

H = timedelta(hours=1)


@pytest.mark.timeout(1500)
def test_worker_survives_a_broker_restart(service_settings: Settings, tmp_path: Path) -> None:
    scenario = Scenario(
        seed=31,
        duration=9 * H,
        events_per_hour=3600,
        injections=[
            Injection(
                type="confidence_drop",
                start=7 * H,
                duration=2 * H,
                strength=0.2,
                scope={"model": "intent-classifier"},
            )
        ],
    )
    lines = list(Simulator(scenario).lines())
    first, second = split_at(lines, scenario.start + 6 * H)
    marker = critical_marker("intent-classifier", "v7", scenario.start + 6 * H, 0)
    log = tmp_path / "worker.log"
    with own_broker(service_settings, tmp_path / "kafka") as (broker, settings):
        with worker_process(settings, ["-m", "streams.cli.main", "run"], log):
            publish_lines(broker.bootstrap, settings, [*first, marker], rate=3000)
            reader = AlertsReader(broker.bootstrap, settings.topics.alerts)

            def marker_paged(events: list[IncidentEvent]) -> bool:
                return any(e.incident_type.startswith("critical") for e in events)

            # ~65k events; a condition with a generous bound, not a speed assertion
            assert reader.wait(marker_paged, timeout_s=600), "phase 1 not processed"
            reader.close()
            broker.down()
            time.sleep(5)
            broker.up()  # same ports, same data: topics, offsets and changelogs survive
            publish_lines(broker.bootstrap, settings, second, rate=3000)
            reader = AlertsReader(broker.bootstrap, settings.topics.alerts)

            def drop_found(events: list[IncidentEvent]) -> bool:
                return any(
                    e.action == IncidentAction.TRIGGER
                    and e.incident_type.startswith("confidence_shift")
                    and e.labels.model == "intent-classifier"
                    for e in events
                )

            try:
                found = reader.wait(drop_found, timeout_s=300)
            finally:
                reader.close()
        triggers = [e for e in reader.events if e.action == IncidentAction.TRIGGER]
        print(
            "\n".join(
                f"{e.last_seen:%H:%M} {e.incident_type} {e.labels.describe()}" for e in triggers
            )
        )
        assert found, "no confidence incident after the broker restart"
        start = scenario.start + 7 * H
        for e in triggers:
            if e.incident_type.startswith("critical"):
                continue
            assert e.labels.model == "intent-classifier", e.labels.describe()
            assert start - SKEW <= e.last_seen <= start + 3 * H, (
                f"{e.incident_type} at {e.last_seen}"
            )
