"""Shared fixtures: a real single-node Kafka broker for the whole test session.

The broker is the project's own :class:`streams.devtools.broker.LocalBroker` (Maven Central jars,
KRaft, Java 17) on free loopback ports with a temporary data directory. Set
``SENTINEL_TEST_BROKER=host:port`` to run the integration tests against an existing
broker instead.

A few tests skip when a tool they drive is missing (openssl, Chromium, Go); CI provides
them all and sets ``SENTINEL_NO_SKIPS=1``, which turns any such skip into a failure, so CI
runs everything the skips guard.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.devtools.broker import LocalBroker, free_port
from streams.settings import LocalBrokerSettings, Settings, load_settings


@dataclass(frozen=True)
class KafkaBroker:
    """How tests reach the session broker."""

    bootstrap: str

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A real Kafka broker, started once per session and stopped (and deleted) at the end."""
    existing = os.environ.get("SENTINEL_TEST_BROKER")
    if existing:
        yield KafkaBroker(bootstrap=existing)
        return
    settings = LocalBrokerSettings(
        port=free_port(),
        controller_port=free_port(),
        data_dir=tmp_path_factory.mktemp("kafka"),
        start_timeout_s=120.0,
    )
    broker = LocalBroker(settings)
    broker.up()
    try:
        yield KafkaBroker(bootstrap=broker.bootstrap)
    finally:
        broker.destroy()


@pytest.fixture
def unique_name() -> str:
    """A short unique suffix so that tests sharing the broker never share topics/groups."""
    return uuid.uuid4().hex[:10]


def per_test_settings(broker_url: str, tmp_path: Path, prefix: str, **extra: object) -> Settings:
    """Service settings on ``broker_url`` with topics and app id of their own (``prefix``),
    two partitions, a memory store and no web server; ``extra`` overrides more keys."""
    return load_settings(
        env={},
        overrides={
            "kafka.broker": broker_url,
            "kafka.topic_partitions": 2,
            "worker.app_id": f"sentinel-{prefix}",
            "worker.store": "memory://",
            "worker.data_dir": str(tmp_path / "worker"),
            "worker.web_enabled": False,
            "topics.inputs": f"{prefix}.inputs",
            "topics.outputs": f"{prefix}.outputs",
            "topics.feedback": f"{prefix}.feedback",
            "topics.evaluations": f"{prefix}.evaluations",
            "topics.alerts": f"{prefix}.alerts",
            "topics.dead_letter": f"{prefix}.dead-letter",
            "topics.control": f"{prefix}.control",
            # Tests publish simulated history from 2025: a ten-year window still refuses
            # the ancient timestamps (years 1, 1900, 1970) the fuzz test sends.
            "detection.max_past_hours": 87600.0,
            **extra,
        },
    )


@pytest.fixture
def service_settings(kafka_broker: KafkaBroker, tmp_path: Path, unique_name: str) -> Settings:
    """Service settings pointing at the session broker, with per-test topics and app id."""
    return per_test_settings(kafka_broker.url, tmp_path, f"t{unique_name}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With ``SENTINEL_NO_SKIPS=1`` (CI), a skipped test is reported as failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    expected_failure = hasattr(report, "wasxfail")  # xfail reports as skipped: not a skip
    if report.skipped and not expected_failure and os.environ.get("SENTINEL_NO_SKIPS") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped under SENTINEL_NO_SKIPS=1: {report.longrepr}"
