"""The worker's background threshold solves (streams.runtime.solves), with a real child
process: answers equal the solves made in place, a failed solve keeps its bound, and
closing solves in place again."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from detectors.arl import (
    SolveRequest,
    bernoulli_threshold,
    bernoulli_threshold_now,
    clear_thresholds,
    deferring,
    lattice_threshold,
    lattice_threshold_now,
    solved,
)
from streams.runtime.solves import BackgroundSolves

REPO = Path(__file__).resolve().parents[3]
PATIENCE_S = 300.0
"""How long to wait for the child (it imports numpy and scipy first): a bound on a hung
child, not a measurement."""


@pytest.fixture
def solves() -> Iterator[BackgroundSolves]:
    clear_thresholds()
    background = BackgroundSolves()
    background.install()
    try:
        yield background
    finally:
        background.close()
        clear_thresholds()


def _collected(solves: BackgroundSolves, want: int) -> None:
    deadline = time.monotonic() + PATIENCE_S
    got = 0
    while got < want and time.monotonic() < deadline:
        got += solves.collect()
        time.sleep(0.02)
    assert got == want


def test_the_child_answers_what_the_loop_would_have_solved(solves: BackgroundSolves) -> None:
    pmf = np.array([0.15, 0.3, 0.2, 0.2, 0.15])
    rate_bound, rate = bernoulli_threshold_now(0.004, 0.008, 1e5, 0.0041)
    chart_bound, chart = lattice_threshold_now(pmf, -2, 1e4, 3)
    assert rate is not None
    assert chart is not None
    assert (solves.sent, solves.in_flight) == (2, 2)
    _collected(solves, 2)
    assert (solves.answered, solves.failed, solves.in_flight) == (2, 0, 0)
    assert solves.wait.count() == 2  # each answer's wait, for the metrics
    rate_h, chart_h = solved(rate), solved(chart)
    solves.close()
    clear_thresholds()
    assert rate_h == bernoulli_threshold(0.004, 0.008, 1e5, 0.0041) < rate_bound
    assert chart_h == lattice_threshold(pmf, -2, 1e4, 3) < chart_bound


def test_a_failed_solve_keeps_its_bound(solves: BackgroundSolves) -> None:
    # Increments that never drift down: the child's solve raises.
    request = SolveRequest(("lattice", 0, np.array([0.5, 0.5]).tobytes(), 1e3), bound=7)
    solves.submit(request)
    _collected(solves, 1)
    assert (solves.answered, solves.failed) == (0, 1)
    assert solved(request) == 7


def test_closed_it_solves_in_place_again(solves: BackgroundSolves) -> None:
    solves.close()
    h, request = bernoulli_threshold_now(0.05, 0.1, 1e4)
    assert request is None
    assert solves.sent == 0
    assert h == bernoulli_threshold(0.05, 0.1, 1e4)


def test_a_request_nobody_waits_for_is_not_solved(solves: BackgroundSolves) -> None:
    """A request every detector has replaced (here: nobody kept it) before it was sent is
    dropped unsolved; the ones still held are answered."""
    held = [bernoulli_threshold_now(0.004, 0.008, 1e5, rate)[1] for rate in (0.0041, 0.0042)]
    bernoulli_threshold_now(0.004, 0.008, 1e5, 0.0043)  # its request is dropped at once
    _collected(solves, 2)
    assert (solves.sent, solves.answered, solves.superseded, solves.in_flight) == (3, 2, 1, 0)
    assert all(request is not None and solved(request) is not None for request in held)
    assert bernoulli_threshold_now(0.004, 0.008, 1e5, 0.0043)[1] is not None  # not solved


def test_it_sends_at_most_send_ahead_unanswered() -> None:
    clear_thresholds()
    solves = BackgroundSolves(send_ahead=2)
    solves.install()
    try:
        held = [bernoulli_threshold_now(0.004, 0.008, 1e5, 0.0041 + i * 1e-4) for i in range(5)]
        solves.collect()  # nothing has been answered yet: two go out
        assert (solves.unsent, solves.in_flight) == (3, 5)
        _collected(solves, 5)
        assert (solves.unsent, solves.answered, solves.in_flight) == (0, 5, 0)
        assert all(
            request is not None
            and solved(request) == bernoulli_threshold(0.004, 0.008, 1e5, request.key[4])
            for _, request in held
        )
    finally:
        solves.close()
        clear_thresholds()


def test_a_child_that_died_hands_the_solves_back(solves: BackgroundSolves) -> None:
    first = bernoulli_threshold_now(0.05, 0.1, 1e4)  # starts the child
    _collected(solves, 1)
    assert first[1] is not None
    for child in multiprocessing.active_children():
        child.kill()
    bound, request = bernoulli_threshold_now(0.004, 0.008, 1e5, 0.0041)
    deadline = time.monotonic() + PATIENCE_S
    while deferring() and time.monotonic() < deadline:
        solves.collect()  # the request fails with the child, or could not be sent
        time.sleep(0.02)
    assert not deferring()  # solves went back to the caller
    assert request is not None
    # Its detector's next look solves it in place.
    assert solved(request) == bernoulli_threshold(0.004, 0.008, 1e5, 0.0041) < bound


def test_the_child_stops_when_the_worker_is_killed(tmp_path: Path) -> None:
    """A worker killed with SIGKILL cannot stop its child: the child sees its parent gone
    and exits (no orphan left solving or waiting)."""
    script = tmp_path / "worker.py"
    # Answers left unread fill the pipe (over 64 KiB: the first SEND_AHEAD of 300
    # mean-chart lattices of 100 steps), which must not hold the child's exit.
    script.write_text(
        "import time\n"
        "import numpy as np\n"
        "from detectors.arl import lattice_threshold_now\n"
        "from streams.runtime.solves import BackgroundSolves\n"
        "if __name__ == '__main__':\n"
        "    solves = BackgroundSolves()\n"
        "    solves.install()\n"
        "    pmf = np.full(100, 1.0 / 100)\n"
        "    held = [lattice_threshold_now(pmf, -52, 1e3 + i, 5) for i in range(300)]\n"
        "    solves.collect()\n"
        "    time.sleep(5)\n"
        "    print(solves._child.process.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, cwd=REPO, env=_env()
    )
    assert worker.stdout is not None
    child = int(worker.stdout.readline())
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + PATIENCE_S
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not: it has exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}
