"""Threshold solves when run lengths follow the daily traffic cycle, with and without the
solved ARLs kept per chain (:func:`detectors.arl._chain_arls`), in the same run.

    .venv/bin/python -m bench.retarget [--keys 40] [--days 3]

A key's per-test run length is its traffic times a fixed time budget, on the 2^(1/4) grid
with two steps of hysteresis (:mod:`streams.pipeline.budget`). Over a day whose traffic
moves 3x between night and day, every detector of the key is retargeted a few times, to
targets it has mostly met before. Two workloads:

* score charts (:class:`detectors.confidence.ConfidenceShift`, the same for groundedness,
  judges, latency and tokens): each key's chart is calibrated on its own reference
  scores, then retargeted through the days (its chain is its own increment distribution);
* Bernoulli rate CUSUMs: one threshold per (learned rate on the rate grid, run length)
  as young keys of different traffic meet them (the threshold table caches exact repeats;
  the kept ARLs serve the other targets of the same lattice).

Printed: solves (linear systems), CPU seconds, and the ratio without/with, per workload.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from detectors import arl
from detectors.arl import bernoulli_lattice, bernoulli_threshold, calibration_rate
from detectors.confidence import ConfidenceShift
from streams.pipeline import budget

HOURS = 24
CYCLE = 3.0
"""Traffic ratio between the busiest and the quietest hour."""


def daily_targets(base_arl0: float, days: int) -> list[float]:
    """The run lengths one key takes through ``days`` of its traffic cycle (on the grid,
    with hysteresis), hour by hour."""
    out: list[float] = []
    current = 0.0
    for hour in range(days * HOURS):
        traffic = math.sqrt(CYCLE) ** math.sin(2 * math.pi * hour / HOURS)
        target = budget.on_grid(base_arl0 * traffic)
        if current <= 0 or budget.moved(current, target):
            current = target
        out.append(current)
    return out


def _counting() -> tuple[list[int], Callable[[], None]]:
    """Count the linear solves of :mod:`detectors.arl` (both chain kinds)."""
    count = [0]
    banded, lattice = arl._banded_arl, arl.lattice_arl

    def banded_counted(up: int, down: int, h: int, p: float) -> float:
        count[0] += 1
        return banded(up, down, h, p)

    def lattice_counted(pmf: NDArray[np.float64], offset: int, h: int) -> float:
        count[0] += 1
        return lattice(pmf, offset, h)

    arl._banded_arl = banded_counted
    arl.lattice_arl = lattice_counted

    def restore() -> None:
        arl._banded_arl, arl.lattice_arl = banded, lattice

    return count, restore


def score_charts(keys: int, days: int) -> None:
    """Calibrate each key's chart, then retarget it through its days."""
    rng = np.random.default_rng(3)
    for _ in range(keys):
        base = 10 ** rng.uniform(5, 8)
        det = ConfidenceShift(arl0=base / 3, reference_size=1000)
        for x in rng.beta(12.0, 3.0, 1000):
            det.update(float(x))
        for target in daily_targets(base, days):
            budget.retarget(det, target / 3)  # a solve only when the target moved


def bernoulli(keys: int, days: int) -> None:
    """Thresholds of the rate CUSUMs of ``keys`` young keys (rates 0.5-5 %, doubling)."""
    rng = np.random.default_rng(4)
    for _ in range(keys):
        p0 = float(rng.uniform(0.005, 0.05))
        rate = calibration_rate(p0 * 1.1, p0, 2 * p0)
        if bernoulli_lattice(p0, 2 * p0).down == 1:
            continue  # down == 1 lattices have their own kept sequence
        base = 10 ** rng.uniform(5, 8)
        for target in daily_targets(base, days):
            bernoulli_threshold(p0, 2 * p0, target, rate)


def run(work: Callable[[int, int], None], keys: int, days: int, keep: bool) -> tuple[int, float]:
    """Solves and CPU seconds of ``work``, keeping the solved ARLs per chain or not."""
    arl.clear_thresholds()
    saved = arl.MAX_CHAINS
    arl.MAX_CHAINS = saved if keep else 0
    count, restore = _counting()
    cpu = time.process_time()
    try:
        work(keys, days)
    finally:
        restore()
        arl.MAX_CHAINS = saved
    return count[0], time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=40, help="keys (detectors) per workload")
    parser.add_argument("--days", type=int, default=3, help="days of traffic cycle")
    args = parser.parse_args(argv)
    print(f"{args.keys} keys, {args.days} days of a {CYCLE:g}x daily traffic cycle")
    print(f"{'workload':<22} {'kept ARLs':>9} {'solves':>8} {'CPU [s]':>9} {'ratio':>7}")
    for name, work in (("score charts", score_charts), ("bernoulli rates", bernoulli)):
        without = run(work, args.keys, args.days, keep=False)
        with_ = run(work, args.keys, args.days, keep=True)
        for label, (solves, cpu) in (("no", without), ("yes", with_)):
            print(f"{name:<22} {label:>9} {solves:>8} {cpu:>9.2f}")
        ratio = without[1] / with_[1] if with_[1] > 0 else math.inf
        print(f"{name:<22} {'':>9} {without[0] / max(with_[0], 1):>7.1f}x {'':>8} {ratio:>6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
