"""bench/throughput.py's scale-out by CPU: a process's CPU time from /proc, the lines that
turn the workers' CPU seconds into events per CPU-second and the speed-up with a core per
worker, and where each worker's profile goes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.throughput import WorkerRun, _cpu_seconds, profile_path, scale_out_lines


def test_cpu_seconds_count_the_processs_own_work() -> None:
    before = _cpu_seconds(os.getpid())
    spin = time.process_time() + 0.3
    while time.process_time() < spin:
        pass
    used = _cpu_seconds(os.getpid()) - before
    # /proc counts in clock ticks (1/100 s here): allow a tick or two either way.
    assert 0.25 <= used <= 1.0


def test_scale_out_is_bounded_by_the_busiest_worker() -> None:
    # One worker: 1,000 events in 10 s on 8 CPU-s. Two: 6 s, 7 + 3 CPU-s (the first owns
    # the busy model's detection).
    one = WorkerRun(10.0, [8.0], [1_000.0], [900.0], [1.0], [0.0], [0.0], [0.0], [0.0], [6.0])
    none = [0.0, 0.0]
    group = WorkerRun(
        6.0, [7.0, 3.0], [500.0, 500.0], [700.0, 200.0], [2.0, 1.0], none, none, none, none, none
    )
    lines = scale_out_lines(1_000, one, group)
    assert lines[0] == (
        "scale-out by CPU: 1 worker 125 events per CPU-second (0.80 cores busy); 2 workers "
        "100 (1.67 cores busy): 0.80 of one worker's work per CPU-second"
    )
    assert lines[1] == "  one worker: 8.0 CPU-s, 1,000 records read, 900 observations detected"
    assert lines[2] == (
        "  worker 0: 7.0 CPU-s, 500 records read, 700 observations detected, 2 rebalances"
    )
    assert lines[4] == (
        "  with a core each, the group would take the busiest worker's 7.0 CPU-s against "
        "one worker's 8.0: 1.14x one worker"
    )


def test_every_worker_of_a_profiled_run_gets_its_own_recording() -> None:
    out = Path("/tmp/spy/worker.txt")
    group = profile_path(out, "group")
    recordings = [profile_path(out, ""), group, profile_path(group, "1")]
    assert recordings == [
        out,
        Path("/tmp/spy/worker-group.txt"),
        Path("/tmp/spy/worker-group-1.txt"),
    ]
    assert profile_path(None, "group") is None
