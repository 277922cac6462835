"""The CLI's error paths: clear messages and exit codes, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli.main import main
from streams.devtools import kafka_dist
from streams.devtools.broker import LocalBroker, free_port
from streams.devtools.errors import BrokerError
from streams.devtools.kafka_dist import java_major_version
from streams.settings import LocalBrokerSettings


def test_config_command_prints_validated_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    assert '"alerts": "sentinel.alerts"' in capsys.readouterr().out


def test_bad_config_exits_2_and_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[worker]\nstor = 'memory://'\n")
    assert main(["--config", str(cfg), "config"]) == 2
    assert "worker.stor: unknown key" in capsys.readouterr().err


def test_status_of_a_stopped_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["kafka", "status", "--data-dir", str(tmp_path), "--port", str(free_port())])
    assert code == 3
    assert "stopped" in capsys.readouterr().out


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = LocalBrokerSettings(
        port=free_port(), controller_port=free_port(), data_dir=tmp_path / "k"
    )
    with pytest.raises(BrokerError, match=r"Java 17\+ is needed"):
        LocalBroker(settings).up()


def test_missing_maven_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"Maven \('mvn'\) is needed"):
        kafka_dist.fetch_kafka("4.1.1", tmp_path / "cache")


def test_java_version_parsing(tmp_path: Path) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(0o755)
    assert java_major_version(str(fake)) == 11
    fake.write_text("#!/bin/sh\necho 'java version \"1.8.0_292\"' >&2\n")
    assert java_major_version(str(fake)) == 8


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        settings = LocalBrokerSettings(
            port=port, controller_port=free_port(), data_dir=tmp_path / "k"
        )
        with pytest.raises(BrokerError, match="already in use"):
            LocalBroker(settings).up()
