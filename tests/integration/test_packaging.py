"""How users install Sentinel, tried in fresh virtual environments.

- The service installed *non-editable* (as the Dockerfile does) finds its shipped config,
  alerting policy and playbooks from any working directory.
- The producer SDK installs with its own dependencies only (pydantic, kafka-python) and
  publishes to the real broker; ``sentinel`` there says how to install the service.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.contract.events import parse_event
from tests.conftest import KafkaBroker

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _clean_env() -> dict[str, str]:
    """The environment without Sentinel's variables or the outer virtual environment."""
    drop = ("SENTINEL_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(900)
def test_non_editable_install_finds_the_shipped_config_from_any_directory(tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv")
    # The service's dependencies come from this test's environment (a .pth to its
    # site-packages; its editable hook for the repository is not loaded that way), the
    # package itself is built and installed as a wheel, as `pip install .` does.
    purelib = Path(sysconfig.get_paths()["purelib"])
    new_site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    (new_site / "outer-deps.pth").write_text(f"{purelib}\n{site.getusersitepackages()}\n")
    built = _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(REPO)],
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(python), "-c", "import streams, sys; print(streams.__file__)"], cwd=elsewhere)
    assert str(tmp_path / "venv") in where.stdout, "the test must import the installed copy"

    shown = _run([str(tmp_path / "venv" / "bin" / "sentinel"), "config"], cwd=elsewhere)
    assert shown.returncode == 0, shown.stderr
    detection = json.loads(shown.stdout)["detection"]
    share = tmp_path / "venv" / "share" / "sentinel" / "config"
    assert Path(detection["alerting_policy"]) == share / "alerting.toml"
    assert Path(detection["playbooks_dir"]) == share / "playbooks"
    assert (share / "alerting.toml").is_file()
    assert sorted(p.name for p in (share / "playbooks").glob("*.toml")) == sorted(
        p.name for p in (REPO / "config" / "playbooks").glob("*.toml")
    )


@pytest.mark.timeout(900)
def test_the_sdk_installs_and_publishes_without_the_service_dependencies(
    tmp_path: Path, kafka_broker: KafkaBroker, unique_name: str
) -> None:
    python = _venv(tmp_path / "venv")
    installed = _run(
        [str(python), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"), str(REPO)],
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    topic = f"sdk-only-{unique_name}"
    script = textwrap.dedent(
        f"""
        import importlib.util
        from datetime import UTC, datetime

        from streams.contract.events import EventTopics, InferenceOutput
        from streams.sdk import SentinelPublisher

        missing = [m for m in ("faust", "numpy", "scipy", "pydantic_settings", "aiokafka")
                   if importlib.util.find_spec(m) is None]
        print("missing", ",".join(missing))
        topics = EventTopics(outputs={topic!r})
        with SentinelPublisher({kafka_broker.bootstrap!r}, topics=topics) as publisher:
            publisher.publish_output(
                InferenceOutput(
                    request_id="sdk-only-1",
                    timestamp=datetime.now(UTC),
                    model="m",
                    model_version="v1",
                    confidence=0.9,
                )
            ).get(timeout=30)
        print("published")
        """
    )
    ran = _run([str(python), "-c", script], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "missing faust,numpy,scipy,pydantic_settings,aiokafka" in ran.stdout
    assert "published" in ran.stdout

    cli = _run([str(tmp_path / "venv" / "bin" / "sentinel"), "config"], cwd=tmp_path)
    assert cli.returncode == 1
    assert "sentinel-ai-incidents[service]" in cli.stderr

    assert _read_request_ids(kafka_broker.bootstrap, topic, want=1) == ["sdk-only-1"]


def _read_request_ids(bootstrap: str, topic: str, want: int) -> list[str]:
    """Request ids on ``topic`` from the beginning, once ``want`` have arrived (60 s at most)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        seen: list[str] = []
        for _ in range(60):
            for batch in consumer.poll(timeout_ms=1000).values():
                seen += [parse_event(r.value).request_id for r in batch]
            if len(seen) >= want:
                break
        return seen
    finally:
        consumer.close()
