"""A real Prometheus Alertmanager for the ``--sink alertmanager`` tests.

The binary is built from Alertmanager's Go module by ``tests/tools/build_alertmanager.sh``
(cached under ``~/.cache/sentinel/alertmanager/<version>``; CI builds it before the tests,
and a test builds it on first use when Go is installed). It runs on a free loopback port
with a ``null`` receiver, no cluster and a short ``resolve_timeout``.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from streams.devtools.broker import free_port
from tests.integration.workers import REPO, stop_process

VERSION = "v0.35.0"


def alertmanager_binary() -> Path:
    """The cached Alertmanager binary, built now if missing (skips without Go)."""
    cached = Path.home() / ".cache" / "sentinel" / "alertmanager" / VERSION / "alertmanager"
    if cached.exists():
        return cached
    result = subprocess.run(
        ["bash", str(REPO / "tests" / "tools" / "build_alertmanager.sh"), VERSION],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if result.returncode != 0:
        if "Go is needed" in result.stderr:
            pytest.skip("Go is not installed: cannot build Alertmanager")
        raise RuntimeError(f"building Alertmanager failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@contextmanager
def alertmanager(tmp: Path, *, resolve_timeout_s: int) -> Iterator[str]:
    """Run Alertmanager; yields its base URL once ``/-/ready`` answers."""
    binary = alertmanager_binary()
    config = tmp / "alertmanager.yml"
    config.write_text(
        f"global:\n  resolve_timeout: {resolve_timeout_s}s\n"
        "route:\n  receiver: 'null'\n  group_wait: 1s\n  group_interval: 1s\n"
        "receivers:\n  - name: 'null'\n",
        encoding="utf-8",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Alertmanager exited: {(tmp / 'alertmanager.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Alertmanager did not become ready in 60 s")
            time.sleep(0.2)
        yield url
    finally:
        stop_process(proc, grace_s=20)
        log.close()


def active_alerts(url: str) -> list[dict[str, Any]]:
    """``GET /api/v2/alerts``: the alerts Alertmanager holds that have not ended."""
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
        alerts: list[dict[str, Any]] = json.loads(resp.read())
    return alerts
