"""Benchmark of the detectors: false alarms, detection delay vs the CUSUM bound, and cost.

Run ``python bench/detectors.py`` (about 3-4 minutes on 2 cores) or ``--quick`` (well
under a minute, noisier). Every figure comes from seeded simulation in this run:

* FA/100k: alarms per 100k events on a stream with no change (per key).
* Delay: events from the change to the first alarm at or after it (the alarm event
  counts), over many seeded trials; alarms before the change are ignored and detectors
  keep running, the same rule for every detector.
* CUSUM bound: the exact delay (zero-state ARL1, Markov chain) of the CUSUM tuned to the
  true p0 -> p1 at the ARL0 the detector actually showed (events / false alarms). No
  detector can beat it on worst-case delay (Lorden; Moustakides). Ratio = mean delay /
  bound. When a detector shows no false alarm, its ARL0 is only known to exceed the run
  length, so its ratio is an upper bound (marked ``<=``).
* Cost: wall time of ``update`` per event in a Python loop, after warm-up/calibration;
  for the score charts and numeric drift also of ``update_many`` at 500 values a call, with
  its ratio to their ``update`` on the same values (and the same state after).

river's ADWIN and PageHinkley run with their defaults in the same run for comparison.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Run as a script, ``bench/`` is first on sys.path and this file would shadow the
# ``detectors`` package; put the repository root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
# The calibrations solve small linear systems; BLAS threads only contend for the 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from river import drift  # noqa: E402

from detectors.adaptive_rate import AdaptiveBernoulliCusum  # noqa: E402
from detectors.arl import bernoulli_cusum_delay  # noqa: E402
from detectors.base import Detector  # noqa: E402
from detectors.confidence import ConfidenceShift  # noqa: E402
from detectors.drift import (  # noqa: E402
    CategoricalDrift,
    EmbeddingDrift,
    LabelMixDrift,
    NumericDrift,
)
from detectors.moderation import CriticalEventDetector, ToxicityRate  # noqa: E402
from detectors.rate import BernoulliCusum  # noqa: E402

DESIGN_ROWS = [(0.05, 0.10), (0.05, 0.075), (0.02, 0.04), (0.01, 0.02), (0.10, 0.20)]
ARL0S = (1e4, 1e5, 3e5)

HEADER = (
    f"{'detector':<26}{'shift':<16}{'ARL0 target':>12}{'FA/100k ev':>12}"
    f"{'median delay (ev)':>19}{'mean delay (ev)':>17}{'CUSUM bound (ev)':>18}"
    f"{'ratio (x)':>11}{'cost (us/ev)':>14}{'detected':>10}"
)


def row(
    name: str,
    shift: str,
    target: float | None,
    fa_per_100k: float,
    delays: Sequence[int],
    bound: float | None,
    bounded_above: bool,
    cost: float | None,
    trials: int | None = None,
) -> str:
    med = float(np.median(delays)) if delays else math.nan
    mean = float(np.mean(delays)) if delays else math.nan
    ratio = "n/a"
    if bound is not None and delays:
        ratio = ("<=" if bounded_above else "") + f"{mean / bound:.2f}"
    return (
        f"{name:<26}{shift:<16}{(f'{target:.0e}' if target else '-'):>12}{fa_per_100k:>12.2f}"
        f"{med:>19.0f}{mean:>17.0f}{(f'{bound:.0f}' if bound else '-'):>18}{ratio:>11}"
        f"{(f'{cost:.2f}' if cost is not None else '-'):>14}"
        f"{(f'{len(delays)}/{trials}' if trials else '-'):>10}"
    )


# -- generic runners ----------------------------------------------------------------------


def river_alarms(det: Any, xs: Sequence[float], stop_after: int | None = None) -> list[int]:
    """Positions where a river detector flags drift (stopping at the first after a point)."""
    out = []
    for i, x in enumerate(xs):
        det.update(x)
        if det.drift_detected:
            out.append(i)
            if stop_after is not None and i >= stop_after:
                break
    return out


def ours_alarms(det: Detector[Any], xs: Sequence[Any]) -> list[int]:
    return [s.last_index for s in det.update_many(xs)]


def delay_trials(
    make: Callable[[], Any],
    alarms: Callable[[Any, Sequence[Any]], list[int]],
    sample: Callable[[np.random.Generator, int, bool], Sequence[Any]],
    pre: int,
    post: int,
    trials: int,
    seed: int,
    offset: int = 0,
) -> list[int]:
    """Delays of the first alarm at or after a change at position ``pre`` (+ ``offset``)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        det = make()
        xs = [*sample(rng, pre, False), *sample(rng, post, True)]
        hits = [i for i in alarms(det, xs) if i >= pre + offset]
        if hits:
            out.append(hits[0] - pre - offset + 1)
    return out


def cost_us(det: Any, xs: Sequence[Any], warm: Sequence[Any]) -> float:
    for x in warm:
        det.update(x)
    t0 = time.perf_counter()
    for x in xs:
        det.update(x)
    return (time.perf_counter() - t0) / len(xs) * 1e6


# -- rate detectors -------------------------------------------------------------------------


def bernoulli(p0: float, p1: float) -> Callable[[np.random.Generator, int, bool], Any]:
    def sample(rng: np.random.Generator, n: int, changed: bool) -> Any:
        return rng.random(n) < (p1 if changed else p0)

    return sample


def bench_rates(quick: bool) -> None:
    """The run, phase by phase in the order its report prints (long on purpose: one
    straight script reads better than helpers that each print a piece)."""
    print("\n== Bernoulli rate detectors, p0 given; BernoulliCusum designed for doubling")
    print("   (relative_shift=1), AdaptiveBernoulliCusum for 1.5x/2x/4x; river defaults on")
    print("   the same 0/1 stream ==")
    print(HEADER)
    trials = 60 if quick else 300
    rng = np.random.default_rng(0)
    cost_stream = list(rng.random(20_000 if quick else 200_000) < 0.05)
    for p0, p1 in DESIGN_ROWS:
        sample = bernoulli(p0, p1)
        shift = f"{p0:.2f}->{p1:.3g}"
        for arl0 in ARL0S if not quick else ARL0S[:2]:
            n = int(max(2e6, 40 * arl0)) if not quick else int(10 * arl0)
            for cls in (BernoulliCusum, AdaptiveBernoulliCusum):
                fa = len(cls(p0=p0, arl0=arl0).update_many(np.random.default_rng(1).random(n) < p0))
                meas = n / max(fa, 1)
                delays = delay_trials(
                    lambda cls=cls, p0=p0, arl0=arl0: cls(p0=p0, arl0=arl0),
                    ours_alarms,
                    sample,
                    1000,
                    40 * int(bernoulli_cusum_delay(p0, p1, arl0)),
                    trials,
                    2,
                )
                cost = cost_us(cls(p0=p0, arl0=arl0), cost_stream, [])
                bound = bernoulli_cusum_delay(p0, p1, meas)
                fa_k = 1e5 * fa / n
                name = cls.__name__
                print(row(name, shift, arl0, fa_k, delays, bound, fa == 0, cost, trials))
        n_river = 200_000 if quick else 2_000_000
        for rname, make in (("river ADWIN", drift.ADWIN), ("river PageHinkley", drift.PageHinkley)):
            stream = [float(v) for v in np.random.default_rng(3).random(n_river) < p0]
            fa = len(river_alarms(make(), stream))
            meas = n_river / max(fa, 1)
            delays = delay_trials(
                make,
                lambda d, xs: river_alarms(d, xs, stop_after=2000),
                lambda r, k, c, s=sample: [float(v) for v in s(r, k, c)],
                2000,
                100_000,
                trials // 3,
                4,
            )
            cost = cost_us(make(), [float(v) for v in cost_stream], [])
            bound = bernoulli_cusum_delay(p0, p1, max(meas, 2.0))
            print(
                row(
                    rname,
                    shift,
                    None,
                    1e5 * fa / n_river,
                    delays,
                    bound,
                    fa == 0,
                    cost,
                    trials // 3,
                )
            )
    # The baseline learned online: false alarms over many keys, each with its own warm-up.
    p0, p1, arl0, warmup = 0.05, 0.10, 1e5, 1000
    keys, per_key = (10, 200_000) if quick else (40, 400_000)
    fa = 0
    for k in range(keys):
        det = BernoulliCusum(arl0=arl0, warmup=warmup)
        fa += len(det.update_many(np.random.default_rng(100 + k).random(warmup + per_key) < p0))
    n = keys * per_key
    delays = delay_trials(
        lambda: BernoulliCusum(arl0=arl0, warmup=warmup),
        ours_alarms,
        bernoulli(p0, p1),
        warmup + 1000,
        20_000,
        trials,
        5,
    )
    late = delay_trials(
        lambda: BernoulliCusum(arl0=arl0, warmup=warmup),
        ours_alarms,
        bernoulli(p0, p1),
        60_000,
        20_000,
        trials // 3,
        6,
    )
    bound = bernoulli_cusum_delay(p0, p1, n / max(fa, 1))
    name = "BernoulliCusum learned p0"
    fa_k = 1e5 * fa / n
    print(row(name, "0.05->0.1 @2k", arl0, fa_k, delays, bound, fa == 0, None, trials))
    print(row(name, "0.05->0.1 @60k", arl0, fa_k, late, bound, fa == 0, None, trials // 3))


# -- other detectors --------------------------------------------------------------------------


def bench_others(quick: bool) -> None:
    print("\n== Confidence and drift detectors (default settings, arl0=1e5 per detector) ==")
    print(HEADER)
    trials = 15 if quick else 60
    n_fa = 100_000 if quick else 400_000
    ref = 1000

    def conf(delta: float, shape: bool = False) -> Callable[[np.random.Generator, int, bool], Any]:
        def sample(rng: np.random.Generator, n: int, changed: bool) -> Any:
            if changed and shape:
                return list(0.7 + 0.1 * rng.choice([-1.0, 1.0], n) + rng.normal(0, 0.01, n))
            return list(rng.normal(0.7 + (0.1 * delta if changed else 0.0), 0.1, n))

        return sample

    fa_conf = ConfidenceShift()
    fa = len(fa_conf.update_many(conf(0.0)(np.random.default_rng(6), ref + n_fa, False)))
    cost = cost_us(ConfidenceShift(), conf(0.0)(np.random.default_rng(7), 50_000, False)[ref:], [])
    for label, sample in (
        ("mean -0.5 sd", conf(-0.5)),
        ("mean +0.5 sd", conf(0.5)),
        ("mean -1 sd", conf(-1.0)),
        ("shape (bimodal)", conf(0.0, shape=True)),
    ):
        delays = delay_trials(ConfidenceShift, ours_alarms, sample, ref + 500, 3000, trials, 8)
        print(
            row("ConfidenceShift", label, 1e5, 1e5 * fa / n_fa, delays, None, False, cost, trials)
        )
        if label.startswith("mean"):
            for rname, make in (
                ("river ADWIN", drift.ADWIN),
                ("river PageHinkley", drift.PageHinkley),
            ):
                rfa = len(river_alarms(make(), conf(0.0)(np.random.default_rng(9), 50_000, False)))
                d = delay_trials(make, river_alarms, sample, ref + 500, 3000, trials, 8)
                print(row(rname, label, None, 1e5 * rfa / 50_000, d, None, False, None, trials))

    def numeric(rng: np.random.Generator, n: int, changed: bool) -> Any:
        data = rng.normal(size=(n, 5))
        if changed:
            data[:, 2] += 0.5
        return [dict(zip("abcde", map(float, r), strict=True)) for r in data]

    def categorical(rng: np.random.Generator, n: int, changed: bool) -> Any:
        p = [0.5, 0.3, 0.15, 0.05] if not changed else [0.4, 0.3, 0.15, 0.15]
        return [str(c) for c in rng.choice(["en", "de", "fr", "ja"], n, p=p)]

    def embedding(rng: np.random.Generator, n: int, changed: bool) -> Any:
        e = rng.standard_normal((n, 64))
        if changed:
            e[:, :16] += 0.5
        return [list(map(float, v)) for v in e]

    cases: list[tuple[str, str, Callable[[], Detector[Any]], Any]] = [
        (
            "NumericDrift (5 features)",
            "1 feat +0.5 sd",
            lambda: NumericDrift(tuple("abcde")),
            numeric,
        ),
        ("LabelMixDrift", "ja 5%->15%", LabelMixDrift, categorical),
        ("EmbeddingDrift (dim 64)", "16 dims +0.5 sd", EmbeddingDrift, embedding),
    ]
    for name, label, make, sample in cases:
        n = n_fa // (4 if "Embedding" in name or "Numeric" in name else 1)
        det = make()
        fa = len(det.update_many(sample(np.random.default_rng(10), ref + n, False)))
        cost = cost_us(
            make(),
            sample(np.random.default_rng(11), 20_000, False)[ref:],
            sample(np.random.default_rng(12), ref, False),
        )
        delays = delay_trials(make, ours_alarms, sample, ref + 500, 3000, trials, 13)
        print(row(name, label, 1e5, 1e5 * fa / n, delays, None, False, cost, trials))


def _batch_row(name: str, make: Callable[[], Detector[Any]], xs: list[Any], warm: int) -> None:
    """One cost row: ``update_many`` at 500 values a call against ``update`` per value
    (the same values, and the same state after)."""
    stepped, batched = make(), make()
    for x in xs[:warm]:
        stepped.update(x)
    t0 = time.perf_counter()
    want = [s for x in xs[warm:] if (s := stepped.update(x)) is not None]
    steps_us = (time.perf_counter() - t0) / (len(xs) - warm) * 1e6
    batched.update_many(xs[:warm])
    got: list[Any] = []
    t0 = time.perf_counter()
    for i in range(warm, len(xs), 500):
        got += batched.update_many(xs[i : i + 500])
    many_us = (time.perf_counter() - t0) / (len(xs) - warm) * 1e6
    if got != want or batched.get_state() != stepped.get_state():
        raise AssertionError(f"{name}.update_many gave other signals or state than its steps")
    label = f"{name} update_many"
    print(f"{label:<40}{many_us:>8.2f}   ({steps_us / many_us:.1f}x its update, {steps_us:.2f})")


def bench_costs(quick: bool) -> None:
    print("\n== Update cost of the remaining detectors (us per event) ==")
    rng = np.random.default_rng(20)
    n = 20_000 if quick else 100_000
    cats = ("toxicity", "harassment", "hate", "sexual", "violence", "self_harm", "data_exposure")
    scores = [dict(zip(cats, map(float, r), strict=True)) for r in rng.beta(1, 9, (n, 7))]
    tox = ToxicityRate(warmup=1000)
    crit = CriticalEventDetector()
    catd = CategoricalDrift(features=("locale", "tenant", "feature"))
    rows = [
        {"locale": str(a), "tenant": str(b), "feature": str(c)}
        for a, b, c in rng.integers(0, 6, (n, 3))
    ]
    # Toxic rates here are ~0.2 %: the first events include the baseline re-estimates
    # (exact calibrations with thousands of lattice states); after that it is the loop.
    first = cost_us(tox, scores[1000:], scores[:1000])
    steady = cost_us(tox, scores, [])
    print(f"{'ToxicityRate (7 cat.), first events':<40}{first:>8.2f}")
    print(f"{'ToxicityRate (7 cat.), steady state':<40}{steady:>8.2f}")
    print(f"{'CriticalEventDetector':<40}{cost_us(crit, scores, []):>8.2f}")
    print(f"{'CategoricalDrift (3 features)':<40}{cost_us(catd, rows[1000:], rows[:1000]):>8.2f}")
    emb = [list(map(float, v)) for v in rng.standard_normal((n // 2, 64))]
    embd = EmbeddingDrift()
    embd.update_many(emb[:1000])
    t0 = time.perf_counter()
    embd.update_many(emb[1000:])
    per_event = (time.perf_counter() - t0) / (len(emb) - 1000) * 1e6
    print(f"{'EmbeddingDrift.update_many (dim 64)':<40}{per_event:>8.2f}")
    # Batch updates against steps on the same values (same result): 500 values a call,
    # a busy key's share of one worker batch.
    values = rng.beta(8, 2, n + 1000).tolist()
    _batch_row("ConfidenceShift", lambda: ConfidenceShift(arl0=1e6), values, 1000)
    feats = ("f0", "f1", "f2", "f3", "f4")
    inputs = [dict(zip(feats, map(float, r), strict=True)) for r in rng.normal(size=(n, 5))]
    _batch_row(
        "NumericDrift (5 feat.)",
        lambda: NumericDrift(features=feats, arl0=1e6, designs=(1.0, 2.0, 4.0)),
        inputs,
        1000,
    )
    b = BernoulliCusum(p0=0.05)
    xs = rng.random(n * 10) < 0.05
    t0 = time.perf_counter()
    b.update_many(xs)
    per_event = (time.perf_counter() - t0) / xs.size * 1e6
    print(f"{'BernoulliCusum.update_many (vectorised)':<40}{per_event:>8.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (noisier figures)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    bench_rates(args.quick)
    bench_others(args.quick)
    bench_costs(args.quick)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
