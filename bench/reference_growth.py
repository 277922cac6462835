"""Score charts with a fixed reference and with one that keeps learning at rest.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/reference_growth.py [--seeds N]

A score chart's reference is its key's first values (``reference_size``: 300 scores of an
evaluator here). With ``reference_growth`` 4 it keeps learning at rest until it stands
for 1,200 (:mod:`detectors.confidence`). Both are built as the pipeline builds an
evaluator's chart (designs 0.5, 1 and 2 sd) and fed the same seeded streams:

- clean standard normal streams at a short ARL0 (3e4 per detector, three tests), so that
  false alarms are frequent enough to count: alarms per 10,000 values charted, beside the
  nominal rate;
- guardrail-like scores (Beta(1, 12)) whose warm-up came out low, as a summarizer's did in
  the quality run (its first 300 scores scaled by 0.75: 0.3 sd in normal scores), at the
  quality run's ARL0 (1e8): alarms per stream;
- a mean shift of 0.5 or 0.85 sd at several points after the warm-up, at ARL0 1e7: the
  delay in values (mean, median, max; a shift not caught in 3,000 values counts 3,000);
- a lasting shift of 0.4 sd from 40 values after the warm-up, at ARL0 1e6: the streams
  whose growing reference learned it (its recovery test read the change as over between
  alarms), and the alarms in 8,000 values.

Ratios are growing / fixed, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402

from detectors.confidence import ConfidenceShift  # noqa: E402
from detectors.score_shift import EvaluationScoreShift  # noqa: E402
from streams.pipeline.detectorset import SCORE_DESIGNS  # noqa: E402

REFERENCE: Final = 300
GROWTHS: Final = (1, 4)
POST: Final = 3000
SHIFTS: Final = ((0.5, 520), (0.5, 1150), (0.5, 3000), (0.85, 520), (0.85, 1150), (0.85, 3000))
"""(shift in sd, the value it starts at): just before the first merge, between merges,
after the reference stopped growing."""


def evaluator_chart(growth: int, arl0: float) -> EvaluationScoreShift:
    """An evaluator's score chart as the pipeline builds it (reference of 300)."""
    return EvaluationScoreShift(
        metric="bench/score",
        arl0=arl0,
        reference_size=REFERENCE,
        shift=0.5,
        designs=SCORE_DESIGNS,
        reference_growth=growth,
    )


def alarm_indices(det: ConfidenceShift, xs: Sequence[float]) -> list[int]:
    """The values of ``xs`` on which ``det`` raised a signal."""
    return [i for i, x in enumerate(xs) if det.update(float(x)) is not None]


def ratio_text(a: float, b: float) -> str:
    """``a / b`` to two decimals, or "n/a" for a zero ``b``."""
    return f"{a / b:.2f}" if b else "n/a"


def delay_cells(before: list[int], after: list[int]) -> tuple[str, str, str]:
    """Two rules' delays as "mean / median / max" cells, and the ratio of their means
    (after / before)."""
    cells = [
        f"{statistics.mean(d):.0f} / {statistics.median(d):.0f} / {max(d)}" for d in (before, after)
    ]
    return cells[0], cells[1], ratio_text(statistics.mean(after), statistics.mean(before))


def seeds_arg(doc: str, argv: Sequence[str] | None, default: int) -> int:
    """The ``--seeds`` option of a bench whose docstring is ``doc`` (at least 1)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument(
        "--seeds", type=int, default=default, help=f"streams per row (default {default})"
    )
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds needs at least 1")
    return int(args.seeds)


def main(argv: Sequence[str] | None = None) -> int:
    n = seeds_arg(__doc__ or "", argv, 30)
    print(f"{n} seeded streams per row; reference {REFERENCE} values, growth to 4x\n")

    arl0 = 3e4
    false = dict.fromkeys(GROWTHS, 0)
    for seed in range(n):
        xs = np.random.default_rng(seed).normal(size=6000)
        for g in GROWTHS:
            false[g] += len(alarm_indices(evaluator_chart(g, arl0), xs))
    charted = n * (6000 - REFERENCE)
    nominal = 1e4 / arl0
    print(f"clean normal streams, ARL0 {arl0:.0e}: false alarms per 10,000 values charted")
    print(f"  nominal {nominal:.3f}   fixed {false[1] / charted * 1e4:.3f}   ", end="")
    print(f"growing {false[4] / charted * 1e4:.3f}   ratio {ratio_text(false[4], false[1])}\n")

    skewed = dict.fromkeys(GROWTHS, 0)
    late = dict.fromkeys(GROWTHS, 0)
    for seed in range(n):
        rng = np.random.default_rng(10_000 + seed)
        xs = rng.beta(1.0, 12.0, 8000)
        xs[:REFERENCE] *= 0.75
        for g in GROWTHS:
            hits = alarm_indices(evaluator_chart(g, 1e8), xs)
            skewed[g] += len(hits)
            late[g] += sum(1 for i in hits if i >= 3000)
    print("guardrail scores after a low warm-up (0.3 sd), ARL0 1e8: alarms in 8,000 values")
    fixed, growing = f"{skewed[1] / n:.2f}", f"{skewed[4] / n:.2f}"
    print(f"  fixed {fixed} per stream ({late[1] / n:.2f} after value 3,000)   ", end="")
    print(f"growing {growing} ({late[4] / n:.2f})   ratio {ratio_text(skewed[4], skewed[1])}\n")

    print("delay of a mean shift, ARL0 1e7, in values (mean / median / max)")
    print(f"{'shift [sd]':>10} {'starts at':>10} {'fixed':>20} {'growing':>20} {'mean ratio':>11}")
    for shift, t0 in SHIFTS:
        delays: dict[int, list[int]] = {g: [] for g in GROWTHS}
        for seed in range(n):
            xs = np.random.default_rng(1000 + seed).normal(size=t0 + POST)
            xs[t0:] += shift
            for g in GROWTHS:
                hits = [i - t0 for i in alarm_indices(evaluator_chart(g, 1e7), xs) if i >= t0]
                delays[g].append(hits[0] if hits else POST)
        fixed_cell, growing_cell, ratio = delay_cells(delays[1], delays[4])
        print(f"{shift:>10} {t0:>10} {fixed_cell:>20} {growing_cell:>20} {ratio:>11}")

    learned, alarms = 0, dict.fromkeys(GROWTHS, 0)
    for seed in range(n):
        xs = np.random.default_rng(seed).normal(size=8000)
        xs[REFERENCE + 40 :] += 0.4
        for g in GROWTHS:
            det = evaluator_chart(g, 1e6)
            alarms[g] += len(alarm_indices(det, xs))
            learned += int(det._stands_for > REFERENCE)
    print("\na lasting 0.4 sd shift from 40 values after the warm-up, ARL0 1e6:")
    per = {g: f"{a / n:.1f}" for g, a in alarms.items()}
    print(f"  alarms per stream: fixed {per[1]}   growing {per[4]}   ", end="")
    print(f"streams whose growing reference learned it: {learned} of {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
