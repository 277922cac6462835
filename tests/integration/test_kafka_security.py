"""SASL/SCRAM over TLS against a real secured broker: the service's security settings work.

The broker is the project's own :class:`streams.broker.LocalBroker` with
``security = "sasl_ssl"``: a SASL_SSL client listener with SCRAM-SHA-512 and a throwaway
CA, on free ports, started once for this module and deleted afterwards. Every client the
service builds is pointed at it through ``KafkaSecurity`` (the ``kafka.security``
settings), exactly as a deployment would be: the faust worker (``sentinel run`` in its
own process), the publisher SDK and the kafka-python admin and consumer paths. Refusals
(wrong password, plaintext client, untrusted certificate) must be prompt and say why,
and the password must not leak into logs, printed configuration or the broker's files.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import KafkaError
from pydantic import SecretStr

from alerting.model import IncidentAction, IncidentEvent
from streams.broker import LocalBroker, free_port
from streams.events import InferenceOutput
from streams.sdk import SentinelPublisher
from streams.security import KafkaLoginError, KafkaSecurity, check_login, kafka_python_kwargs
from streams.settings import LocalBrokerSettings, Settings, load_settings, settings_env
from tests.integration.traffic import critical_marker
from tests.integration.workers import REPO, wait_for, worker_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = "sentinel-svc"
REFUSAL_BOUND_S = 10.0
"""A refused login must surface within this many seconds, not after a client's retries."""


@dataclass(frozen=True)
class SecuredBroker:
    """How the tests reach the SASL_SSL broker (and its files, to search for leaks)."""

    bootstrap: str
    security: KafkaSecurity
    password: str
    data_dir: Path

    def kwargs(self) -> dict[str, object]:
        """kafka-python client arguments for the configured user."""
        return kafka_python_kwargs(self.security)

    def with_password(self, password: str) -> KafkaSecurity:
        return self.security.model_copy(update={"sasl_password": SecretStr(password)})


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """A SASL_SSL (SCRAM-SHA-512) broker on free ports; stopped and deleted afterwards."""
    # Unique and long, so a search for it in logs and files cannot match by chance.
    password = f"pw-{secrets.token_urlsafe(18)}"
    settings = LocalBrokerSettings(
        port=free_port(),
        controller_port=free_port(),
        data_dir=tmp_path_factory.mktemp("kafka-sasl-ssl"),
        start_timeout_s=120.0,
        security="sasl_ssl",
        sasl_username=USER,
        sasl_password=SecretStr(password),
    )
    broker = LocalBroker(settings)
    try:
        began = time.monotonic()
        broker.up()  # returns once a SCRAM login over TLS has answered a metadata request
        print(f"secured broker ready in {time.monotonic() - began:.1f} s on {broker.bootstrap}")
        yield SecuredBroker(
            bootstrap=broker.bootstrap,
            security=broker.client_security(),
            password=password,
            data_dir=broker.data_dir,
        )
    finally:
        broker.destroy()


def _settings(broker: SecuredBroker, tmp_path: Path, name: str, **extra: object) -> Settings:
    """Service settings on the secured broker (per-test topics), as ``service_settings``."""
    prefix = f"s{name}"
    return load_settings(
        env={},
        overrides={
            "kafka.broker": f"kafka://{broker.bootstrap}",
            "kafka.topic_partitions": 2,
            "kafka.security": broker.security,
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
            **extra,
        },
    )


def _read_all(bootstrap: str, topic: str, **client: object) -> list[bytes]:
    """Every record of ``topic`` (a 3 s bound on finding the broker and on silence)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        bootstrap_timeout_ms=3000,
        **client,
    )
    try:
        return [record.value for record in consumer]
    finally:
        consumer.close()


def _incidents(consumer: KafkaConsumer) -> list[IncidentEvent]:
    return [IncidentEvent.model_validate_json(record.value) for record in consumer]


def test_worker_pages_an_incident_through_the_secured_listener(
    secured_broker: SecuredBroker, tmp_path: Path, unique_name: str
) -> None:
    settings = _settings(secured_broker, tmp_path, unique_name, **{"worker.log_level": "debug"})
    log = tmp_path / "worker.log"
    marker = InferenceOutput.model_validate_json(
        critical_marker("secure-chat", "v1", datetime.now(UTC), 0)
    )
    alerts = KafkaConsumer(
        settings.topics.alerts,
        bootstrap_servers=secured_broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
        **secured_broker.kwargs(),
    )
    seen: list[IncidentEvent] = []
    try:
        with worker_process(settings, ["-m", "streams.cli", "run"], log):
            # The worker creates the service topics first (admin client, same credentials).
            wait_for(lambda: "created topics" in log.read_text(), 60, "topic creation", log)
            with SentinelPublisher(
                secured_broker.bootstrap, settings.topics, **secured_broker.kwargs()
            ) as publisher:
                publisher.publish_output(marker).get(timeout=30)

            def paged() -> bool:
                seen.extend(_incidents(alerts))
                return any(e.action == IncidentAction.TRIGGER for e in seen)

            wait_for(paged, 90, "the incident on the alerts topic", log)
    finally:
        alerts.close()
    trigger = next(e for e in seen if e.action == IncidentAction.TRIGGER)
    assert trigger.incident_type.startswith("critical"), trigger.incident_type
    assert trigger.labels.model == "secure-chat"
    assert marker.request_id in trigger.evidence.sample_request_ids
    output = log.read_text(errors="replace")
    assert len(output.splitlines()) > 50, "the debug log is too short to prove anything"
    assert secured_broker.password not in output
    print(
        f"checked: sentinel run (faust, SASL_SSL SCRAM-SHA-512) paged {trigger.incident_type} "
        f"for the SDK-published request {marker.request_id}; its debug log "
        f"({len(output.splitlines())} lines) never shows the password"
    )


def test_sdk_admin_and_consumer_connect_with_kafka_python_kwargs(
    secured_broker: SecuredBroker, unique_name: str
) -> None:
    topic = f"secure-sdk-{unique_name}"
    admin = KafkaAdminClient(bootstrap_servers=secured_broker.bootstrap, **secured_broker.kwargs())
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()
    outputs = [
        InferenceOutput.model_validate_json(
            critical_marker("sdk-model", "v1", datetime.now(UTC), i)
        )
        for i in range(5)
    ]
    with SentinelPublisher(secured_broker.bootstrap, **secured_broker.kwargs()) as publisher:
        for event in outputs:
            publisher.publish(event, topic=topic)
        publisher.flush(timeout=30)
        assert publisher.sent == len(outputs)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=secured_broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
        **secured_broker.kwargs(),
    )
    try:
        keys = sorted(record.key.decode() for record in consumer)
    finally:
        consumer.close()
    assert keys == sorted(e.request_id for e in outputs)
    print(
        f"checked: admin created {topic}, SentinelPublisher delivered {len(outputs)} events "
        "and a KafkaConsumer read them all back, each with kafka_python_kwargs over SASL_SSL"
    )


def test_wrong_password_is_refused_promptly_and_says_why(
    secured_broker: SecuredBroker,
    tmp_path: Path,
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = f"wrong-{secrets.token_urlsafe(12)}"
    bad = secured_broker.with_password(wrong)
    # 1. The explicit check the worker runs first.
    began = time.monotonic()
    with pytest.raises(KafkaLoginError, match="invalid credentials") as refused:
        check_login([secured_broker.bootstrap], bad)
    assert f"user '{USER}'" in str(refused.value)
    login_took = time.monotonic() - began
    assert login_took < REFUSAL_BOUND_S

    # 2. The worker command: exits with the reason, instead of retrying as a network fault.
    settings = _settings(secured_broker, tmp_path, unique_name)
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"security": bad})}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update(settings_env(settings), PYTHONPATH=str(REPO))
    began = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "run"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - began
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "Kafka login refused" in output, output
    assert "invalid credentials" in output, output
    assert wrong not in output
    assert secured_broker.password not in output
    assert took < 30, f"sentinel run took {took:.1f} s to give up"

    # 3. kafka-python alone (the SDK): bounded by bootstrap_timeout_ms, and vague. Its log
    # names SaslAuthenticationFailed in some runs; in others the broker's close after the
    # failure wins the race and it logs only "socket disconnected" (kafka-python 3.0.12).
    began = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="kafka"),
        pytest.raises(KafkaError, match="Unable to bootstrap"),
    ):
        SentinelPublisher(
            secured_broker.bootstrap, bootstrap_timeout_ms=3000, **kafka_python_kwargs(bad)
        )
    sdk_took = time.monotonic() - began
    assert sdk_took < REFUSAL_BOUND_S
    assert wrong not in caplog.text
    named = "SaslAuthenticationFailed" in caplog.text
    print(
        f"checked: a wrong password is refused: check_login names 'invalid credentials' in "
        f"{login_took:.2f} s, sentinel run exits 1 saying so in {took:.1f} s; the SDK alone "
        f"gives up after {sdk_took:.1f} s (bootstrap_timeout_ms), its log "
        f"{'names' if named else 'does not name'} SaslAuthenticationFailed"
    )


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_a_client_without_tls_cannot_read_the_secured_listener(
    secured_broker: SecuredBroker, unique_name: str, protocol: str
) -> None:
    topic = f"secure-plain-{protocol.lower()}-{unique_name}"
    with SentinelPublisher(secured_broker.bootstrap, **secured_broker.kwargs()) as publisher:
        event = InferenceOutput.model_validate_json(
            critical_marker("plain-model", "v1", datetime.now(UTC), 0)
        )
        publisher.publish(event, topic=topic).get(timeout=30)
    # Control: there is something to read, for a client that speaks SASL_SSL.
    assert len(_read_all(secured_broker.bootstrap, topic, **secured_broker.kwargs())) == 1
    # SASL_PLAINTEXT: the right user and password, but no TLS.
    kwargs = (
        kafka_python_kwargs(
            KafkaSecurity(
                security_protocol="SASL_PLAINTEXT",
                sasl_username=USER,
                sasl_password=SecretStr(secured_broker.password),
            )
        )
        if protocol == "SASL_PLAINTEXT"
        else {}
    )
    began = time.monotonic()
    with pytest.raises(KafkaError, match="Unable to bootstrap"):
        _read_all(secured_broker.bootstrap, topic, **kwargs)
    assert time.monotonic() - began < REFUSAL_BOUND_S
    print(f"checked: a {protocol} client gets nothing from the SASL_SSL listener (refused)")


def test_a_client_that_does_not_trust_the_broker_ca_is_refused(
    secured_broker: SecuredBroker,
) -> None:
    # No ssl_cafile: the system trust store, which does not hold the throwaway CA.
    untrusting = secured_broker.security.model_copy(update={"ssl_cafile": None})
    with pytest.raises(KafkaLoginError, match="CERTIFICATE_VERIFY_FAILED"):
        check_login([secured_broker.bootstrap], untrusting)
    print("checked: TLS verification fails for a client that does not trust the broker's CA")


def test_password_is_absent_from_printed_config_and_broker_files(
    secured_broker: SecuredBroker, tmp_path: Path, unique_name: str
) -> None:
    local_password = f"local-{secrets.token_urlsafe(12)}"
    settings = _settings(
        secured_broker,
        tmp_path,
        unique_name,
        **{"local_broker.security": "sasl_ssl", "local_broker.sasl_password": local_password},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update(settings_env(settings), PYTHONPATH=str(REPO))
    shown = subprocess.run(
        [sys.executable, "-m", "streams.cli", "config"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    # The secured settings were loaded (so the check is not vacuous), secrets masked.
    assert '"security_protocol": "SASL_SSL"' in shown
    assert f'"sasl_username": "{USER}"' in shown
    assert shown.count('"**********"') == 2
    assert secured_broker.password not in shown
    assert local_password not in shown
    # The broker holds only the salted SCRAM form: not in its config, log or data files.
    files = [p for p in secured_broker.data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "server.properties" for p in files)
    leaking = [p for p in files if secured_broker.password.encode() in p.read_bytes()]
    assert leaking == []
    print(
        f"checked: `sentinel config` masks both passwords; none of the broker's {len(files)} "
        "files (config, log, metadata, segments) contains the client password"
    )
