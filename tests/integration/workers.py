"""Run faust workers as real subprocesses for integration tests.

A worker in its own process is what a user runs; it also keeps faust's event loop and
signal handling out of pytest's process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from streams.contract.events import dump_event
from streams.devtools.broker import LocalBroker, free_port
from streams.settings import LocalBrokerSettings, Settings, child_environ, settings_env

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def worker_process(
    settings: Settings, argv: Sequence[str], log_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``python argv...`` with ``settings`` in its environment; stop it on exit."""
    env = child_env(settings, extra_env)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *argv], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        try:
            yield proc
        finally:
            stop_process(proc)


@contextmanager
def own_broker(settings: Settings, data_dir: Path) -> Iterator[tuple[LocalBroker, Settings]]:
    """A broker of the test's own (not the session's), started on free ports with its data
    in ``data_dir``, and ``settings`` pointing at it; stopped and deleted at the end (a
    test that stops and restarts it under a worker)."""
    broker = LocalBroker(
        LocalBrokerSettings(port=free_port(), controller_port=free_port(), data_dir=data_dir)
    )
    broker.up()
    kafka = settings.kafka.model_copy(update={"broker": broker.url})
    try:
        yield broker, settings.model_copy(update={"kafka": kafka})
    finally:
        broker.destroy()


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM ``proc`` (nothing when it has exited); SIGKILL it after ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def run_captured(
    argv: Sequence[str], env: Mapping[str, str], *, timeout_s: float, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end from this checkout with ``env``, its output captured as text;
    ``check``: a non-zero exit raises."""
    return subprocess.run(
        list(argv),
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=check,
    )


@contextmanager
def process_group(
    argv: Sequence[str], env: Mapping[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in its own session (so its children stop with it), appending its output
    to ``log_path``; stop the whole group on exit (:func:`stop_group`)."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM the process group of ``proc``; SIGKILL it after ``grace_s``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def ingress_topics(bootstrap: str, settings: Settings, partitions: int = 2) -> str:
    """Create the event topics, the dead-letter topic and a ``<inputs>.validated`` topic for
    an ingress worker that forwards what it accepts; returns the validated topic's name."""
    t = settings.topics
    validated = f"{t.inputs}.validated"
    names = [t.inputs, t.outputs, t.feedback, t.evaluations, t.dead_letter, validated]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        admin.close()
    return validated


def child_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``sentinel``/``python -m`` child run with ``settings`` from this
    checkout (PYTHONPATH), plus ``extra``."""
    return child_environ(settings, os.environ) | {"PYTHONPATH": str(REPO)} | (extra or {})


def use_settings_env(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, extra: Mapping[str, str] | None = None
) -> Settings:
    """Put ``settings`` (plus ``extra``) in this process's environment as SENTINEL_*
    variables, as a deployment sets them, for commands run in-process
    (``streams.cli.main.main``); the variables that name other config files are unset.
    Returns ``settings``."""
    for name in ("SENTINEL_CONFIG", "SENTINEL_BROKER", "SENTINEL_NOTIFY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for key, value in (settings_env(settings) | dict(extra or {})).items():
        monkeypatch.setenv(key, value)
    return settings


def with_web(settings: Settings) -> tuple[Settings, str]:
    """``settings`` with the worker's web server on a free loopback port, and its URL."""
    port = free_port()
    worker = settings.worker.model_copy(
        update={"web_enabled": True, "web_port": port, "web_host": "127.0.0.1"}
    )
    return settings.model_copy(update={"worker": worker}), f"http://127.0.0.1:{port}"


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    """Poll ``predicate`` until it is true; fail with the worker log's tail otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; log:\n{tail}")


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET to a worker's web server (5 s bound); 0 and "" when
    nothing answers, the error status and its body for an HTTP error."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


def metric_total(metrics: Mapping[str, object], name: str) -> float:
    """The sum of the ``name`` samples of a parsed ``/metrics`` family (0 when absent)."""
    fam = metrics.get(name)
    if not isinstance(fam, dict):
        return 0.0
    return float(sum(v for n, _, v in fam["samples"] if n == name))


def forward_to_topic(app: Any, topic_name: str, *, partitions: int | None = None) -> Any:
    """A next stage (:data:`streams.runtime.ingress.Handle`) that republishes each valid
    event (canonical JSON, keyed by request id) to ``topic_name``: a 'validated' stream for
    consumers that want clean events."""
    topic = app.topic(
        topic_name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )

    async def _forward(items: Sequence[Any]) -> None:
        for item in items:
            await topic.send(key=item.event.request_id.encode(), value=dump_event(item.event))

    return _forward
