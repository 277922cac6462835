"""Rate charts whose young reference grows from cleared observations only, and also from
what they chart at rest.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/rate_growth.py [--seeds N]

A downvote chart as the pipeline builds it (:class:`~detectors.adaptive_rate.
AdaptiveDownvoteSpike`: 300 feedback events of warm-up, designs 1.5x, 2x and 4x) learns
its baseline, then keeps learning. Two rules are fed the same seeded streams:

- **cleared** (before stop 69): only observations before the CUSUM's last return to zero
  join the reference, re-estimated each time it quadruples;
- **at rest** (now): while the reference is young (under four warm-ups), also an
  excursion's older observations while it stays below half its threshold outside an
  alarm, re-estimated each time the reference doubles
  (:attr:`~detectors.rate.BernoulliCusum.growing_at_rest`); a mature one as before.

Rows:

- clean streams at 5 % (a downvote rate) and 1 % at a short ARL0 (1e4 per detector), so
  that false alarms are frequent enough to count: alarms per 100,000 observations, beside
  the nominal rate;
- streams at 5.8 % whose warm-up came out low, as the summarizer's did in the clean week
  (their first 600 observations at 3.3 %), at the week's ARL0 (5e8): alarms per stream
  in 20,000 observations, and the streams with any;
- a rate increase (1.5x, 2x, 4x of 5 %) starting at several points after the warm-up, at
  ARL0 1e7: the delay in observations (mean, median, max; not caught in 20,000 counts
  20,000);
- a lasting 1.5x increase from 200 observations after the warm-up, at ARL0 1e7: the
  streams that never alarm on it in 20,000 observations (the reference learned it).

Ratios are at rest / cleared, measured in the same run.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from bench.reference_growth import delay_cells, ratio_text, seeds_arg  # noqa: E402
from detectors.adaptive_rate import AdaptiveDownvoteSpike  # noqa: E402
from streams.pipeline.detectorset import DESIGN_SHIFTS  # noqa: E402

WARMUP: Final = 300
POST: Final = 20_000
RULES: Final = ("cleared", "at rest")
SHIFTS: Final = ((1.5, 400), (1.5, 2_000), (2.0, 400), (2.0, 2_000), (4.0, 400), (4.0, 5_000))
"""(rate multiple, the observation it starts at): just after the warm-up, after the first
re-estimates, later."""


def downvote_chart(rule: str, arl0: float) -> AdaptiveDownvoteSpike:
    """A model's downvote chart as the pipeline builds it, under ``rule``."""
    cleared = rule == "cleared"
    return AdaptiveDownvoteSpike(
        relative_shifts=DESIGN_SHIFTS,
        arl0=arl0,
        warmup=WARMUP,
        merge_at_rest=not cleared,
    )


def alarm_indices(det: AdaptiveDownvoteSpike, flags: NDArray[np.bool_]) -> list[int]:
    """The observations of ``flags`` on which ``det`` raised a signal."""
    return [s.last_index for s in det.update_many(flags)]


def main(argv: Sequence[str] | None = None) -> int:
    n = seeds_arg(__doc__ or "", argv, 40)
    print(f"{n} seeded streams per row; warm-up {WARMUP} observations\n")

    arl0 = 1e4
    length = 100_000
    print(f"clean streams, ARL0 {arl0:.0e}: false alarms per 100,000 observations charted")
    for rate in (0.05, 0.01):
        false = dict.fromkeys(RULES, 0)
        for seed in range(n):
            flags = np.random.default_rng(seed).random(length) < rate
            for rule in RULES:
                false[rule] += len(alarm_indices(downvote_chart(rule, arl0), flags))
        per = 1e5 / (n * length)
        print(f"  rate {rate:.0%}: nominal {1e5 / arl0:.1f}   ", end="")
        print(
            f"cleared {false['cleared'] * per:.1f}   at rest {false['at rest'] * per:.1f}   ",
            end="",
        )
        print(f"ratio {ratio_text(false['at rest'], false['cleared'])}")

    low = dict.fromkeys(RULES, 0)
    streams = dict.fromkeys(RULES, 0)
    for seed in range(n):
        rng = np.random.default_rng(10_000 + seed)
        flags = rng.random(POST) < 0.058
        flags[:600] = rng.random(600) < 0.033
        for rule in RULES:
            hits = alarm_indices(downvote_chart(rule, 5e8), flags)
            low[rule] += len(hits)
            streams[rule] += bool(hits)
    print(f"\n5.8 % after a warm-up at 3.3 %, ARL0 5e8: alarms in {POST:,} observations")
    print(
        f"  cleared {low['cleared'] / n:.2f} per stream ({streams['cleared']} of {n} streams)   ",
        end="",
    )
    print(f"at rest {low['at rest'] / n:.2f} ({streams['at rest']} of {n})   ", end="")
    print(f"ratio {ratio_text(low['at rest'], low['cleared'])}\n")

    print("delay of a rate increase from 5 %, ARL0 1e7, in observations (mean / median / max)")
    print(f"{'increase':>8} {'starts at':>10} {'cleared':>22} {'at rest':>22} {'mean ratio':>11}")
    for mult, t0 in SHIFTS:
        delays: dict[str, list[int]] = {r: [] for r in RULES}
        for seed in range(n):
            rng = np.random.default_rng(1000 + seed)
            flags = rng.random(t0 + POST) < np.where(np.arange(t0 + POST) < t0, 0.05, 0.05 * mult)
            for rule in RULES:
                hits = [i - t0 for i in alarm_indices(downvote_chart(rule, 1e7), flags) if i >= t0]
                delays[rule].append(hits[0] if hits else POST)
        cleared, at_rest, ratio = delay_cells(delays["cleared"], delays["at rest"])
        print(f"{mult:>7}x {t0:>10,} {cleared:>22} {at_rest:>22} {ratio:>11}")

    missed = dict.fromkeys(RULES, 0)
    t0 = WARMUP + 200
    for seed in range(n):
        rng = np.random.default_rng(2000 + seed)
        flags = rng.random(t0 + POST) < np.where(np.arange(t0 + POST) < t0, 0.05, 0.075)
        for rule in RULES:
            hits = [i for i in alarm_indices(downvote_chart(rule, 1e7), flags) if i >= t0]
            missed[rule] += not hits
    print(f"\na lasting 1.5x from observation {t0}, ARL0 1e7: streams never alarmed in {POST:,}")
    print(f"  cleared {missed['cleared']} of {n}   at rest {missed['at rest']} of {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
