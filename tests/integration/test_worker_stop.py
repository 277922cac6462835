"""Stopping a worker whose broker is gone: the clean stop waits on the broker, a second
SIGINT exits at once.

The test owns its broker (not the session one): it stops it under a running worker.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from streams.settings import Settings
from tests.integration.workers import own_broker, wait_for, worker_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_a_second_sigint_stops_a_worker_whose_broker_is_gone(
    service_settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with (
        own_broker(service_settings, tmp_path / "kafka") as (broker, settings),
        worker_process(settings, ["-m", "streams.cli.main", "run"], log) as worker,
    ):

        def text() -> str:
            return log.read_text(errors="replace")

        wait_for(lambda: "Worker ready" in text(), 180, "the worker to start", log)
        broker.down()
        worker.send_signal(signal.SIGINT)
        wait_for(lambda: "SIGINT: stopping" in text(), 30, "the first SIGINT's line", log)
        time.sleep(2.0)
        # The clean stop waits on the broker that is gone (its requests time out).
        assert worker.poll() is None, text()[-2000:]
        worker.send_signal(signal.SIGINT)
        try:
            code = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the second SIGINT did not stop the worker:\n{text()[-2000:]}")
        assert code == 128 + signal.SIGINT.value, text()[-2000:]
        assert "second SIGINT while stopping: exiting now" in text()
