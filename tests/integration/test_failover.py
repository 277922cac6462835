"""Scale-out and crash recovery on the real broker, with two worker processes.

Worker A processes the first six simulated hours alone (baselines learned). Worker B
joins the group (partitions and their table state are shared), then A is killed with
SIGKILL mid-stream. B takes over every partition, restores the detector state (from its
standby copy with RocksDB, from the changelog topics with the memory store), and must
catch the failures injected after that without a warm-up: no false incident, no lost
incident, no second incident for the same one. Once with each state store.
"""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alerting.model import IncidentAction, IncidentEvent
from streams.devtools.scenario import Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline import state
from streams.pipeline.frozen import NAMES, is_frozen_key
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.traffic import (
    SKEW,
    AlertsReader,
    critical_marker,
    publish_lines,
    split_at,
    topic_records,
)
from tests.integration.workers import wait_for, worker_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

H = timedelta(hours=1)
BOUND = timedelta(minutes=90)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_state_follows_partitions_when_a_worker_is_killed(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path, store: str
) -> None:
    """With RocksDB (the default store) worker B keeps a standby copy of A's partitions
    and takes them over from it, reading the state back as stored bytes; with the memory
    store it has no standby and reads A's changelogs whole."""
    scenario = Scenario(
        seed=21,
        duration=10 * H,
        events_per_hour=3600,
        injections=[
            Injection(
                type="toxicity_spike",
                start=7 * H,
                duration=2 * H,
                strength=8,
                scope={"model": "support-chat"},
            ),
            Injection(
                type="confidence_drop",
                start=7 * H,
                duration=2 * H,
                strength=0.2,
                scope={"model": "intent-classifier"},
            ),
        ],
    )
    lines = list(Simulator(scenario).lines())
    first, second = split_at(lines, scenario.start + 6 * H)
    versions = {m.name: m.version for m in scenario.models}
    mid = scenario.start + 6 * H
    markers = [
        critical_marker(m, v, mid - timedelta(seconds=10 - i), i)
        for i, (m, v) in enumerate(versions.items())
    ]
    reader = AlertsReader(kafka_broker.bootstrap, service_settings.topics.alerts)
    argv = ["-m", "streams.cli.main", "run"]

    def worker_settings(data_dir: Path) -> Settings:
        worker = service_settings.worker.model_copy(update={"store": store, "data_dir": data_dir})
        return service_settings.model_copy(update={"worker": worker})

    settings_a, settings_b = worker_settings(tmp_path / "a"), worker_settings(tmp_path / "b")
    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"

    def markers_paged(events: list[IncidentEvent]) -> bool:
        return {e.labels.model for e in events if e.incident_type.startswith("critical")} == set(
            versions
        )

    try:
        with worker_process(settings_a, argv, log_a) as worker_a:
            publish_lines(kafka_broker.bootstrap, service_settings, [*first, *markers], rate=3000)
            assert reader.wait(markers_paged, timeout_s=240), "worker A did not finish phase 1"
            with worker_process(settings_b, argv, log_b):
                wait_for(
                    lambda: log_b.read_text(errors="replace").count("Worker ready") >= 1,
                    90,
                    "worker B to join",
                    log_b,
                )
                time.sleep(5)
                worker_a.send_signal(signal.SIGKILL)  # a crash: no clean leave, no commit
                worker_a.wait(timeout=10)
                publish_lines(kafka_broker.bootstrap, service_settings, second, rate=3000)

                def both_found(events: list[IncidentEvent]) -> bool:
                    found = {
                        (e.labels.model, e.incident_type.split(":")[0])
                        for e in events
                        if e.action == IncidentAction.TRIGGER
                    }
                    return {
                        ("support-chat", "toxicity_rate"),
                        ("intent-classifier", "confidence_shift"),
                    } <= found

                detected = reader.wait(both_found, timeout_s=300)
    finally:
        reader.close()
    events = reader.events
    triggers = [e for e in events if e.action == IncidentAction.TRIGGER]
    print(
        "\n".join(f"{e.last_seen:%H:%M} {e.incident_type} {e.labels.describe()}" for e in triggers)
    )
    assert detected, "worker B did not detect the injected failures"
    start = scenario.start + 7 * H
    for model, kind in (("support-chat", "toxicity_rate"), ("intent-classifier", "confidence")):
        hits = [e for e in triggers if e.labels.model == model and e.incident_type.startswith(kind)]
        delay = min(e.last_seen for e in hits) - start
        print(f"{model} {kind}: detected after {delay} of event time")
        assert -SKEW <= delay <= BOUND
    # No warm-up false alarm after the takeover: every non-marker incident is in an
    # injected model during (or within an hour after) its injection.
    for e in triggers:
        if e.incident_type.startswith("critical"):
            continue
        assert e.labels.model in {"support-chat", "intent-classifier"}, e.labels.describe()
        assert start - SKEW <= e.last_seen <= start + 3 * H, f"{e.incident_type} at {e.last_seen}"
    # Reprocessing after the crash may repeat a message, never invent a second incident:
    # the same event id may appear twice, but each firing has one incident id.
    by_key: dict[str, set[str]] = defaultdict(set)
    resolves: dict[str, int] = defaultdict(int)
    for e in events:
        by_key[e.dedup_key].add(e.incident_id)
        resolves[e.dedup_key] += e.action == IncidentAction.RESOLVE
    for key, ids in by_key.items():
        assert len(ids) <= resolves[key] + 1, f"{key}: {ids}"
    # Worker B really worked: it logged the incidents of phase 2, and every state it
    # restored decoded (streams.pipeline.state.restore logs a value it drops).
    assert "incident trigger" in log_b.read_text(errors="replace")
    assert "dropping it and relearning" not in log_b.read_text(errors="replace")
    # Both wrote their detector sets back when they drained (the rebalance, B's stop).
    for log in (log_a, log_b):
        assert "writing state back" not in log.read_text(errors="replace"), log.name
    # A worker recovering one partition finds the fitted references its records name.
    _each_record_finds_its_references(kafka_broker.bootstrap, service_settings)


def _each_record_finds_its_references(bootstrap: str, settings: Settings) -> None:
    """The detector changelog as a worker recovering one partition reads it: each key's
    latest record there names only fitted references that partition holds."""
    latest: dict[int, dict[str, Any]] = defaultdict(dict)
    for rec in topic_records(bootstrap, f"{settings.worker.app_id}-detectors-changelog"):
        key = json.loads(rec.key) if rec.key.startswith(b'"') else rec.key.decode()
        latest[rec.partition][key] = None if rec.value is None else state.decode(rec.value)
    named = 0
    for part in latest.values():
        for key, record in part.items():
            if record is None or is_frozen_key(key):
                continue
            for name in record.get(NAMES, ()):
                assert part.get(name) is not None, f"{key} names {name}, not in its partition"
                named += 1
    assert named, "no fitted reference was stored apart"
