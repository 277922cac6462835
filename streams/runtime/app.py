"""The faust application factory.

The app is built by :func:`create_app` from validated settings, never at import time, so
tests and the CLI can build as many differently configured apps as they need. Agents are
registered on the app by the pipeline module, not here.
"""

from __future__ import annotations

import faust

from streams.kafka.security import faust_credentials
from streams.runtime.batching import BatchApp
from streams.runtime.draining import DrainingApp
from streams.runtime.fetch_guard import install as install_fetch_guard
from streams.settings import Settings, WorkerSettings


def create_app(settings: Settings, *, broker_url: str | None = None) -> faust.App:
    """Build a faust app for ``settings``.

    ``broker_url`` overrides ``settings.kafka.broker`` (used when ``sentinel run`` starts a
    local broker). Processing is at-least-once: exactly-once has open duplicate/crash
    issues in faust, so incident emission is made idempotent instead.
    """
    url = broker_url or settings.kafka.broker
    if not url:
        raise ValueError("no Kafka broker configured (kafka.broker or SENTINEL_BROKER)")
    worker = settings.worker
    worker.data_dir.mkdir(parents=True, exist_ok=True)
    # The batch ingress (streams.runtime.batching): raw event topics reach their agent as
    # one event per partition per fetch, everything else takes faust's own path.
    app_class = BatchApp if worker.batch_ingress else DrainingApp
    app = app_class(
        worker.app_id,
        broker=url,
        broker_credentials=faust_credentials(settings.kafka.security),
        store=worker.store,
        datadir=str(worker.data_dir),
        autodiscover=False,
        processing_guarantee="at_least_once",
        topic_partitions=settings.kafka.topic_partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        web_enabled=worker.web_enabled,
        web_port=worker.web_port,
        web_bind=worker.web_host,
        web_host=worker.web_host,
        # Tests and restarts rejoin quickly; a stale member is evicted after this.
        broker_session_timeout=30.0,
        broker_rebalance_timeout=30.0,
        consumer_auto_offset_reset="earliest",
        # Batch produce requests: every event crosses two internal topics, and one
        # request per message was a quarter of the worker's CPU (py-spy, bench/throughput).
        producer_linger=0.02,
        producer_max_batch_size=256 * 1024,
        # Fetch big: with faust's defaults (1 MiB per partition, 4096-event stream
        # buffer) a no-op agent waited on fetches at ~8k records/s; with these it is
        # CPU-bound at ~15k/s on the same machine (bench/throughput.py, faust row).
        consumer_max_fetch_size=8 * 1024 * 1024,
        broker_max_poll_records=10_000,
        stream_buffer_maxsize=32_768,
        table_standby_replicas=standby_replicas(worker),
    )
    # A batch that cannot be decoded pauses its partition instead of crashing the worker.
    # The batch ingress's transport is guarded itself; the per-record app gets the guard
    # by replacing its transport.
    if not worker.batch_ingress:
        install_fetch_guard(app)
    return app


def standby_replicas(worker: WorkerSettings) -> int:
    """Standby replicas of each table partition for ``worker``: its
    ``standby_replicas`` with the RocksDB store, none with the memory store.

    A standby follows the changelog of a partition another worker owns, so that a worker
    taking the partition over reads only the changelog's tail: RocksDB keeps the offset
    its copy has reached. The memory store keeps none (faust's ``persisted_offset`` is
    None), so a new owner reads the whole changelog whatever a standby held, and the
    standby was all cost: every other worker's state writes read and stored
    (docs/validation.md, "Stop 64")."""
    return worker.standby_replicas if worker.store == "rocksdb://" else 0
