"""Observability on the real broker: /healthz, /readyz and /metrics of a running worker.

The worker (``tests/integration/observability_worker.py``) runs in a subprocess with its
web server on a free loopback port. Simulator events and one poison record are published;
the metrics must show them consumed, dead-lettered and detected. All waits are bounded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.cli.main import main
from streams.devtools.scenario import Scenario
from streams.devtools.simulate import Simulator
from streams.settings import Settings, kind_topics
from tests.conftest import KafkaBroker
from tests.integration.traffic import publish_lines
from tests.integration.workers import (
    http_get,
    metric_total,
    use_settings_env,
    wait_for,
    with_web,
    worker_process,
)
from tests.unit.hardening.test_observability import parse

pytestmark = pytest.mark.integration


def test_worker_serves_health_readiness_and_moving_metrics(
    kafka_broker: KafkaBroker,
    service_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, base = with_web(service_settings)
    log = tmp_path / "worker.log"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=60)
    lines = list(
        Simulator(
            Scenario(
                seed=1,
                start=start,
                duration=timedelta(minutes=10),
                events_per_hour=600,
                daily_amplitude=0.0,
            )
        ).lines()
    )
    topic_of = kind_topics(settings)
    with worker_process(settings, ["-m", "tests.integration.observability_worker"], log):
        wait_for(lambda: http_get(f"{base}/healthz")[0] == 200, 90, "/healthz 200", log)
        wait_for(lambda: http_get(f"{base}/readyz")[0] == 200, 120, "/readyz 200", log)
        status, body = http_get(f"{base}/readyz")
        # 4 event topics + the 2 internal re-key topics (+ faust's leader topic).
        assert json.loads(body)["assigned_partitions"] >= 6 * settings.kafka.topic_partitions

        status, text = http_get(f"{base}/metrics")
        assert status == 200
        before = parse(text)
        assert metric_total(before, "sentinel_events_consumed_total") == 0
        assert metric_total(before, "sentinel_ready") == 1

        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        try:
            for line in lines:
                kind = json.loads(line)["event_type"]
                producer.send(topic_of[kind], value=line.encode())
            producer.send(settings.topics.inputs, value=b"{not json")
            producer.flush(timeout=30)
        finally:
            producer.close()

        def moved() -> bool:
            code, text = http_get(f"{base}/metrics")
            if code != 200:
                return False
            m = parse(text)
            return (
                metric_total(m, "sentinel_events_consumed_total") >= len(lines) + 1
                and metric_total(m, "sentinel_detect_observations_total") > 0
            )

        wait_for(moved, 120, "metrics to count the published events", log)
        status, text = http_get(f"{base}/metrics")
        after = parse(text)
        dead = after["sentinel_events_dead_lettered_total"]["samples"]
        assert [(lab["topic"], lab["reason"], v) for _, lab, v in dead] == [
            (settings.topics.inputs, "not_json", 1.0)
        ]
        partitions = {lab["topic"] for _, lab, _ in after["sentinel_consumer_lag"]["samples"]}
        assert settings.topics.inputs in partitions
        assert not any(t.endswith("-changelog") for t in partitions)
        errors = after["sentinel_metrics_errors_total"]["samples"]
        assert all(v == 0 for _, _, v in errors), errors
        # The detect stage's time and observations per model (where a busy worker's
        # detection goes: docs/operations.md, "A model busier than one worker").
        taken = after["sentinel_detect_model_observations_total"]["samples"]
        spent = after["sentinel_detect_model_seconds_total"]["samples"]
        models = {json.loads(line).get("gen_ai.request.model") for line in lines} - {None}
        assert {lab["model"] for _, lab, _ in taken} <= models
        assert sum(v for _, _, v in taken) == metric_total(
            after, "sentinel_detect_observations_total"
        )
        assert all(v > 0 for _, _, v in spent), spent

        # ``sentinel status`` shows this worker ready, and its lag falls to 0 once it
        # has committed what it consumed (issue 18 item 5)
        use_settings_env(monkeypatch, settings)

        def caught_up() -> bool:
            assert main(["status"]) == 0
            worker = capsys.readouterr().out.split("Worker:")[1]
            assert f"health: ready at {base}/readyz" in worker, worker
            assert "detection: not measured yet (the first reading comes" in worker
            # caught up: nothing left on the event topics nor on the internal ones
            return f"group {settings.worker.app_id}: lag 0 record(s) in total\n" in worker

        wait_for(caught_up, 60, "status to show the worker's lag at 0", log)

    records = []
    for raw in log.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            records.append(json.loads(raw))
    assert records, "the worker wrote no JSON log lines"
    assert all({"ts", "level", "logger", "message"} <= rec.keys() for rec in records)


def test_a_live_worker_solves_its_thresholds_in_the_background(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    """Young keys calibrate while the worker runs: their threshold solves go to the
    worker's child process (worker.background_solves, the default), come back answered,
    and none is left in flight or failed."""
    settings, base = with_web(service_settings)
    assert settings.worker.background_solves
    log = tmp_path / "worker.log"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    # A flat day: with the daily cycle, an hour that starts at night (the test's clock)
    # held too few outputs for any key to finish learning, and nothing was solved.
    scenario = Scenario(
        seed=2,
        start=start,
        duration=timedelta(hours=1),
        events_per_hour=3000,
        daily_amplitude=0.0,
    )
    lines = list(Simulator(scenario).lines())
    with worker_process(settings, ["-m", "tests.integration.observability_worker"], log):
        wait_for(lambda: http_get(f"{base}/readyz")[0] == 200, 120, "/readyz 200", log)
        publish_lines(kafka_broker.bootstrap, settings, lines)

        def solves() -> dict[str, float]:
            code, text = http_get(f"{base}/metrics")
            assert code == 200
            m = parse(text)
            done = {
                lab["outcome"]: v for _, lab, v in m["sentinel_threshold_solves_total"]["samples"]
            }
            done["in_flight"] = metric_total(m, "sentinel_threshold_solves_in_flight")
            done["consumed"] = metric_total(m, "sentinel_events_consumed_total")
            done["observations"] = metric_total(m, "sentinel_detect_observations_total")
            return done

        last: dict[str, float] = {}

        def settled() -> bool:
            """Every event detected (one observation each), detection still for 5 polls
            (1 s), nothing in flight."""
            now = solves()
            if now["observations"] != last.get("observations"):
                last.update(now, polls=0.0)
            last["polls"] += 1
            last.update(now)
            return now["observations"] >= len(lines) and last["polls"] > 5 and now["in_flight"] == 0

        wait_for(settled, 300, "the events detected and every solve answered", log)
    assert last["sent"] > 0, last  # keys calibrated, through the child
    assert last["answered"] > 0, last
    assert last["answered"] + last["superseded"] == last["sent"], last
    assert last["failed"] == 0, last
