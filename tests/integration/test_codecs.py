"""Compressed records from Kafka's own Java console producer reach the real worker.

Issue 17: two zstd records from ``kafka-console-producer --compression-codec zstd`` stopped
the worker, and it crash-looped. Here ``org.apache.kafka.tools.ConsoleProducer`` (Maven
Central's ``kafka-tools``, the broker's version) publishes valid events with each codec
(none, gzip, snappy, lz4, zstd), keyed and unkeyed, and the worker of
``tests.integration.test_ingress`` (the real ingress in a faust worker subprocess) must
accept every one exactly once, dead-letter none, and still be running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.contract.events import parse_event
from streams.kafka.topics import read_topic_to_end
from streams.settings import LocalBrokerSettings, Settings
from tests.conftest import KafkaBroker
from tests.integration.test_ingress import _drain, _good
from tests.integration.workers import child_env, ingress_topics, process_group
from tests.tools.kafka_tools import console_producer, fetch_kafka_tools

REPO = Path(__file__).resolve().parents[2]
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
PER_CODEC = 24


def _publish(libs: Path, bootstrap: str, topic: str, codec: str, lines: list[str]) -> None:
    """Run the console producer once for ``lines`` (half keyed ``key<TAB>value``)."""
    keyed = codec in ("gzip", "lz4")  # keyed and unkeyed records both get covered
    text = "".join(
        (f"{json.loads(v)['gen_ai.response.id']}\t{v}" if keyed else v) + "\n" for v in lines
    )
    result = subprocess.run(
        console_producer(libs, bootstrap, topic, compression=codec, keyed=keyed),
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"console producer ({codec}) failed:\n{result.stderr[-3000:]}"


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_every_codec_from_the_java_console_producer_is_accepted(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    libs = fetch_kafka_tools(LocalBrokerSettings().kafka_version, LocalBrokerSettings().cache_dir)
    t = service_settings.topics
    validated = ingress_topics(kafka_broker.bootstrap, service_settings)
    now = datetime.now(UTC) - timedelta(minutes=5)
    sent: list[str] = []
    for c, codec in enumerate(CODECS):
        lines = []
        for i in range(PER_CODEC):
            rid = f"{codec}-{i:03d}"
            sent.append(rid)
            event = _good("output", rid, now + timedelta(seconds=c * PER_CODEC + i))
            lines.append(json.dumps(event))
        _publish(libs, kafka_broker.bootstrap, t.outputs, codec, lines)

    log_path = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "tests.integration.test_ingress", validated]
    with process_group(argv, child_env(service_settings), log_path) as proc:
        got = _drain(kafka_broker.bootstrap, {validated: len(sent)}, timeout_s=180, proc=proc)
        still_running = proc.poll() is None
    worker_log = log_path.read_text(errors="replace")[-4000:]
    assert still_running, f"the worker exited (rc {proc.returncode}):\n{worker_log}"
    accepted = sorted(parse_event(value).request_id for _, value in got[validated])
    assert accepted == sorted(sent), worker_log
    dead = read_topic_to_end(kafka_broker.bootstrap, t.dead_letter)
    assert dead == [], "no valid compressed record may be dead-lettered"
