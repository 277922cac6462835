"""The deployment files agree with the code, checked without a Docker engine.

``docker-compose.yml`` and the ``Dockerfile`` cannot be run on the CI machines (no Docker
daemon), so what can go stale in them is checked here: the broker image runs the Kafka
version the project tests against, in KRaft mode; every service runs a real ``sentinel``
command; and every ``SENTINEL_*`` variable they set is accepted by the strict settings
loader (a renamed key would otherwise stop a deployment at start-up).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli.main import build_parser
from streams.settings import LocalBrokerSettings, load_settings

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _dockerfile_env() -> dict[str, str]:
    """The ``ENV`` variables of the Dockerfile (``KEY=value`` pairs, line continuations)."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _resolved(value: object) -> str:
    """A compose value with ``${VAR:-default}`` replaced by its default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def test_broker_is_the_official_image_at_the_tested_version_in_kraft_mode(
    compose: dict[str, Any],
) -> None:
    kafka = compose["services"]["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert tag == LocalBrokerSettings().kafka_version
    env = kafka["environment"]
    assert set(str(env["KAFKA_PROCESS_ROLES"]).split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in str(env["KAFKA_CONTROLLER_LISTENER_NAMES"])
    assert "healthcheck" in kafka


@pytest.mark.parametrize("service", ["worker", "notify", "contain", "console"])
def test_each_service_runs_a_sentinel_command_with_settings_it_accepts(
    compose: dict[str, Any], service: str
) -> None:
    spec = compose["services"][service]
    assert spec["build"] == "."
    assert spec["depends_on"]["kafka"]["condition"] == "service_healthy"
    args = build_parser().parse_args(spec["command"])  # exits (fails) on a bad command
    assert args.command == spec["command"][0]
    env = _dockerfile_env() | {k: _resolved(v) for k, v in spec["environment"].items()}
    assert all(k.startswith("SENTINEL_") for k in env), env
    settings = load_settings(env=env)
    assert settings.kafka.broker == "kafka://kafka:29092"
    assert settings.worker.web_host == "0.0.0.0"  # metrics reachable from outside
    assert str(settings.worker.data_dir).startswith("/data")  # on the volume
    advertised = str(compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    assert "kafka:29092" in advertised  # the address the services use is advertised


def test_the_worker_port_is_the_configured_web_port(compose: dict[str, Any]) -> None:
    settings = load_settings(env=_dockerfile_env())
    assert str(settings.worker.web_port) in [str(p) for p in compose["services"]["worker"]["ports"]]


def test_the_console_listens_on_its_published_port_and_pages_link_to_it(
    compose: dict[str, Any],
) -> None:
    spec = compose["services"]["console"]
    env = _dockerfile_env() | {k: _resolved(v) for k, v in spec["environment"].items()}
    settings = load_settings(env=env)
    assert settings.console.host == "0.0.0.0"
    assert f"{settings.console.port}:{settings.console.port}" in spec["ports"]
    notify = compose["services"]["notify"]["environment"]
    assert _resolved(notify["SENTINEL_CONSOLE__PUBLIC_URL"]) == settings.console.public_url
