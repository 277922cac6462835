"""The broker a benchmark publishes to: ``SENTINEL_BENCH_BROKER=host:port`` when set,
otherwise a single-node local Kafka started in the benchmark's temporary directory and
stopped (its data deleted) when the benchmark ends."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.devtools.broker import LocalBroker, free_port
from streams.settings import LocalBrokerSettings


@contextmanager
def bench_broker(tmp: Path, log: Callable[[str], None]) -> Iterator[str]:
    """Yield the bootstrap address (``host:port``) of the benchmark's broker."""
    existing = os.environ.get("SENTINEL_BENCH_BROKER")
    if existing:
        yield existing
        return
    broker = LocalBroker(
        LocalBrokerSettings(port=free_port(), controller_port=free_port(), data_dir=tmp / "kafka"),
        log=log,
    )
    broker.up()
    try:
        yield broker.bootstrap
    finally:
        broker.destroy()
