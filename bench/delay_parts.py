"""Where the harm, injection and guardrail detectors' delay goes, detector by detector (issue 13).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/delay_parts.py [--seeds N]
        [--only means|rates|embeddings]

bench/quality.py measures the whole pipeline's delay against the oracle CUSUM (exact, knows
``p0 -> p1``, at one test's ARL0). This script takes the pipeline out: it feeds each
detector, built as the pipeline builds it, a seeded stream of baseline observations and
then the changed rate of the benchmark's default injection (self-harm 0.004 -> 0.02;
prompt injections 0.005 -> 0.1; guardrail blocks 0.03 -> 0.12), and prints the mean and
median delay in observations for variants that each remove one cause:

- as the pipeline builds it (each test at ``--arl0``: harm gets ``arl0 / 13`` and splits it
  over its 13 tests);
- harm and injection: designs up to 4x only, as before stop 26 (injection) and 27 (harm):
  ``DESIGN_SHIFTS``, not ``WAVE_SHIFTS``;
- with the baseline known instead of learned (the cost of estimating a rare rate);
- a single CUSUM designed for the true shift with the baseline known.

Delays are in the detector's own observations (outputs for harm, inputs for injection,
guardrail evaluations for guardrail); a delay beyond ``--post`` observations counts as ``--post``.

First, the mean charts: confidence and numeric drift on drops of 0.5-2 standard
deviations, as the pipeline builds them and as they were before stop 28 (one design of
0.5 sd; the window test alone), on Gaussian scores and on the simulator's skewed
confidence (Beta(12, 3)), against the Gaussian CUSUM for the true shift (the oracle of
bench/quality.py) and the exact likelihood-ratio CUSUM of the true distribution (the best
any detector can do; ``bench.oracle.location_llr_delay``).

Then embeddings (``--only embeddings``): a mean shift in a random direction of standard
normal embeddings, 8 to 384 numbers, as a model key's detector has it (the window test and
the distance's mean charts) and as a segment's (the window test alone), against the
Gaussian CUSUM told the shift's direction and size (no detector that is not told the
direction can match it in many dimensions; it says what the information allows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from bench.oracle import gaussian_cusum_delay, location_llr_delay  # noqa: E402
from detectors.adaptive_rate import AdaptiveBernoulliCusum, AdaptivePromptInjectionRate  # noqa: E402
from detectors.arl import bernoulli_cusum_delay  # noqa: E402
from detectors.base import Detector  # noqa: E402
from detectors.confidence import ConfidenceShift  # noqa: E402
from detectors.coverage import GuardrailBlockRate, HarmRate  # noqa: E402
from detectors.drift import EmbeddingDrift, NumericDrift  # noqa: E402
from detectors.rate import BernoulliCusum  # noqa: E402
from streams.pipeline.detectorset import (  # noqa: E402
    SCORE_DESIGNS,
    WAVE_SHIFTS,
    relative_shifts,
)
from streams.settings import load_settings  # noqa: E402


def _delays(
    make: Callable[[], Detector[Any]],
    p0: float,
    p1: float,
    pre: int,
    seeds: int,
    post: int,
) -> tuple[float, float]:
    """Mean and median observations from the change to the first alarm (harm: of the
    changed category or the pooled test)."""
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        det = make()
        harm = isinstance(det, HarmRate)
        before, after = rng.random(pre) < p0, rng.random(post) < p1
        hit = post
        for i, x in enumerate([*before, *after]):
            flag = bool(x)
            sig = det.update({"self_harm": flag, "hate": False} if harm else flag)
            if i >= pre and sig is not None and (not harm or sig.feature in ("self_harm", "any")):
                hit = i - pre
                break
        out.append(hit)
    return statistics.fmean(out), statistics.median(out)


Draw = Callable[[np.random.Generator, int], np.ndarray]
"""``(rng, n)`` -> ``n`` standardised scores (mean 0, standard deviation 1)."""

SKEWED: Final = stats.beta(12.0, 3.0)
"""The simulator's confidence of support-chat (``ModelSpec.confidence_beta``): skewed
toward its low tail, as model confidences and judge scores are."""


def _gaussian(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, n)


def _skewed(rng: np.random.Generator, n: int) -> np.ndarray:
    draws = SKEWED.rvs(size=n, random_state=rng)
    return np.asarray((draws - SKEWED.mean()) / SKEWED.std(), dtype=np.float64)


def _mean_delay(
    make: Callable[[], Detector[Any]],
    feed: Callable[[np.ndarray], Any],
    shift: float,
    seeds: int,
    post: int,
    draw: Draw = _gaussian,
    reference: int = 1000,
) -> tuple[float, float]:
    """Mean and median observations from a drop of ``shift`` standard deviations (after
    the detector's reference of ``reference`` values) to its first alarm. Two values per
    observation: a Gaussian one, and one from ``draw`` that drops (the score, drift's
    feature b)."""
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 13])
        det = make()
        hit = post
        total = reference + post
        z = np.column_stack([rng.normal(0.0, 1.0, total), draw(rng, total)])
        z[reference:, 1] -= shift
        for i, x in enumerate(z):
            if det.update(feed(x)) is not None and i >= reference:
                hit = i - reference + 1
                break
        out.append(hit)
    return statistics.fmean(out), statistics.median(out)


def _mean_shifts(arl0: float, seeds: int, post: int, reference: int) -> None:
    """Score charts (confidence: 0.7 + 0.1 z) and numeric drift (feature b of two) on a
    drop of 0.5-2 sd, as the pipeline builds them and with the one design (confidence) or
    the window test (drift) they had before stop 28, on Gaussian scores and on the
    simulator's skewed confidence (:data:`SKEWED`). Two oracles at one test's ARL0: the
    Gaussian mean CUSUM for the true shift (what bench/quality.py prints) and the exact
    likelihood-ratio CUSUM of the true distribution (:func:`location_llr_delay`, the best
    any detector can do; the same as the first on Gaussian scores). Each chart learns a
    reference of ``reference`` values (the pipeline's: ``warmup_events`` and
    ``drift_reference_size``, 1,000): a longer one costs less allowance for its estimated
    mean (:class:`detectors.mean_chart.MeanChart`)."""
    print(
        f"mean shifts: per-test ARL0 {arl0:.3g} observations; references of {reference} "
        f"values; {seeds} seeded streams per variant"
    )
    head = f"{'case':20} {'shift':>6} {'oracle':>7} {'LLR opt':>7} {'variant':25}"
    print(f"{head} {'mean':>7} {'median':>7} {'/ oracle':>8} {'/ LLR':>6}  [observations]")

    def conf(z: np.ndarray) -> float:
        return 0.7 + 0.1 * float(z[1])

    def drift(z: np.ndarray) -> dict[str, float]:
        return {"a": float(z[0]), "b": float(z[1])}

    confidence = [
        (
            "pipeline (0.5, 1, 2 sd)",
            lambda: ConfidenceShift(arl0=arl0 / 3, designs=SCORE_DESIGNS, reference_size=reference),
        ),
        ("one design (0.5 sd)", lambda: ConfidenceShift(arl0=arl0 / 3, reference_size=reference)),
    ]
    numeric = [
        (
            "pipeline (mean charts)",
            lambda: NumericDrift(
                ("a", "b"), arl0=arl0, designs=SCORE_DESIGNS, reference_size=reference
            ),
        ),
        (
            "window test only",
            lambda: NumericDrift(("a", "b"), arl0=arl0, reference_size=reference),
        ),
    ]
    cases: list[tuple[str, Callable[[Any], Any], Draw, Any, list[tuple[str, Any]]]] = [
        ("confidence", conf, _gaussian, stats.norm(), confidence),
        ("confidence, skewed", conf, _skewed, SKEWED, confidence[:1]),
        ("numeric drift", drift, _gaussian, stats.norm(), numeric),
        ("numeric drift, skewed", drift, _skewed, SKEWED, numeric[:1]),
    ]
    for name, feed, draw, dist, variants in cases:
        for shift in (0.5, 1.0, 1.5, 2.0):
            oracle = gaussian_cusum_delay(shift, arl0)
            best = location_llr_delay(dist, shift, arl0)
            for label, make in variants:
                mean, med = _mean_delay(make, feed, shift, seeds, post, draw, reference)
                row = f"{name:20} {shift:6.1f} {oracle:7.1f} {best:7.1f} {label:25}"
                print(f"{row} {mean:7.1f} {med:7.1f} {mean / oracle:8.2f} {mean / best:6.2f}")
    print()


EMBEDDING_SHIFTS: Final = ((8, 2.0), (64, 2.0), (64, 3.0), (384, 3.0), (384, 6.0))
"""(dimensions, shift in standard deviations of one number) of ``--only embeddings``."""


def _embedding_shifts(arl0: float, seeds: int, post: int, reference: int) -> None:
    """Observations from a shift of the mean embedding to the first alarm (a delay beyond
    ``post`` counts as ``post``; ``missed`` = how many), for each of
    :data:`EMBEDDING_SHIFTS`."""
    print(
        f"embedding shifts: per-test ARL0 {arl0:.3g} observations; references of "
        f"{reference} embeddings; {seeds} seeded streams per variant; misses count {post}"
    )
    print(
        f"{'dims':>5} {'shift':>6} {'oracle':>7} {'variant':38} {'mean':>7} {'median':>7} "
        f"{'missed':>6} {'/ oracle':>8}  [observations]"
    )
    variants: list[tuple[str, Callable[[], EmbeddingDrift]]] = [
        (
            "model key (window test, distance charts)",
            lambda: EmbeddingDrift(arl0=arl0, reference_size=reference, designs=SCORE_DESIGNS),
        ),
        ("segment key (window test)", lambda: EmbeddingDrift(arl0=arl0, reference_size=reference)),
    ]
    for dims, norm in EMBEDDING_SHIFTS:
        oracle = gaussian_cusum_delay(norm, arl0)
        for label, make in variants:
            delays = []
            for seed in range(seeds):
                rng = np.random.default_rng([seed, 17, dims])
                direction = rng.standard_normal(dims)
                direction *= norm / np.linalg.norm(direction)
                det, hit = make(), post
                for i in range(reference + post):
                    x = rng.standard_normal(dims) + (direction if i >= reference else 0.0)
                    if det.update(x.tolist()) is not None and i >= reference:
                        hit = i - reference + 1
                        break
                delays.append(hit)
            mean, med = statistics.fmean(delays), statistics.median(delays)
            missed = sum(d >= post for d in delays)
            row = f"{dims:5d} {norm:6.1f} {oracle:7.1f} {label:38}"
            print(f"{row} {mean:7.1f} {med:7.1f} {missed:6d} {mean / oracle:8.2f}")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=12, help="streams per variant")
    parser.add_argument("--post", type=int, default=20_000, help="observations after the change")
    parser.add_argument(
        "--arl0",
        type=float,
        default=5e8,
        help="per-test ARL0 in events (default: the order of a busy key's under the weekly "
        "budget; bench/quality.py prints each scope's)",
    )
    parser.add_argument(
        "--only",
        choices=("means", "rates", "embeddings"),
        default=None,
        help="one part of the run",
    )
    parser.add_argument(
        "--reference",
        type=int,
        default=1000,
        help="values in each mean chart's reference (default: the pipeline's, 1,000)",
    )
    args = parser.parse_args()
    s = load_settings(env={}).detection
    arl0 = args.arl0
    tests = s.max_harm_categories + 1
    shifts = relative_shifts(s)
    waves = relative_shifts(s, WAVE_SHIFTS)
    g_arl0 = arl0 * s.evaluation_fraction
    cases: list[tuple[str, float, float, int, float, list[tuple[str, Callable[[], Any]]]]] = [
        (
            "harm self_harm",
            0.004,
            0.02,
            8000,
            arl0,
            [
                (
                    "pipeline",
                    lambda: HarmRate(
                        s.max_harm_categories, relative_shifts=waves, arl0=arl0 / tests
                    ),
                ),
                (
                    "designs up to 4x only",
                    lambda: HarmRate(
                        s.max_harm_categories, relative_shifts=shifts, arl0=arl0 / tests
                    ),
                ),
                (
                    "one category, p0 known",
                    lambda: AdaptiveBernoulliCusum(p0=0.004, relative_shifts=waves, arl0=arl0),
                ),
                (
                    "one CUSUM for 5x, p0 known",
                    lambda: BernoulliCusum(p0=0.004, relative_shift=4.0, arl0=arl0),
                ),
            ],
        ),
        (
            "injection wave",
            0.005,
            0.1,
            8000,
            arl0,
            [
                (
                    "pipeline",
                    lambda: AdaptivePromptInjectionRate(
                        relative_shifts=waves, arl0=arl0, warmup=s.warmup_events
                    ),
                ),
                (
                    "designs up to 4x only",
                    lambda: AdaptivePromptInjectionRate(
                        relative_shifts=shifts, arl0=arl0, warmup=s.warmup_events
                    ),
                ),
                (
                    "p0 known",
                    lambda: AdaptivePromptInjectionRate(p0=0.005, relative_shifts=waves, arl0=arl0),
                ),
                (
                    "one CUSUM for 20x, p0 known",
                    lambda: BernoulliCusum(p0=0.005, relative_shift=19.0, arl0=arl0),
                ),
            ],
        ),
        (
            "guardrail blocks",
            0.03,
            0.12,
            2000,
            g_arl0,
            [
                (
                    "pipeline",
                    lambda: GuardrailBlockRate(
                        arl0=g_arl0, warmup=s.evaluation_warmup_events, relative_shifts=shifts
                    ),
                ),
                (
                    "p0 known",
                    lambda: GuardrailBlockRate(p0=0.03, arl0=g_arl0, relative_shifts=shifts),
                ),
                (
                    "one CUSUM for 4x, p0 known",
                    lambda: BernoulliCusum(p0=0.03, relative_shift=3.0, arl0=g_arl0),
                ),
            ],
        ),
    ]
    if args.only in (None, "means"):
        _mean_shifts(arl0, args.seeds, args.post, args.reference)
    if args.only in (None, "embeddings"):
        _embedding_shifts(arl0, args.seeds, args.post, args.reference)
    if args.only in ("means", "embeddings"):
        return 0
    print(f"per-test ARL0 {arl0:.3g} observations; {args.seeds} seeded streams per variant")
    print(f"{'case':18} {'variant':28} {'mean':>8} {'median':>8} {'/ oracle':>9}  [observations]")
    for name, p0, p1, pre, case_arl0, variants in cases:
        oracle = bernoulli_cusum_delay(p0, p1, case_arl0)
        print(f"{name:18} {'oracle CUSUM':28} {oracle:8.0f} {'':>8} {1.0:9.2f}")
        for label, make in variants:
            mean, med = _delays(make, p0, p1, pre, args.seeds, args.post)
            print(f"{name:18} {label:28} {mean:8.0f} {med:8.0f} {mean / oracle:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
