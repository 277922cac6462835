"""A record batch the worker cannot decode pauses its partition; the worker goes on.

Reproduces issue 17's crash loop with a worker that lacks one codec: this module's worker
(``python -m tests.integration.test_fetch_guard VALIDATED no-zstd``) is the ingress worker
of ``tests.integration.test_ingress`` with aiokafka's zstd support switched off, as on a
machine without ``cramjam``. Partition 0 of the outputs topic holds plain records, then a
zstd batch, then plain records; partition 1 only plain ones. The worker must stay up,
accept all of partition 1 (and of partition 0 at most what precedes the batch), log the
paused partition with the batch's offset, and commit nothing past it. A worker with zstd
(a fixed deployment) then takes up partition 0 at the batch: every record is accepted,
none is lost.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.contract.events import parse_event
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.test_ingress import _drain, _good
from tests.integration.workers import child_env, ingress_topics, process_group

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _argv(validated: str, mode: str) -> list[str]:
    return [sys.executable, "-m", "tests.integration.test_fetch_guard", validated, mode]


def _send(bootstrap: str, topic: str, partition: int, ids: list[str], **kw: object) -> int:
    """Publish ``ids`` to one partition; returns the first offset."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **kw)  # type: ignore[arg-type]
    now = datetime.now(UTC) - timedelta(minutes=5)
    try:
        futures = [
            producer.send(
                topic, partition=partition, key=rid.encode(),
                value=json.dumps(_good("output", rid, now)).encode(),
            )
            for rid in ids
        ]  # fmt: skip
        producer.flush()
        return min(f.get(timeout=30).offset for f in futures)
    finally:
        producer.close()


@pytest.mark.timeout(420)
@pytest.mark.parametrize("batch_ingress", [False, True], ids=["per-record", "batch"])
def test_an_undecodable_batch_pauses_its_partition_and_loses_nothing(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path, batch_ingress: bool
) -> None:
    worker = service_settings.worker.model_copy(update={"batch_ingress": batch_ingress})
    service_settings = service_settings.model_copy(update={"worker": worker})
    t = service_settings.topics
    validated = ingress_topics(kafka_broker.bootstrap, service_settings)
    before = [f"fg-before-{i:02d}" for i in range(10)]
    packed = [f"fg-zstd-{i:02d}" for i in range(10)]
    after = [f"fg-after-{i:02d}" for i in range(10)]
    other = [f"fg-other-{i:02d}" for i in range(20)]
    boot = kafka_broker.bootstrap
    _send(boot, t.outputs, 0, before)
    batch_offset = _send(boot, t.outputs, 0, packed, compression_type="zstd", linger_ms=50)
    _send(boot, t.outputs, 0, after)
    _send(boot, t.outputs, 1, other)

    log = tmp_path / "worker.log"
    with process_group(_argv(validated, "no-zstd"), child_env(service_settings), log) as proc:
        got = _drain(boot, {validated: len(other)}, timeout_s=150, proc=proc)
        alive = proc.poll() is None
    text = log.read_text(errors="replace")
    assert alive, f"the worker exited (rc {proc.returncode}):\n{text[-4000:]}"
    first = {parse_event(v).request_id for _, v in got[validated]}
    # partition 1 flows; of partition 0 only records before the batch (those fetched with
    # it wait with it), nothing at or after it
    assert set(other) <= first <= set(other + before), text[-4000:]
    paused = [line for line in text.splitlines() if "paused at offset" in line]
    assert paused, text[-4000:]
    assert f"partition {t.outputs}[0] paused at offset {batch_offset}" in paused[0]
    assert "UnsupportedCodecError" in paused[0]

    # the fixed worker (zstd available) resumes at the batch: nothing was skipped
    with process_group(_argv(validated, "all-codecs"), child_env(service_settings), log) as proc:
        got = _drain(boot, {validated: 50}, timeout_s=150, proc=proc)
    accepted = {parse_event(v).request_id for _, v in got[validated]}
    assert accepted == set(before + packed + after + other), log.read_text()[-4000:]


def _main(validated: str, mode: str) -> None:  # pragma: no cover - runs in a subprocess
    if mode == "no-zstd":
        import aiokafka.codec

        aiokafka.codec.has_zstd = lambda: False  # as without cramjam
    import faust

    from streams.runtime.app import create_app
    from streams.runtime.ingress import register_ingress
    from streams.settings import load_settings
    from tests.integration.workers import forward_to_topic

    settings = load_settings(env=os.environ)
    app = create_app(settings)
    forward = forward_to_topic(app, validated, partitions=settings.kafka.topic_partitions)
    register_ingress(app, settings, forward)
    faust.Worker(app, loglevel="info").execute_from_commandline()


if __name__ == "__main__":  # pragma: no cover
    _main(sys.argv[1], sys.argv[2])
