"""bench/throughput.py's scale-out by CPU: a process's CPU time from /proc, and the line
that turns CPU seconds into events per CPU-second and the speed-up with a core each."""

from __future__ import annotations

import os
import time

from bench.throughput import _cpu_seconds, scale_out_line


def test_cpu_seconds_count_the_processs_own_work() -> None:
    before = _cpu_seconds(os.getpid())
    spin = time.process_time() + 0.3
    while time.process_time() < spin:
        pass
    used = _cpu_seconds(os.getpid()) - before
    # /proc counts in clock ticks (1/100 s here): allow a tick or two either way.
    assert 0.25 <= used <= 1.0


def test_scale_out_line_projects_a_core_per_worker() -> None:
    # One worker: 1,000 events in 10 s on 8 CPU-s; two: 6 s on 10 CPU-s (125 vs 100 per CPU-s).
    line = scale_out_line(1_000, 2, (10.0, 8.0), (6.0, 10.0))
    assert "1 worker 125 events per CPU-second (0.80 cores busy)" in line
    assert "2 workers 100 (1.67 cores busy)" in line
    assert "0.80 of one worker's work per CPU-second, 1.60x one worker with a core each" in line
