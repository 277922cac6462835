"""Notify file, sink secrets and the stop logic of bounded runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from alerting.policy import ConfigError
from alerting.sink_config import PagerDutySinkConfig, SlackSinkConfig, WebhookSinkConfig
from streams.cli.common import Stopper, StopRequestedError
from streams.cli.notify_config import (
    DEFAULT_NOTIFY_CONFIG,
    NotifyFile,
    load_notify_file,
    sink_config,
)


def _cfg(**sections: object) -> NotifyFile:
    return NotifyFile.model_validate(sections)


def test_shipped_notify_file_is_valid() -> None:
    cfg, source = load_notify_file(DEFAULT_NOTIFY_CONFIG, {})
    assert source == str(DEFAULT_NOTIFY_CONFIG)
    assert cfg.retry.max_attempts == 8


def test_unknown_keys_are_errors_that_never_echo_values(tmp_path: Path) -> None:
    p = tmp_path / "n.toml"
    p.write_text('[pagerduty]\nrouting_key = "R0UTINGKEY"\nurl = 5\n')
    with pytest.raises(ConfigError) as exc:
        load_notify_file(p, {})
    assert "pagerduty.url" in str(exc.value)
    assert "R0UTINGKEY" not in str(exc.value)
    with pytest.raises(ConfigError, match="not found"):
        load_notify_file(tmp_path / "missing.toml", {})
    with pytest.raises(ConfigError, match="not found"):
        load_notify_file(None, {"SENTINEL_NOTIFY_CONFIG": str(tmp_path / "missing.toml")})


def test_environment_secret_wins_over_file() -> None:
    cfg = _cfg(webhook={"url": "http://127.0.0.1:1/h", "secret": "from-file"})
    got = sink_config("webhook", cfg, url=None, environ={}, source="f")
    assert isinstance(got, WebhookSinkConfig)
    assert got.secret.get_secret_value() == "from-file"
    env = {"SENTINEL_NOTIFY_WEBHOOK_SECRET": "from-env"}
    got = sink_config("webhook", cfg, url="http://127.0.0.1:2/", environ=env, source="f")
    assert isinstance(got, WebhookSinkConfig)
    assert got.secret.get_secret_value() == "from-env"
    assert got.url == "http://127.0.0.1:2/"
    assert "from-env" not in repr(got)


@pytest.mark.parametrize(
    ("sink", "url", "env", "message"),
    [
        ("webhook", None, {"SENTINEL_NOTIFY_WEBHOOK_SECRET": "s"}, "needs a URL"),
        ("webhook", "http://127.0.0.1:1/", {}, "SENTINEL_NOTIFY_WEBHOOK_SECRET"),
        ("webhook", "file:///etc/passwd", {"SENTINEL_NOTIFY_WEBHOOK_SECRET": "s"}, "http"),
        ("pagerduty", None, {}, "SENTINEL_NOTIFY_PAGERDUTY_ROUTING_KEY"),
        ("alertmanager", None, {}, "needs a URL"),
        ("slack", None, {}, "SENTINEL_NOTIFY_SLACK_WEBHOOK_URL"),
        ("slack", "https://hooks.example/x", {}, "not taken from the command line"),
        ("slack", None, {"SENTINEL_NOTIFY_SLACK_WEBHOOK_URL": "ftp://SECRET/x"}, "hidden"),
    ],
)
def test_sink_config_errors(sink: str, url: str | None, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        sink_config(sink, NotifyFile(), url=url, environ=env, source="f")
    assert "SECRET" not in str(exc.value).replace("SENTINEL_NOTIFY_WEBHOOK_SECRET", "")


def test_pagerduty_and_slack_configs() -> None:
    env = {
        "SENTINEL_NOTIFY_PAGERDUTY_ROUTING_KEY": "rk",
        "SENTINEL_NOTIFY_SLACK_WEBHOOK_URL": "https://hooks.example/T/B/x",
    }
    pd = sink_config("pagerduty", NotifyFile(), url=None, environ=env, source="f")
    assert isinstance(pd, PagerDutySinkConfig)
    assert pd.url == "https://events.pagerduty.com/v2/enqueue"
    assert pd.routing_key == SecretStr("rk")
    sl = sink_config("slack", NotifyFile(), url=None, environ=env, source="f")
    assert isinstance(sl, SlackSinkConfig)


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_stopper_idle_counts_from_end_of_last_batch() -> None:
    clock = FakeTime()
    s = Stopper(max_seconds=None, until_idle=5, monotonic=clock)
    clock.t += 4
    assert not s.should_stop()
    s.on_poll(3)
    clock.t += 10  # processing the batch took 10 s
    assert not s.should_stop()  # the batch just ended: idle starts now
    s.on_poll(0)
    clock.t += 4.9
    assert not s.should_stop()
    clock.t += 0.2
    assert s.should_stop()
    assert s.reason == "no new record for 5 s (--until-idle)"


def test_stopper_idle_waits_for_the_consumer_to_get_partitions() -> None:
    clock = FakeTime()
    s = Stopper(max_seconds=None, until_idle=5, monotonic=clock)
    for _ in range(4):  # a slow group join: 20 s without partitions is not idleness
        s.on_poll(0, ready=False)
        clock.t += 5
        assert not s.should_stop()
    s.on_poll(0, ready=True)
    clock.t += 4.9
    assert not s.should_stop()
    clock.t += 0.2
    assert s.should_stop()


def test_stopper_max_seconds_and_signals() -> None:
    clock = FakeTime()
    s = Stopper(max_seconds=30, until_idle=None, monotonic=clock)
    clock.t += 29
    assert not s.should_stop()
    clock.t += 1
    assert s.should_stop()
    assert s.reason == "--max-seconds 30 reached"
    s2 = Stopper(max_seconds=None, until_idle=None, monotonic=clock)
    s2.request("SIGTERM received")
    assert s2.should_stop()
    with pytest.raises(StopRequestedError):
        s2.sleep(60)  # returns at once: the run is ending


def test_stopper_sleep_without_stop_just_waits() -> None:
    s = Stopper(max_seconds=None, until_idle=None)
    s.sleep(0.01)
    assert s.reason is None
