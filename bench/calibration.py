"""False alarms of every detector kind with *estimated* baselines, measured on long clean
streams (issue #19), against the nominal budget and the exact CUSUM.

Each kind's detector is built as the pipeline builds it (one test at ``--arl0`` events, a
multi-test detector at ``arl0 / tests`` so that each of its tests runs at ``arl0``, see
:meth:`streams.pipeline.detectorset._Factory.kwargs`) and driven directly with numpy
streams (``update_many`` / ``update_columns`` where they exist), not through Kafka: that is
what reaches tens of millions of events. Every seed is a new key that learns its baseline
from its own warm-up (a new segment, a deploy), at a realistic rare rate.

With ``cycle`` (default on), the run length follows a daily traffic cycle (3x between
night and day) on the grid of :mod:`streams.pipeline.budget`: detectors are retargeted as
the pipeline retargets them, keeping their evidence, and the nominal count follows.

Reported per kind (and per harm category / pooled):
* the nominal and measured false pages per week for one test at a stated traffic, the
  traffic at which the nominal is exactly one page a week: ``arl0 / WEEK`` events per
  second at the key (e.g. 0.17 events/s, 14k a day, for ARL0 = 1e5); the measured figure
  has a 95 % Garwood (exact Poisson) interval;
* the delay after a shift (rate doubling; a 0.5 sd mean shift for confidence; a guardrail
  blocking four times as often; a judge's scores dropping) against the exact CUSUM that
  knows the change, at the *measured* false-alarm rate (bench/oracle.py, detectors.arl);
  drift kinds and the judge score have no exact CUSUM (a dash);
* events per second replayed through the detector.

    .venv/bin/python -m bench.calibration --quick     # ~3 minutes on one core
    .venv/bin/python -m bench.calibration             # >= 50 M events
    .venv/bin/python -m bench.calibration --young --arl0 1e4   # young segments' priors
"""

from __future__ import annotations

import argparse
import math
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import chi2

from bench.oracle import gaussian_cusum_delay
from detectors.adaptive_rate import AdaptiveDownvoteSpike, AdaptivePromptInjectionRate
from detectors.arl import bernoulli_cusum_delay
from detectors.base import Detector, Signal
from detectors.confidence import ConfidenceShift
from detectors.coverage import POOLED, HarmRate
from detectors.drift import CategoricalDrift, EmbeddingDrift, LabelMixDrift, NumericDrift
from detectors.rate import BASELINE_CONFIDENCE
from detectors.score_shift import EvaluationScoreShift
from streams.pipeline import budget
from streams.pipeline.detectorset import SCORE_DESIGNS, WAVE_SHIFTS, relative_shifts
from streams.settings import load_settings

WEEK_S = budget.WEEK_S
BLOCK = 50_000
"""Events per block; the run length may change between blocks (the traffic cycle)."""
WARM_STEP = 500
"""Events per step while a detector learns its baseline."""
BLOCKS_PER_DAY = 24
"""Blocks in one simulated day of the traffic cycle."""

Bools = NDArray[np.bool_]


def garwood(k: int) -> tuple[float, float]:
    """95 % exact (Garwood) interval of a Poisson mean, given ``k`` events."""
    lo = 0.0 if k == 0 else float(chi2.ppf(0.025, 2 * k)) / 2.0
    hi = float(chi2.ppf(0.975, 2 * k + 2)) / 2.0
    return lo, hi


@dataclass
class Tally:
    """False alarms of one test and the nominal count they are judged against."""

    alarms: int = 0
    nominal: float = 0.0  # expected alarms: sum of (alarm-ready events / that ARL0)
    exposure: int = 0  # events while able to alarm
    delays: list[int] = field(default_factory=list)

    def row(self, arl0: float) -> dict[str, Any]:
        """Pages per week at the traffic where one test's nominal is one page a week."""
        traffic = arl0 / WEEK_S
        per_event = self.alarms / self.exposure if self.exposure else math.nan
        lo, hi = garwood(self.alarms)
        scale = traffic * WEEK_S / self.exposure if self.exposure else math.nan
        nominal_week = self.nominal / self.exposure * traffic * WEEK_S if self.exposure else 0
        return {
            "alarms": self.alarms,
            "nominal_alarms": self.nominal,
            "exposure": self.exposure,
            "nominal_week": nominal_week,
            "measured_week": per_event * traffic * WEEK_S,
            "low_week": lo * scale,
            "high_week": hi * scale,
        }


@dataclass
class Kind:
    """A detector kind: how to build it, feed it a block, and where its tests are."""

    name: str
    tests: int
    build: Callable[[float], Detector[Any]]
    clean: Callable[[np.random.Generator, int], Any]
    shifted: Callable[[np.random.Generator, int], Any] | None
    feed: Callable[[Detector[Any], Any], list[Signal]]
    oracle: Callable[[float], float] | None  # exact delay at a measured ARL0 (events)
    split: Callable[[Signal], str] = lambda _s: ""
    changed: str = ""  # the test the shift of run_delay changes
    scans: bool = False
    """Its tests can alarm while they learn (the rate tests' warm-up scan,
    :mod:`detectors.warmup`): every event counts in its exposure and nominal."""


def _bern(p: float) -> Callable[[np.random.Generator, int], Bools]:
    return lambda rng, n: rng.random(n) < p


def _many(det: Detector[Any], block: Any) -> list[Signal]:
    return det.update_many(block)


def _harm_feed(det: Detector[Any], block: dict[str, Bools]) -> list[Signal]:
    assert isinstance(det, HarmRate)
    return det.update_columns(block)


HARM_RATES = {"toxicity": 0.003, "harassment": 0.001, "self_harm": 0.001, "violence": 0.01}


def _harm(shift: float) -> Callable[[np.random.Generator, int], dict[str, Bools]]:
    def gen(rng: np.random.Generator, n: int) -> dict[str, Bools]:
        return {
            c: rng.random(n) < p * (shift if c == "toxicity" else 1.0)
            for c, p in HARM_RATES.items()
        }

    return gen


def _confidence(shift: float) -> Callable[[np.random.Generator, int], NDArray[np.float64]]:
    return lambda rng, n: rng.normal(0.8 + 0.1 * shift, 0.1, n)


GUARDRAIL_BLOCK_RATE = 0.033
"""The share of a guardrail's verdicts in its blocking mode (the simulator's ~3 %)."""


def _guardrail_score(shift: float) -> Callable[[np.random.Generator, int], NDArray[np.float64]]:
    """A guardrail's verdict scores as the simulator draws them: bimodal, the blocking
    mode rare (Beta(8, 2) for a block, Beta(1, 12) for a pass), blocking ``shift`` times
    as often as :data:`GUARDRAIL_BLOCK_RATE`."""

    def gen(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
        blocked = rng.random(n) < GUARDRAIL_BLOCK_RATE * shift
        return np.where(blocked, rng.beta(8.0, 2.0, n), rng.beta(1.0, 12.0, n))

    return gen


JUDGE_SCORES = (0.02, 0.05, 0.13, 0.40, 0.40)
"""How often an LLM judge gives each score of 1 to 5 on a healthy model."""
JUDGE_SCORES_DROPPED = (0.06, 0.11, 0.13, 0.35, 0.35)
"""The same after a quality drop: a tenth of the mass moved from 4 and 5 to 1 and 2."""


def _judge_score(
    probabilities: tuple[float, ...],
) -> Callable[[np.random.Generator, int], NDArray[np.float64]]:
    """An LLM judge's 1-5 scores, each drawn with ``probabilities``."""
    return lambda rng, n: rng.choice(5, size=n, p=probabilities).astype(np.float64) + 1.0


def _evaluation_chart(metric: str, reference_size: int) -> Callable[[float], Detector[Any]]:
    """An evaluation score chart of ``metric`` as the pipeline builds it (normal scores
    against its first ``reference_size`` values), each of its three tests at ``arl0``."""
    return lambda a: EvaluationScoreShift(
        metric=metric, arl0=a / 3, shift=0.5, designs=SCORE_DESIGNS, reference_size=reference_size
    )


def _score_test(signal: Signal) -> str:
    """A score chart's test: its direction and, from ``details``, mean or distribution."""
    test = next((k[5:] for k in signal.details if k.startswith("test:")), "mean")
    return f"{signal.direction.value}:{test}"


def _numeric(rng: np.random.Generator, n: int) -> list[dict[str, float]]:
    a, b, c = rng.normal(0, 1, n), rng.exponential(1, n), rng.normal(5, 2, n)
    return [
        {"a": x, "b": y, "c": z} for x, y, z in zip(a.tolist(), b.tolist(), c.tolist(), strict=True)
    ]


LOCALES = ["en", "de", "fr", "es", "ja", "pt"]
LOCALE_P = [0.5, 0.15, 0.12, 0.1, 0.08, 0.05]


def _categorical(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
    idx = rng.choice(len(LOCALES), size=n, p=LOCALE_P)
    return [{"locale": LOCALES[i]} for i in idx.tolist()]


def _labels(rng: np.random.Generator, n: int) -> list[str]:
    idx = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    return [("ok", "refund", "other")[i] for i in idx.tolist()]


def _embedding(rng: np.random.Generator, n: int) -> list[list[float]]:
    return rng.normal(0, 1, (n, 8)).tolist()  # type: ignore[no-any-return]


def _rate(name: str, p: float, build: Callable[[float], Detector[Any]]) -> Kind:
    """A one-test rate kind at base rate ``p``, shifted to ``2p``; its oracle is the
    Bernoulli CUSUM's exact delay for that shift."""
    return Kind(
        f"{name} p={p:g}",
        1,
        build,
        _bern(p),
        _bern(2 * p),
        _many,
        lambda a: bernoulli_cusum_delay(p, 2 * p, a),
        scans=True,
    )


def kinds(rate_scale: float = 1.0) -> list[Kind]:
    """The detector kinds of the routing plan, at realistic rare rates, with the design
    grids the pipeline gives them (``streams.pipeline.detectorset.FACTORIES``: prompt
    injections and harm categories up to 16x, downvotes up to 4x, score charts and numeric
    drift's mean charts for 0.5, 1 and 2 sd)."""
    s = load_settings(env={}).detection
    grid, waves = relative_shifts(s), relative_shifts(s, WAVE_SHIFTS)
    out = [
        _rate(
            "downvote",
            p,
            lambda a: AdaptiveDownvoteSpike(arl0=a, warmup=300, relative_shifts=grid),
        )
        for p in (0.01, 0.03)
    ]
    out += [
        _rate(
            "injection",
            p,
            lambda a: AdaptivePromptInjectionRate(arl0=a, warmup=1000, relative_shifts=waves),
        )
        for p in (0.001, 0.003, 0.01)
    ]
    out.append(
        Kind(
            "harm (4 categories + pooled)",
            13,
            lambda a: HarmRate(
                max_categories=12, pooled=True, arl0=a / 13, warmup=1000, relative_shifts=waves
            ),
            _harm(1.0),
            _harm(2.0),
            _harm_feed,
            lambda a: bernoulli_cusum_delay(0.003, 0.006, a),
            split=lambda s: s.feature or "",
            changed="toxicity",
            scans=True,
        )
    )
    # The mean charts' thresholds allow for the estimated reference mean (the default);
    # "no margin" is the chart designed on the estimate itself, the baseline of that rule.
    for label, conf in (("confidence", BASELINE_CONFIDENCE), ("confidence, no margin", 0.5)):
        out.append(
            Kind(
                label,
                3,
                lambda a, conf=conf: ConfidenceShift(  # type: ignore[misc]
                    arl0=a / 3,
                    shift=0.5,
                    designs=SCORE_DESIGNS,
                    reference_size=1000,
                    baseline_confidence=conf,
                ),
                _confidence(0.0),
                _confidence(0.5),
                _many,
                lambda a: gaussian_cusum_delay(0.5, a),
                split=lambda s: f"{s.direction.value}:{s.feature or 'mean'}",
                changed="up:mean",
            )
        )
    # An evaluation score chart (normal scores against its first
    # ``evaluation_warmup_events`` values) on a guardrail's bimodal score: whether a
    # reference of a few hundred values estimates the rare mode's tail well enough for
    # the up side's budget. Its shift blocks four times as often (the quality benchmark's
    # guardrail spike); the oracle is the exact Bernoulli CUSUM on the block indicator,
    # which the score's bimodality all but reveals.
    out.append(
        Kind(
            f"guardrail score ({GUARDRAIL_BLOCK_RATE:.1%} blocking)",
            3,
            _evaluation_chart("guardrail/pii/pii_leak", s.evaluation_warmup_events),
            _guardrail_score(1.0),
            _guardrail_score(4.0),
            _many,
            lambda a: bernoulli_cusum_delay(GUARDRAIL_BLOCK_RATE, 4 * GUARDRAIL_BLOCK_RATE, a),
            split=_score_test,
            changed="up:mean",
        )
    )
    # An LLM judge's 1-5 score: five values, so ranks tie in blocks of dozens; its shift
    # moves a tenth of the mass from the top two scores to the bottom two.
    out.append(
        Kind(
            "judge score (1-5)",
            3,
            _evaluation_chart("judge/quality/score", s.evaluation_warmup_events),
            _judge_score(JUDGE_SCORES),
            _judge_score(JUDGE_SCORES_DROPPED),
            _many,
            None,
            split=_score_test,
            changed="down:mean",
        )
    )
    _designs = {"shift": 0.5, "designs": SCORE_DESIGNS}
    for name, cls, gen, kw in (
        (
            "drift numeric",
            NumericDrift,
            _numeric,
            {"features": ("a", "b", "c")} | _designs,
        ),
        ("drift categorical", CategoricalDrift, _categorical, {"features": ("locale",)}),
        ("drift label_mix", LabelMixDrift, _labels, {}),
        ("drift embedding", EmbeddingDrift, _embedding, {}),
        # a model or version key's: the distance also charted
        ("drift embedding charted", EmbeddingDrift, _embedding, _designs),
    ):
        out.append(
            Kind(
                name,
                1,
                lambda a, cls=cls, kw=kw: cls(arl0=a, reference_size=1000, window=200, **kw),  # type: ignore[misc]
                gen,
                None,
                _many,
                None,
            )
        )
    return out


def cycle_arl0(arl0: float, block: int, cycle: bool) -> float:
    """The run length of block ``block``: ``arl0`` on average over a day whose traffic
    swings 3x (night to day), rounded and moved with the pipeline's grid and hysteresis."""
    if not cycle:
        return arl0
    phase = 2 * math.pi * (block % BLOCKS_PER_DAY) / BLOCKS_PER_DAY
    return budget.on_grid(arl0 * (1.0 + 0.5 * math.sin(phase)))


def _blocks(total: int, size: int) -> Iterator[int]:
    done = 0
    while done < total:
        n = min(size, total - done)
        yield n
        done += n


def run_clean(kind: Kind, arl0: float, seeds: int, events: int, cycle: bool) -> dict[str, Tally]:
    """False alarms over ``seeds`` clean streams of ``events`` events, per test name."""
    tallies: dict[str, Tally] = {}
    for seed in range(seeds):
        rng = np.random.default_rng([19, seed, zlib.crc32(kind.name.encode())])
        det = kind.build(arl0)
        current = arl0
        ready_events = 0
        ready_nominal = 0.0
        for b, n in enumerate(_blocks(events, BLOCK)):
            want = cycle_arl0(arl0, b, cycle)
            if budget.moved(current, want):
                current = want
                budget.retarget(det, want / kind.tests)
            # While the detector learns, feed it in steps of WARM_STEP events so that
            # the events it could alarm on are counted to within one step.
            step = n if det.alarm_ready else WARM_STEP
            for m in _blocks(n, step):
                ready = det.alarm_ready or kind.scans
                for s in kind.feed(det, kind.clean(rng, m)):
                    tallies.setdefault(kind.split(s), Tally()).alarms += 1
                if ready or det.alarm_ready:
                    ready_events += m
                    ready_nominal += m / current
        for t in [tallies.setdefault(k, Tally()) for k in _test_names(kind, det)]:
            t.exposure += ready_events
            t.nominal += ready_nominal
    return tallies


def _test_names(kind: Kind, det: Detector[Any]) -> list[str]:
    if isinstance(det, HarmRate):
        return [*det.categories, POOLED]
    if isinstance(det, ConfidenceShift):
        return ["up:mean", "down:mean", "both:distribution"]
    return [""]


def run_delay(kind: Kind, arl0: float, seeds: int, before: int) -> list[int]:
    """Events from a shift to the first alarm after it (alarms before it are skipped)."""
    assert kind.shifted is not None
    delays = []
    for seed in range(seeds):
        rng = np.random.default_rng([91, seed, zlib.crc32(kind.name.encode())])
        det = kind.build(arl0)
        for n in _blocks(before, BLOCK):
            kind.feed(det, kind.clean(rng, n))
        seen = 0
        while seen < 20 * BLOCK:
            signals = [s for s in kind.feed(det, kind.shifted(rng, 1000)) if _hit(kind, s)]
            if signals:
                first = min(s.last_index for s in signals)
                delays.append(first - before + 1)
                break
            seen += 1000
    return delays


def _hit(kind: Kind, signal: Signal) -> bool:
    """Whether ``signal`` comes from the test the shift changed (others are false alarms)."""
    test, side = kind.split(signal), kind.changed.removesuffix(":mean")
    return test == kind.changed or (side != kind.changed and test.startswith(f"{side}:"))


@dataclass(frozen=True)
class Segment:
    """A young segment's clean scores, against its parent's (normal, mean 0.8, sd 0.1)."""

    name: str
    draw: Callable[[np.random.Generator, int], NDArray[np.float64]]


SEGMENTS = [
    Segment("as the parent", lambda rng, n: rng.normal(0.8, 0.1, n)),
    Segment("mean -2 sd, spread 0.5x", lambda rng, n: rng.normal(0.6, 0.05, n)),
    Segment("mean +1 sd, spread 2x", lambda rng, n: rng.normal(0.9, 0.2, n)),
    Segment("skewed (beta 8,2), mean -0.2 sd", lambda rng, n: 0.4 + 0.5 * rng.beta(8.0, 2.0, n)),
    Segment("1-5 judge, rounded", lambda rng, n: np.clip(np.rint(rng.normal(3.5, 0.8, n)), 1, 5)),
    Segment("numeric input, exponential, 2x scale", lambda rng, n: rng.exponential(2.0, n)),
]
"""Clean segments whose own distribution sits apart from their parent's in location,
spread and shape (the judge is charted on ranks, see :mod:`detectors.score_shift`)."""


def _young_chart(judge: bool, numeric: bool, arl0: float, size: int) -> Detector[Any]:
    """A score chart (or numeric drift on one feature) whose mean tests each run at
    ``arl0``: a score chart splits its ARL0 over 3 tests, numeric drift gives its mean
    tests half of it over 2 directions per feature."""
    if numeric:
        return NumericDrift(
            features=("x",), arl0=arl0 / 4, reference_size=size, designs=SCORE_DESIGNS
        )
    cls = EvaluationScoreShift if judge else ConfidenceShift
    return cls(arl0=arl0 / 3, reference_size=size, designs=SCORE_DESIGNS)


def _young_rows(numeric: bool, values: NDArray[np.float64]) -> list[Any]:
    return [{"x": v} for v in values.tolist()] if numeric else values.tolist()


def run_young(arl0: float, seeds: int, reference_size: int, prior_events: int) -> None:
    """False alarms of young segments' score charts while they chart on their parent's
    shape (:meth:`detectors.confidence.ConfidenceShift.adopt_prior`): each seed is a new
    segment that adopts a parent fitted on its own ``reference_size`` values, then charts
    from its ``prior_events``-th value until its own reference is complete. Only those
    charted values count; each direction's test runs at ``arl0`` (the pipeline's split)."""
    print(
        f"\nyoung segments on their parent's shape: {seeds} segments per row, reference "
        f"{reference_size}, charting from value {prior_events}; per-test ARL0 {arl0:.3g}"
    )
    print(
        f"{'segment':38} {'charted':>9} {'alarms':>6} {'nominal':>8} {'measured/nominal [95%]':>24}"
    )
    for segment in SEGMENTS:
        judge = segment.name.startswith("1-5")
        numeric = segment.name.startswith("numeric")
        rng = np.random.default_rng([13, zlib.crc32(segment.name.encode())])
        if judge:
            own = np.clip(np.rint(rng.normal(4.0, 0.8, reference_size)), 1, 5)
        else:
            own = rng.exponential(1.0, reference_size) if numeric else rng.normal(0.8, 0.1, 1000)
        parent = _young_chart(judge, numeric, arl0, reference_size)
        parent.update_many(_young_rows(numeric, own))
        charted = alarms = 0
        for _ in range(seeds):
            young = _young_chart(judge, numeric, arl0, reference_size)
            young.adopt_prior(parent, prior_events)  # type: ignore[attr-defined]
            for v in _young_rows(numeric, segment.draw(rng, reference_size - 1)):
                ready = young.alarm_ready
                alarms += young.update(v) is not None
                charted += ready
        nominal = charted * 2 / arl0  # two mean tests (the window test starts later)
        lo, hi = garwood(alarms)
        print(
            f"{segment.name:38} {charted:9d} {alarms:6d} {nominal:8.2f} "
            f"{alarms / nominal:8.2f} [{lo / nominal:5.2f}, {hi / nominal:5.2f}]"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes, ~5 M events")
    parser.add_argument("--arl0", type=float, default=1e5, help="per-test ARL0 (events)")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--events", type=int, default=None, help="events per seed")
    parser.add_argument("--no-cycle", action="store_true", help="fixed run length")
    parser.add_argument(
        "--only", default="", help="kinds whose name contains one of these (comma-separated)"
    )
    parser.add_argument(
        "--young",
        action="store_true",
        help="only the young segments' score charts on their parent's shape",
    )
    args = parser.parse_args(argv)
    if args.young:
        s = load_settings(env={}).detection
        run_young(
            args.arl0,
            args.seeds or (300 if args.quick else 2000),
            s.warmup_events,
            round(s.segment_prior_events),
        )
        return
    seeds = args.seeds or (6 if args.quick else 24)
    events = args.events or (200_000 if args.quick else 400_000)
    cycle = not args.no_cycle
    traffic = args.arl0 / WEEK_S
    print(
        f"per-test ARL0 {args.arl0:.3g} events; stated traffic {traffic:.3g} events/s at the "
        f"key ({traffic * 86400:.0f} a day), where one test's nominal is 1 false page/week; "
        f"{seeds} seeds x {events} events per kind; traffic cycle {'on' if cycle else 'off'}"
    )
    header = (
        f"{'kind':34} {'test':22} {'alarms':>6} {'nominal/wk':>10} {'measured/wk [95%]':>24} "
        f"{'delay':>8} {'exact':>8} {'Mev/s':>6}"
    )
    print(header)
    total = 0
    for kind in kinds():
        if args.only and not any(part in kind.name for part in args.only.split(",")):
            continue
        n = seeds * events
        if kind.name.startswith(("drift", "confidence")):
            n_seeds, n_events = max(2, seeds // 4), events // 2  # per-event Python paths
        else:
            n_seeds, n_events = seeds, events
        t0 = time.perf_counter()
        tallies = run_clean(kind, args.arl0, n_seeds, n_events, cycle)
        dt = time.perf_counter() - t0
        n = n_seeds * n_events
        total += n
        delays: list[int] = []
        if kind.shifted is not None:
            delays = run_delay(kind, args.arl0, max(3, n_seeds // 2), 4 * BLOCK)
        for test, tally in sorted(tallies.items()):
            r = tally.row(args.arl0)
            # The exact CUSUM watches the changed test at that test's measured run length
            # (the nominal one when it raised no false alarm).
            measured_arl0 = tally.exposure / tally.alarms if tally.alarms else args.arl0
            measured_arl0 = max(measured_arl0, 2.0)
            on_changed = test == kind.changed and bool(delays)
            exact = kind.oracle(measured_arl0) if on_changed and kind.oracle else math.nan
            delay = float(np.mean(delays)) if on_changed else math.nan
            print(
                f"{kind.name:34} {test or '-':22} {r['alarms']:6d} {r['nominal_week']:10.2f} "
                f"{r['measured_week']:8.2f} [{r['low_week']:5.2f}, {r['high_week']:5.2f}] "
                f"{_num(delay):>8} {_num(exact):>8} {n / dt / 1e6:6.2f}"
            )
    print(f"total clean events: {total / 1e6:.1f} M")


def _num(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.0f}"


if __name__ == "__main__":
    main()
