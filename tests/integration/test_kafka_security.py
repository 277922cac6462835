"""SASL/SCRAM over TLS against a real secured broker: the service's security settings work.

The broker is the project's own :class:`streams.devtools.broker.LocalBroker` with
``security = "sasl_ssl"``: a SASL_SSL client listener with SCRAM-SHA-512 and SCRAM-SHA-256
and a throwaway CA, on free ports, started once for this module and deleted afterwards
(a second one, with ``client_auth = "required"``, proves client certificates; a third,
which also enables SASL/PLAIN, proves the API-key logins of managed services). Every
client the service builds is pointed at it through ``KafkaSecurity`` (the ``kafka.security``
settings), exactly as a deployment would be: the faust worker (``sentinel run`` in its
own process), the publisher SDK, the kafka-python admin and consumer paths, and the
operator commands (``silence``, ``notify``, ``contain``, ``simulate``, ``status``,
``incidents``, each in its own process). Refusals (wrong password, plaintext client,
untrusted certificate) must be prompt and say why, and the password must not leak into
logs, printed configuration, command output or the broker's files.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError
from pydantic import SecretStr

from alerting.model import IncidentAction, IncidentEvent
from alerting.redact import RedactingFilter
from streams.contract.events import InferenceOutput
from streams.devtools.broker import LocalBroker, free_port
from streams.devtools.broker_config import SaslSsl
from streams.devtools.certs import make_certificates
from streams.kafka.security import (
    KafkaLoginError,
    KafkaSecurity,
    SaslMechanism,
    check_login,
    faust_credentials,
    kafka_python_kwargs,
)
from streams.kafka.topics import read_topic_to_end
from streams.sdk import SentinelPublisher
from streams.settings import LocalBrokerSettings, Settings
from tests.conftest import per_test_settings
from tests.integration.incidents import publish_incidents, three_incidents
from tests.integration.traffic import critical_marker
from tests.integration.webhook_receiver import Recorder, serve
from tests.integration.workers import REPO, child_env, run_captured, wait_for, worker_process
from tests.unit.alerting.helpers import (
    PLAYBOOK_DIR,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = "sentinel-svc"
# A refused login is shown to be prompt by what it says ("Kafka login refused ... invalid
# credentials" comes from the explicit check, not from a client's bootstrap retries); the
# time it took is printed, never asserted (a busy machine must not fail the test).


@dataclass(frozen=True)
class SecuredBroker:
    """How the tests reach the SASL_SSL broker (and its files, to search for leaks)."""

    bootstrap: str
    security: KafkaSecurity
    password: str
    data_dir: Path

    def kwargs(self) -> dict[str, Any]:
        """kafka-python client arguments for the configured user."""
        return kafka_python_kwargs(self.security)

    def with_password(self, password: str) -> KafkaSecurity:
        return self.security.model_copy(update={"sasl_password": SecretStr(password)})


@contextmanager
def _running_broker(
    data_dir: Path,
    user: str,
    what: str,
    mechanism: SaslMechanism,
    broker_class: type[LocalBroker] = LocalBroker,
    **local: object,
) -> Iterator[SecuredBroker]:
    """A ``sasl_ssl`` local broker (``broker_class``) on free ports for ``user`` (``local``:
    more ``local_broker`` settings); clients log in with ``mechanism``. Deleted afterwards."""
    # Unique and long, so a search for it in logs and files cannot match by chance.
    password = f"pw-{secrets.token_urlsafe(18)}"
    settings = LocalBrokerSettings.model_validate(
        {
            "port": free_port(),
            "controller_port": free_port(),
            "data_dir": data_dir,
            "start_timeout_s": 120.0,
            "security": "sasl_ssl",
            "sasl_username": user,
            "sasl_password": SecretStr(password),
            **local,
        }
    )
    broker = broker_class(settings)
    try:
        began = time.monotonic()
        broker.up()  # returns once a login (with the client certificate, if any) answered
        print(f"{what} ready in {time.monotonic() - began:.1f} s on {broker.bootstrap}")
        yield SecuredBroker(
            bootstrap=broker.bootstrap,
            security=broker.client_security().model_copy(update={"sasl_mechanism": mechanism}),
            password=password,
            data_dir=broker.data_dir,
        )
    finally:
        broker.destroy()


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """A SASL_SSL (SCRAM-SHA-512) broker on free ports; stopped and deleted afterwards."""
    data_dir = tmp_path_factory.mktemp("kafka-sasl-ssl")
    with _running_broker(data_dir, USER, "secured broker", "SCRAM-SHA-512") as broker:
        yield broker


MTLS_USER = "sentinel-mtls"


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """A SASL_SSL broker that also requires client certificates (``client_auth =
    "required"``); its ``security`` logs in with SCRAM-SHA-256 and presents the client
    certificate the broker's throwaway CA signed. Stopped and deleted afterwards."""
    data_dir = tmp_path_factory.mktemp("kafka-mtls")
    with _running_broker(
        data_dir, MTLS_USER, "mTLS broker", "SCRAM-SHA-256", client_auth="required"
    ) as broker:
        yield broker


def _settings(broker: SecuredBroker, tmp_path: Path, name: str, **extra: object) -> Settings:
    """Service settings on the secured broker (per-test topics), as ``service_settings``."""
    return per_test_settings(
        f"kafka://{broker.bootstrap}",
        tmp_path,
        f"s{name}",
        **{"kafka.security": broker.security, **extra},
    )


def _records(bootstrap: str, topic: str, **client: object) -> list[Any]:
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
        return list(consumer)
    finally:
        consumer.close()


def _read_all(bootstrap: str, topic: str, **client: object) -> list[bytes]:
    """The values of every record of ``topic``."""
    return [record.value for record in _records(bootstrap, topic, **client)]


def _incidents(consumer: KafkaConsumer) -> list[IncidentEvent]:
    return [IncidentEvent.model_validate_json(record.value) for record in consumer]


def _page_through_the_worker(
    broker: SecuredBroker, tmp_path: Path, unique_name: str, user: str
) -> tuple[IncidentEvent, InferenceOutput, str]:
    """Run ``sentinel run`` (debug logging) on ``broker`` with ``broker.security`` as its
    ``kafka.security``, publish a critical output with the SDK and wait for the incident
    on the alerts topic: the page, the published output and the worker's log. Checks that
    the page is the output's critical incident, that the worker logged in as ``user``
    with the configured mechanism and no other, and that its log never shows the
    password."""
    settings = _settings(broker, tmp_path, unique_name, **{"worker.log_level": "debug"})
    log = tmp_path / "worker.log"
    marker = InferenceOutput.model_validate_json(
        critical_marker("secure-chat", "v1", datetime.now(UTC), 0)
    )
    alerts = KafkaConsumer(
        settings.topics.alerts,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
        **broker.kwargs(),
    )
    seen: list[IncidentEvent] = []
    try:
        with worker_process(settings, ["-m", "streams.cli.main", "run"], log):
            # The worker creates the service topics first (admin client, same credentials).
            wait_for(lambda: "created topics" in log.read_text(), 60, "topic creation", log)
            with SentinelPublisher(
                broker.bootstrap, settings.topics, **broker.kwargs()
            ) as publisher:
                publisher.publish_output(marker).get(timeout=30)

            def paged() -> bool:
                seen.extend(_incidents(alerts))
                return any(e.action == IncidentAction.TRIGGER for e in seen)

            wait_for(paged, 90, "the incident on the alerts topic", log)
    finally:
        alerts.close()
    trigger = next(e for e in seen if e.action == IncidentAction.TRIGGER)
    output = log.read_text(errors="replace")
    assert trigger.incident_type.startswith("critical"), trigger.incident_type
    assert trigger.labels.model == "secure-chat"
    assert marker.request_id in trigger.evidence.sample_request_ids
    mechanism = broker.security.sasl_mechanism
    assert f"Authenticated as {user} via {mechanism}" in output  # aiokafka's line
    for other in {"SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"} - {mechanism}:
        assert f"via {other}" not in output
    assert broker.password not in output
    return trigger, marker, output


def test_worker_pages_an_incident_through_the_secured_listener(
    secured_broker: SecuredBroker, tmp_path: Path, unique_name: str
) -> None:
    trigger, marker, output = _page_through_the_worker(secured_broker, tmp_path, unique_name, USER)
    assert len(output.splitlines()) > 50, "the debug log is too short to prove anything"
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

    # 2. The worker command: exits with the reason, instead of retrying as a network fault.
    settings = _settings(secured_broker, tmp_path, unique_name)
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"security": bad})}
    )
    env = child_env(settings)
    began = time.monotonic()
    run = run_captured([sys.executable, "-m", "streams.cli.main", "run"], env, timeout_s=60)
    took = time.monotonic() - began
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "Kafka login refused" in output, output
    assert "invalid credentials" in output, output
    assert wrong not in output
    assert secured_broker.password not in output

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
    print(
        f"checked: a {protocol} client gets nothing from the SASL_SSL listener (refused in "
        f"{time.monotonic() - began:.1f} s)"
    )


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
    env = child_env(settings)
    argv = [sys.executable, "-m", "streams.cli.main", "config"]
    shown = run_captured(argv, env, timeout_s=60, check=True).stdout
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


# ---- the operator commands: alerting, investigation, simulation ------------------------

NOTIFY_SECRET = "secured-notify-secret"


@dataclass(frozen=True)
class Ran:
    """What a finished ``sentinel`` command returned and wrote."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _run_side_by_side(
    settings: Settings,
    commands: dict[str, list[str]],
    out_dir: Path,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 60,
) -> dict[str, Ran]:
    """Run ``sentinel ARGV`` for every named command at once, each in its own process with
    ``settings`` in its environment as a deployment runs it (the password only in
    ``SENTINEL_KAFKA__SECURITY__SASL_PASSWORD``); wait for all. Output goes to files, so a
    verbose command never blocks on a full pipe while another is awaited."""
    env = child_env(settings, extra_env)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {name: (out_dir / f"{name}.out", out_dir / f"{name}.err") for name in commands}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in commands.items():
            out, err = files[name]
            with out.open("wb") as stdout, err.open("wb") as stderr:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "streams.cli.main", *argv],
                    env=env,
                    cwd=REPO,
                    stdout=stdout,
                    stderr=stderr,
                )
        deadline = time.monotonic() + timeout_s
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"sentinel {name} did not finish in {timeout_s:g} s:\n"
                    + files[name][1].read_text(errors="replace")
                ) from None
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return {
        name: Ran(
            proc.returncode,
            files[name][0].read_text(errors="replace"),
            files[name][1].read_text(errors="replace"),
        )
        for name, proc in procs.items()
    }


def test_operator_commands_work_on_the_secured_cluster_through_the_settings(
    secured_broker: SecuredBroker, tmp_path: Path, unique_name: str
) -> None:
    """silence, notify, contain, simulate, then status and incidents: each one a real
    ``sentinel`` process given only the settings, reaching the SASL_SSL listener."""
    settings = _settings(
        secured_broker, tmp_path, unique_name, **{"detection.playbooks_dir": str(PLAYBOOK_DIR)}
    )
    client = secured_broker.kwargs()
    events = three_incidents()
    publish_incidents(secured_broker.bootstrap, settings.topics.alerts, events, **client)
    notify_file = tmp_path / "notify.toml"
    notify_file.write_text(
        "[retry]\nmax_attempts = 3\ninitial_backoff_s = 0.05\nmax_backoff_s = 0.2\n"
        "[http]\ntimeout_s = 5\nuse_env_proxy = false\n",
        encoding="utf-8",
    )
    recorder = Recorder(NOTIFY_SECRET.encode())
    bounded = ["--until-idle", "2", "--max-seconds", "30"]
    out_dir = tmp_path / "commands"
    with serve(recorder) as url:
        # Independent of each other: side by side, to keep the test short. Debug logging
        # where kafka-python would show its configuration (the admin client does).
        ran = _run_side_by_side(
            settings,
            {
                "silence-add": ["silence", "add", "--model", "support-bot", "--duration", "1h",
                                "--comment", "secured-cluster maintenance", "--log-level", "debug"],
                "notify": ["notify", "--sink", "webhook", "--url", url, "--config-file",
                           str(notify_file), "--log-level", "debug", *bounded],
                "contain": ["contain", *bounded],
                "simulate": ["simulate", "--duration", "20m", "--events-per-hour", "300",
                             "--ground-truth", str(tmp_path / "truth.json")],
            },
            out_dir,
            extra_env={"SENTINEL_NOTIFY_WEBHOOK_SECRET": NOTIFY_SECRET},
        )  # fmt: skip
    ran |= _run_side_by_side(
        settings,
        {
            "status": ["status", "--log-level", "debug"],
            "incidents": ["incidents", "--format", "json"],
        },
        out_dir,
    )

    for name, result in ran.items():
        assert result.returncode == 0, f"sentinel {name}:\n{result.output}"
        assert secured_broker.password not in result.output, f"sentinel {name} shows it"
    silence_id = ran["silence-add"].stdout.splitlines()[0]
    assert silence_id.startswith("sil-"), ran["silence-add"].stdout
    delivered = {IncidentEvent.model_validate_json(b).event_id for b in recorder.accepted}
    assert delivered == {e.event_id for e in events}
    assert recorder.bad_signatures == 0
    assert "delivered 3" in ran["notify"].stdout, ran["notify"].stdout
    assert "published 2, would publish 0, no action 1" in ran["contain"].stdout
    status = ran["status"].stdout
    assert "route_to_fallback(support-bot-safe)" in status, status
    for event in events:
        assert event.incident_id in status.split("Open incidents")[1]
    assert "1 in force" in status, status
    assert silence_id in status, status
    listed = {
        IncidentEvent.model_validate_json(line).incident_id
        for line in ran["incidents"].stdout.splitlines()
    }
    assert listed == {e.incident_id for e in events}
    published = int(ran["simulate"].stderr.split(" events published")[0].rsplit(" ", 1)[1])
    recorded = sum(
        len(read_topic_to_end(secured_broker.bootstrap, topic, security=client))
        for topic in (settings.topics.inputs, settings.topics.outputs, settings.topics.feedback,
                      settings.topics.evaluations)
    )  # fmt: skip
    assert published > 0
    assert recorded == published
    debug_lines = sum(ran[name].stderr.count("\n") for name in ("silence-add", "notify", "status"))
    print(
        f"checked: over SASL_SSL with only the settings: silence add ({silence_id}), notify "
        f"(3 incidents to the webhook), contain (2 models), simulate ({published} events), "
        f"status (containment, 3 open incidents, the silence) and incidents (3) all succeed; "
        f"none of their outputs ({debug_lines} debug log lines among them) shows the password"
    )


def test_operator_commands_refuse_a_wrong_password_promptly(
    secured_broker: SecuredBroker, tmp_path: Path, unique_name: str
) -> None:
    """The commands check the login first: a wrong password exits 1 saying why, at once,
    instead of after kafka-python's bootstrap retries (30 s)."""
    wrong = f"wrong-{secrets.token_urlsafe(12)}"
    settings = _settings(secured_broker, tmp_path, unique_name)
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"security": secured_broker.with_password(wrong)}
            )
        }
    )
    began = time.monotonic()
    ran = _run_side_by_side(
        settings,
        {
            "status": ["status"],
            "incidents": ["incidents"],
            "simulate": ["simulate", "--duration", "10m", "--quiet",
                         "--ground-truth", str(tmp_path / "truth.json")],
        },
        tmp_path / "commands",
    )  # fmt: skip
    took = time.monotonic() - began
    for name, result in ran.items():
        assert result.returncode == 1, f"sentinel {name}:\n{result.output}"
        assert "Kafka login refused" in result.stderr, f"sentinel {name}:\n{result.output}"
        assert "invalid credentials" in result.stderr, f"sentinel {name}:\n{result.output}"
        assert wrong not in result.output
    print(
        f"checked: with a wrong password, sentinel {', '.join(ran)} each exit 1 with "
        f"'Kafka login refused ... invalid credentials' ({took:.1f} s for all three)"
    )


def test_with_no_broker_configured_commands_log_in_to_the_secured_local_broker(
    secured_broker: SecuredBroker, tmp_path: Path, unique_name: str
) -> None:
    """``kafka.broker`` empty and ``kafka.security`` left at PLAINTEXT: the alerting
    commands, ``sentinel simulate`` (the README's way to feed a ``make run`` worker) and the
    analysts' history readers (``incidents``, ``replay --from``) fall back to the running
    local broker and, as ``sentinel run`` does, log in to it as
    ``local_broker.security = "sasl_ssl"`` says."""
    host, _, port = secured_broker.bootstrap.rpartition(":")
    settings = _settings(
        secured_broker,
        tmp_path,
        unique_name,
        **{
            "kafka.broker": "",
            "kafka.security": KafkaSecurity(),
            "local_broker.host": host,
            "local_broker.port": int(port),
            "local_broker.data_dir": str(secured_broker.data_dir),
            "local_broker.security": "sasl_ssl",
            "local_broker.sasl_username": USER,
            "local_broker.sasl_password": secured_broker.password,
        },
    )
    ran = _run_side_by_side(
        settings,
        {
            "status": ["status"],
            "simulate": ["simulate", "--duration", "10m", "--events-per-hour", "300",
                         "--ground-truth", str(tmp_path / "truth.json")],
            "incidents": ["incidents"],
            "replay": ["replay", "--from", "now-1h", "--output", str(tmp_path / "r.jsonl")],
        },
        tmp_path / "commands",
    )  # fmt: skip
    for result in ran.values():
        assert result.returncode == 0, result.output
        assert f"using the local broker on {secured_broker.bootstrap}" in result.stderr
        assert secured_broker.password not in result.output
    assert "Open incidents" in ran["status"].stdout
    assert " incidents on " in ran["incidents"].stderr
    assert " records, " in ran["replay"].stderr
    published = int(ran["simulate"].stderr.split(" events published")[0].rsplit(" ", 1)[1])
    recorded = sum(
        len(read_topic_to_end(secured_broker.bootstrap, topic, security=secured_broker.kwargs()))
        for topic in (settings.topics.inputs, settings.topics.outputs, settings.topics.feedback,
                      settings.topics.evaluations)
    )  # fmt: skip
    assert published > 0
    assert recorded == published
    print(
        "checked: with no broker configured, sentinel status, simulate, incidents and replay "
        "--from log in to "
        f"the local SASL_SSL broker with its local_broker credentials and CA ({published} "
        "events published and read back)"
    )


# ---- SCRAM-SHA-256 and client certificates (mutual TLS) ---------------------------------


def _keys_read(bootstrap: str, topic: str, **client: object) -> list[str]:
    """The keys of every record of ``topic``, sorted (kafka-python consumer)."""
    return sorted(record.key.decode() for record in _records(bootstrap, topic, **client))


def _produce_with_kafka_python(
    bootstrap: str, topic: str, keys: list[str], security: KafkaSecurity
) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", **kafka_python_kwargs(security)
    )
    try:
        for key in keys:
            producer.send(topic, key=key.encode(), value=b"{}")
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


async def _aiokafka_round_trip(
    bootstrap: str, topic: str, keys: list[str], security: KafkaSecurity
) -> list[str]:
    """Produce ``keys`` to ``topic`` and read the whole topic back with aiokafka clients
    given the arguments faust's worker gives them (``credentials_to_aiokafka_auth`` of
    ``faust_credentials``); the keys read, sorted."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = dict(credentials_to_aiokafka_auth(faust_credentials(security)))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **auth)
    await producer.start()
    try:
        for key in keys:
            await producer.send_and_wait(topic, b"{}", key=key.encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **auth
    )
    await consumer.start()
    read: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while len(read) < len(keys) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            read += [r.key.decode() for records in batches.values() for r in records if r.key]
    finally:
        await consumer.stop()
    return sorted(read)


def _every_client_logs_in(
    broker: SecuredBroker, security: KafkaSecurity, topic: str, caplog: pytest.LogCaptureFixture
) -> int:
    """``check_login``, kafka-python (``kafka_python_kwargs``) and aiokafka as the faust
    worker configures it (``faust_credentials``) each log in to ``broker`` with
    ``security`` and produce to ``topic``; both read all of it back. The libraries' logs
    (DEBUG) are in ``caplog`` as the service's log handlers write them (through
    ``RedactingFilter``); the password is not. Returns the records sent each way."""
    python_keys = [f"kafka-python-{i}" for i in range(3)]
    aio_keys = [f"aiokafka-{i}" for i in range(3)]
    service_filter = RedactingFilter()
    caplog.handler.addFilter(service_filter)
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="kafka"),
            caplog.at_level(logging.DEBUG, logger="aiokafka"),
        ):
            check_login([broker.bootstrap], security)
            _produce_with_kafka_python(broker.bootstrap, topic, python_keys, security)
            aio_read = asyncio.run(
                _aiokafka_round_trip(broker.bootstrap, topic, aio_keys, security)
            )
            python_read = _keys_read(broker.bootstrap, topic, **kafka_python_kwargs(security))
    finally:
        caplog.handler.removeFilter(service_filter)
    assert python_read == sorted(python_keys + aio_keys)
    assert aio_read == sorted(python_keys + aio_keys)
    assert broker.password not in caplog.text
    return len(aio_keys)


def test_scram_sha_256_logs_in_with_kafka_python_and_the_worker_clients(
    secured_broker: SecuredBroker, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker enables SCRAM-SHA-256 beside SHA-512: ``check_login``, kafka-python
    (``kafka_python_kwargs``) and aiokafka as the faust worker configures it
    (``faust_credentials``) each log in with it, and produce and consume."""
    sha256 = secured_broker.security.model_copy(update={"sasl_mechanism": "SCRAM-SHA-256"})
    sent = _every_client_logs_in(secured_broker, sha256, f"secure-sha256-{unique_name}", caplog)
    # The broker offers both mechanisms (its SaslHandshake response, logged by aiokafka);
    # each library says which one it authenticated with: SHA-256, never SHA-512.
    assert "mechanisms=['SCRAM-SHA-512', 'SCRAM-SHA-256']" in caplog.text
    assert f"Authenticated as {USER} via SASL / SCRAM-SHA-256" in caplog.text  # kafka-python
    assert f"Authenticated as {USER} via SCRAM-SHA-256" in caplog.text  # aiokafka
    assert "via SCRAM-SHA-512" not in caplog.text
    assert "via SASL / SCRAM-SHA-512" not in caplog.text
    # The SHA-256 credential is checked, not merely accepted.
    with pytest.raises(KafkaLoginError, match=r"SCRAM-SHA-256 login .* invalid credentials"):
        check_login(
            [secured_broker.bootstrap],
            sha256.model_copy(update={"sasl_password": SecretStr("not-the-password")}),
        )
    print(
        f"checked: SCRAM-SHA-256 over SASL_SSL: check_login, a kafka-python producer and "
        f"consumer and aiokafka with faust's credentials ({sent} records each way) "
        "all authenticate via SCRAM-SHA-256 (their logs say so); a wrong SHA-256 password "
        "is refused"
    )


def test_client_certificate_required_refuses_a_client_without_one(
    mtls_broker: SecuredBroker, tmp_path: Path, unique_name: str
) -> None:
    """``client_auth = "required"``: the right SCRAM-SHA-256 login is not enough without
    the client certificate (nor with one from another CA); the refusal is prompt and says
    to check ``ssl_certfile``. With the certificate, and the right password, it works."""
    assert mtls_broker.security.ssl_certfile is not None
    assert mtls_broker.security.ssl_keyfile is not None
    assert mtls_broker.security.ssl_keyfile.stat().st_mode & 0o077 == 0
    no_cert = mtls_broker.security.model_copy(update={"ssl_certfile": None, "ssl_keyfile": None})
    # 1. check_login (what the worker and every command run first): named, at once.
    began = time.monotonic()
    with pytest.raises(KafkaLoginError, match=r"ALERT_(BAD_CERTIFICATE|CERTIFICATE_REQUIRED)") as e:
        check_login([mtls_broker.bootstrap], no_cert)
    login_took = time.monotonic() - began
    assert "kafka.security.ssl_certfile" in str(e.value)
    # 2. A certificate signed by another CA is refused the same way.
    other = tmp_path / "other-ca"
    make_certificates(other, "127.0.0.1", client=True)
    foreign = mtls_broker.security.model_copy(
        update={"ssl_certfile": other / "client.pem", "ssl_keyfile": other / "client.key"}
    )
    with pytest.raises(KafkaLoginError, match="ALERT_"):
        check_login([mtls_broker.bootstrap], foreign)
    # 3. kafka-python alone: nothing read, bounded by bootstrap_timeout_ms.
    topic = f"secure-mtls-{unique_name}"
    _produce_with_kafka_python(mtls_broker.bootstrap, topic, ["with-cert"], mtls_broker.security)
    began = time.monotonic()
    with pytest.raises(KafkaError, match="Unable to bootstrap"):
        _keys_read(mtls_broker.bootstrap, topic, **kafka_python_kwargs(no_cert))
    sdk_took = time.monotonic() - began
    # 4. An operator command without the certificate exits 1 and says why.
    settings = _settings(mtls_broker, tmp_path, unique_name, **{"kafka.security": no_cert})
    status = _run_side_by_side(settings, {"status": ["status"]}, tmp_path / "commands")["status"]
    assert status.returncode == 1, status.output
    assert "Kafka login refused" in status.stderr, status.output
    assert "ssl_certfile" in status.stderr, status.output
    # 5. The certificate alone is not enough either: the SCRAM login still counts.
    with pytest.raises(KafkaLoginError, match="invalid credentials"):
        check_login(
            [mtls_broker.bootstrap],
            mtls_broker.security.model_copy(update={"sasl_password": SecretStr("wrong-one")}),
        )
    # Control: with the certificate and the password, the record is there to read.
    check_login([mtls_broker.bootstrap], mtls_broker.security)
    assert _keys_read(mtls_broker.bootstrap, topic, **mtls_broker.kwargs()) == ["with-cert"]
    print(
        f"checked: a listener requiring client certificates refuses a client without one "
        f"(check_login names the TLS alert in {login_took:.2f} s; kafka-python gives up "
        f"after {sdk_took:.1f} s; sentinel status exits 1 naming ssl_certfile) and one with "
        "a certificate from another CA; with its certificate and the SCRAM-SHA-256 "
        "password a client reads the record, with a wrong password it is still refused"
    )


def test_worker_pages_through_client_certificates_and_scram_sha_256(
    mtls_broker: SecuredBroker, tmp_path: Path, unique_name: str
) -> None:
    """``sentinel run`` (faust and aiokafka) and the SDK with ``ssl_certfile``,
    ``ssl_keyfile`` and SCRAM-SHA-256 from the settings, on the broker that requires them."""
    trigger, marker, _ = _page_through_the_worker(mtls_broker, tmp_path, unique_name, MTLS_USER)
    print(
        f"checked: sentinel run with a client certificate and SCRAM-SHA-256 (its log: "
        f"'Authenticated as {MTLS_USER} via SCRAM-SHA-256') paged {trigger.incident_type} "
        f"for the SDK-published request {marker.request_id} on a broker requiring both"
    )


# ---- SASL/PLAIN (API key and secret, as managed Kafka services use it) ------------------


class PlainBroker(LocalBroker):
    """A ``sasl_ssl`` local broker that also enables SASL/PLAIN for its configured user.

    Test-only: PLAIN's built-in server side checks passwords against ``user_<name>``
    entries of its JAAS configuration, so the broker's properties file holds the client
    password in clear text (mode 0600). The project's own secured broker enables SCRAM
    only and never writes the client password; managed services (API key and secret over
    SASL_SSL/PLAIN) are what this stands in for. With PLAIN the password crosses the wire
    as such (inside TLS), and both client libraries dump that request at DEBUG: these
    tests found it in ``sentinel run``'s debug log, which ``RedactingFilter`` now hides.
    """

    def _server_properties(self, secured: SaslSsl | None) -> dict[str, str]:
        props = super()._server_properties(secured)
        assert secured is not None, "a PLAIN broker is a sasl_ssl broker"
        s = self.settings
        assert s.sasl_username is not None
        assert s.sasl_password is not None
        users = f'user_{s.sasl_username}="{s.sasl_password.get_secret_value()}"'
        props["sasl.enabled.mechanisms"] += ",PLAIN"
        props["listener.name.sasl_ssl.plain.sasl.jaas.config"] = (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
        )
        return props


PLAIN_USER = "sentinel-api-key"


@pytest.fixture(scope="module")
def plain_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """A SASL_SSL broker that enables PLAIN beside SCRAM; its ``security`` logs in with
    PLAIN. Stopped and deleted afterwards."""
    data_dir = tmp_path_factory.mktemp("kafka-plain")
    with _running_broker(data_dir, PLAIN_USER, "PLAIN broker", "PLAIN", PlainBroker) as broker:
        yield broker


def test_sasl_plain_logs_in_with_kafka_python_and_the_worker_clients(
    plain_broker: SecuredBroker, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``sasl_mechanism = "PLAIN"`` over SASL_SSL: ``check_login``, kafka-python and aiokafka
    with faust's credentials log in with PLAIN and produce and consume; a wrong password
    is refused promptly, with the broker's reason."""
    security = plain_broker.security
    assert security.sasl_mechanism == "PLAIN"
    sent = _every_client_logs_in(plain_broker, security, f"secure-plain-{unique_name}", caplog)
    assert "'PLAIN'" in caplog.text  # the broker offers it (its SaslHandshake response)
    assert f"Authenticated as {PLAIN_USER} via SASL / Plain" in caplog.text  # kafka-python
    assert f"Authenticated as {PLAIN_USER} via PLAIN" in caplog.text  # aiokafka
    assert "via SCRAM" not in caplog.text
    assert "via SASL / SCRAM" not in caplog.text
    began = time.monotonic()
    with pytest.raises(KafkaLoginError, match=r"refused the PLAIN login of user") as refused:
        check_login(
            [plain_broker.bootstrap],
            security.model_copy(update={"sasl_password": SecretStr("not-the-secret")}),
        )
    took = time.monotonic() - began
    assert "not-the-secret" not in str(refused.value)
    print(
        f"checked: PLAIN over SASL_SSL: check_login, a kafka-python producer and consumer "
        f"and aiokafka with faust's credentials ({sent} records each way) all authenticate "
        f"via PLAIN (their logs say so); a wrong secret is refused in {took:.2f} s: "
        f"{refused.value}"
    )


def test_worker_pages_through_sasl_plain(
    plain_broker: SecuredBroker, tmp_path: Path, unique_name: str
) -> None:
    """``sentinel run`` (faust and aiokafka) and the SDK with ``sasl_mechanism = "PLAIN"``
    from the settings."""
    trigger, marker, _ = _page_through_the_worker(plain_broker, tmp_path, unique_name, PLAIN_USER)
    print(
        f"checked: sentinel run with SASL/PLAIN over TLS (its log: 'Authenticated as "
        f"{PLAIN_USER} via PLAIN') paged {trigger.incident_type} for the SDK-published "
        f"request {marker.request_id}"
    )
