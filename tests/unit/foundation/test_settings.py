"""Settings: file + environment, unknown keys named in the error, round trip via env."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerting.policy import ConfigError
from streams.settings import load_settings, settings_env


def test_default_file_loads_and_leaves_broker_empty() -> None:
    settings = load_settings(env={})
    assert settings.kafka.broker == ""
    assert settings.topics.alerts == "sentinel.alerts"
    assert settings.local_broker.kafka_version >= "4.0.1"


def test_environment_overrides_file_including_short_broker_form() -> None:
    settings = load_settings(
        env={"SENTINEL_BROKER": "kafka://h1:9092;h2:9092", "SENTINEL_WORKER__WEB_PORT": "7001"}
    )
    assert settings.kafka.bootstrap_servers == ["h1:9092", "h2:9092"]
    assert settings.worker.web_port == 7001


def test_an_override_wins_over_the_environment() -> None:
    """``sentinel simulate --broker`` is an override: it beats SENTINEL_BROKER."""
    env = {"SENTINEL_BROKER": "kafka://env:1", "SENTINEL_WORKER__WEB_PORT": "7001"}
    settings = load_settings(env=env, overrides={"kafka.broker": "kafka://cli:2"})
    assert settings.kafka.broker == "kafka://cli:2"
    assert settings.worker.web_port == 7001


def test_long_form_wins_over_short_form() -> None:
    env = {"SENTINEL_BROKER": "kafka://short:1", "SENTINEL_KAFKA__BROKER": "kafka://long:2"}
    assert load_settings(env=env).kafka.broker == "kafka://long:2"


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[kafka]\nbrokr = 'kafka://x:1'\n", "kafka.brokr: unknown key"),
        ("[kafak]\nbroker = 'kafka://x:1'\n", "kafak: unknown key"),
        ("[worker]\nweb_port = 'abc'\n", "worker.web_port"),
        ("[kafka]\nbroker = 'x:1'\n", "kafka://host:port"),
        ("[kafka]\nbroker = 'kafka://h:abc'\n", "is not host:port with a port 1-65535"),
        ("[kafka]\nbroker = 'kafka://h:99999'\n", "is not host:port with a port 1-65535"),
        ("[kafka]\nbroker = 'kafka://'\n", "is not host:port"),
        ("[topics]\nalerts = 'bad topic!'\n", "topics.alerts: String should match"),
        ("[topics]\ninputs = 'sentinel.outputs'\n", "one topic for two purposes"),
        ("[local_broker]\nkafka_version = '4.0.0'\n", ">= 4.0.1"),
        ("[detection]\nsegment_labels = ['tenant', 'version']\n", "'version' names a key level"),
        ("[detection]\nsegment_labels = ['model']\n", "'model' names a key level"),
        ("[detection]\nsegment_labels = ['tenant', 'tenant']\n", "listed twice"),
    ],
)
def test_bad_config_is_an_error_that_names_the_key(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_environment_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"worker\.web_prot: unknown key"):
        load_settings(env={"SENTINEL_WORKER__WEB_PROT": "1"})


def test_unknown_environment_section_is_rejected() -> None:
    """pydantic-settings alone would skip a variable whose section matches no field."""
    with pytest.raises(ConfigError, match=r"SENTINEL_WORKR__DATA_DIR: unknown section 'workr'"):
        load_settings(env={"SENTINEL_WORKR__DATA_DIR": "/data"})
    # Variables of other readers (no section) are theirs: the notify secrets, for one.
    assert load_settings(env={"SENTINEL_NOTIFY_WEBHOOK_SECRET": "s"}) == load_settings(env={})


def test_invalid_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "x.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, env={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.toml", env={})


def test_settings_round_trip_through_environment() -> None:
    settings = load_settings(env={}, overrides={"kafka.broker": "kafka://a:1"})
    assert load_settings(env=settings_env(settings)) == settings


def test_settings_are_frozen() -> None:
    settings = load_settings(env={})
    with pytest.raises(ValueError, match="frozen"):
        settings.kafka.topic_partitions = 9  # type: ignore[misc]
