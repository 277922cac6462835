"""Run faust workers as real subprocesses for integration tests.

A worker in its own process is what a user runs; it also keeps faust's event loop and
signal handling out of pytest's process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from streams.settings import Settings, settings_env

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def worker_process(
    settings: Settings, argv: Sequence[str], log_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``python argv...`` with ``settings`` in its environment; stop it on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update(settings_env(settings))
    env.update(extra_env or {})
    env["PYTHONPATH"] = str(REPO)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *argv], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    """Poll ``predicate`` until it is true; fail with the worker log's tail otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; log:\n{tail}")
