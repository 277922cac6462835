"""Detection delay and calibration cost of the score charts' grid (``ConfidenceShift``'s
``resolution``), paired seeds: the same reference and the same shifted stream for every
grid, so the difference is the grid's.

Scores are Beta(8, 2) (a confident classifier); each trial learns a 1,000-score reference,
sees 200 more clean scores (an alarm there counts as early), then scores shifted down by
``drop`` reference standard deviations until the mean-down CUSUM alarms.

    .venv/bin/python -m bench.score_grid            # ~1 minute on one core
    .venv/bin/python -m bench.score_grid --trials 200
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import numpy as np

from detectors.base import Direction
from detectors.confidence import ConfidenceShift

SHIFT = 0.5
"""The charts' design shift (reference standard deviations): the pipeline's default."""
GRIDS = (10, 6, 4)
"""Grid steps per design shift: ``resolution = SHIFT / g`` (4 is the default)."""
DROPS = (0.25, 0.5, 1.0)
MAX_EVENTS = 20_000


def _trial(steps: int, drop: float, seed: int, arl0: float) -> tuple[int | None, float]:
    """(delay in events after the change, or None for an early alarm; seconds calibrating)."""
    rng = np.random.default_rng(seed)
    chart = ConfidenceShift(arl0=arl0, shift=SHIFT, resolution=SHIFT / steps)
    ref = rng.beta(8, 2, size=chart.reference_size)
    began = time.perf_counter()
    for x in ref:
        chart.update(float(x))
    calibration = time.perf_counter() - began
    sd = float(ref.std())
    for x in rng.beta(8, 2, size=200):
        if chart.update(float(x)) is not None:
            return None, calibration
    for i in range(MAX_EVENTS):
        signal = chart.update(float(rng.beta(8, 2)) - drop * sd)
        mean_down = signal is not None and signal.direction == Direction.DOWN
        if mean_down and signal is not None and signal.feature != "distribution":
            return i + 1, calibration
    return MAX_EVENTS, calibration


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--trials", type=int, default=40, help="paired seeds per cell")
    parser.add_argument("--arl0", type=float, default=1e5, help="ARL0 in events")
    args = parser.parse_args(argv)
    print(f"ConfidenceShift(arl0={args.arl0:g}, shift={SHIFT} sd), {args.trials} paired seeds")
    print("drop (sd)  grid       mean delay  median delay  early alarms  calibration")
    for drop in DROPS:
        base: float | None = None
        for steps in GRIDS:
            runs = [_trial(steps, drop, seed, args.arl0) for seed in range(args.trials)]
            delays = [d for d, _ in runs if d is not None]
            mean = statistics.mean(delays) if delays else float("nan")
            base = mean if base is None else base
            calib_ms = 1000 * statistics.mean(c for _, c in runs)
            print(
                f"{drop:9.2f}  shift/{steps:<4d} {mean:8.1f} ev ({mean / base:4.2f}x) "
                f"{statistics.median(delays) if delays else float('nan'):9.1f} ev "
                f"{len(runs) - len(delays):8d}      {calib_ms:8.1f} ms"
            )
    print("(x: mean delay against shift/10 on the same seeds; calibration: the 1,000th")
    print(" score's update, which solves both mean charts' thresholds)")


if __name__ == "__main__":
    main()
