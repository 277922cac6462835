"""What request sampling costs a busy model's detection (``detection.sample_fractions``).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.sampling [--fraction F] [--quick]

A model busier than one worker can detect on is sampled (docs/operations.md, "A model
busier than one worker"). This replays, for a busy model (``--requests-per-hour``,
default 72,000: 20x the quality benchmark's traffic), one scenario per injection type
twice, once with detection on every request and once on ``--fraction`` of them, and
prints per injection when each first paged (the quality benchmark's matching rule:
type, labels, window + 30 min), in event-time minutes after the injection began, and the
replay's CPU time; then the same for a clean stretch (false incidents). Each scenario:
the traffic from 09:00 for ``--hours`` (default 3) with the injection 2 h in (every key
has warmed up on the sample by then) lasting 30 min, model-wide on support-chat at the
simulator's default strength.

The sample's delays in its own observations are the full stream's (a CUSUM needs the
same evidence), so in minutes they grow by about ``1 / fraction``; on a model this busy
that is minutes at most. Single-event pages (critical outputs) are not sampled.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

# Run as a script, ``bench/`` is first on sys.path: put the repository first.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.quality import Injected, Trigger, in_pool, matches
from streams.devtools.scenario import DEFAULT_STRENGTH, Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.replay import replay_lines
from streams.settings import load_settings

TYPES: Final = (
    "toxicity_spike",
    "harm_spike",
    "confidence_drop",
    "input_drift",
    "hallucination_wave",
    "judge_score_drop",
    "guardrail_block_spike",
    "downvote_spike",
)
QUICK_TYPES: Final = ("toxicity_spike", "harm_spike", "confidence_drop", "judge_score_drop")
MODEL: Final = "support-chat"
START: Final = datetime(2025, 1, 6, 9, tzinfo=UTC)
INJECTED_AT: Final = timedelta(hours=2)
LASTING: Final = timedelta(minutes=30)


@dataclass(frozen=True)
class Case:
    """One scenario replayed at one fraction (picklable, for the process pool)."""

    kind: str  # an injection type, or "clean"
    fraction: float
    seed: int
    hours: float
    requests_per_hour: int


@dataclass(frozen=True)
class Outcome:
    case: Case
    delay_min: float | None  # first matching trigger after the injection's start
    triggers: int
    events: int
    cpu_s: float


def scenario(case: Case) -> Scenario:
    injections = []
    if case.kind != "clean":
        injections.append(
            Injection(
                type=case.kind,
                start=INJECTED_AT,
                duration=LASTING,
                strength=DEFAULT_STRENGTH[case.kind],
                scope={"model": MODEL},
            )
        )
    return Scenario(
        seed=case.seed,
        start=START,
        duration=timedelta(hours=case.hours),
        events_per_hour=case.requests_per_hour,
        injections=injections,
    )


def run(case: Case) -> Outcome:
    """Simulate and replay one case; the first matching trigger's delay."""
    cpu = time.process_time()
    sim = Simulator(scenario(case))
    fractions = {MODEL: case.fraction} if case.fraction < 1.0 else {}
    settings = load_settings(env={}, overrides={"detection.sample_fractions": fractions})
    result = replay_lines((line.encode() for line in sim.lines()), settings)
    triggers = [Trigger.from_event(e) for e in result.incidents if e.action == "trigger"]
    delay = None
    for entry in sim.ground_truth()["injections"]:
        inj = Injected.from_ground_truth(entry)
        hits = sorted(t.at for t in triggers if matches(inj, t))
        if hits:
            delay = (hits[0] - inj.start).total_seconds() / 60.0
    return Outcome(case, delay, len(triggers), result.events, time.process_time() - cpu)


def _min(x: float | None) -> str:
    return f"{x:.1f}" if x is not None else "missed"


def report(outcomes: Sequence[Outcome], fraction: float) -> list[str]:
    """The table: per scenario, every request against the sample."""
    by = {(o.case.kind, o.case.fraction): o for o in outcomes}
    kinds = list(dict.fromkeys(o.case.kind for o in outcomes))
    lines = [
        f"{'scenario':24} {'every request [min]':>19} {f'sampled {fraction:g} [min]':>20} "
        f"{'ratio':>6} {'CPU every [s]':>13} {'CPU sampled [s]':>15} {'triggers':>9}"
    ]
    for kind in kinds:
        full, part = by[(kind, 1.0)], by[(kind, fraction)]
        ratio = (
            f"{part.delay_min / full.delay_min:6.2f}"
            if full.delay_min and part.delay_min is not None
            else f"{'n/a':>6}"
        )
        shown = ("-", "-") if kind == "clean" else (_min(full.delay_min), _min(part.delay_min))
        lines.append(
            f"{kind:24} {shown[0]:>19} {shown[1]:>20} {ratio} "
            f"{full.cpu_s:13.1f} {part.cpu_s:15.1f} {full.triggers:>4} {part.triggers:>4}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--fraction", type=float, default=0.1, help="sampled share (0.1)")
    parser.add_argument("--requests-per-hour", type=int, default=72_000)
    parser.add_argument("--hours", type=float, default=3.0, help="each scenario's length")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_TYPES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    if not 0.0 < args.fraction < 1.0:
        parser.error("--fraction must be in (0, 1)")
    if args.requests_per_hour < 1 or args.hours * 3600 <= (INJECTED_AT + LASTING).seconds:
        parser.error("--requests-per-hour must be >= 1 and --hours longer than 2.5")
    kinds = [*(QUICK_TYPES if args.quick else TYPES), "clean"]
    cases = [
        Case(kind, f, args.seed + i, args.hours, args.requests_per_hour)
        for i, kind in enumerate(kinds)
        for f in (1.0, args.fraction)
    ]
    # Slowest first: the full replays.
    ordered = sorted(cases, key=lambda c: -c.fraction)
    outcomes = in_pool(
        run,
        ordered,
        args.jobs,
        lambda out: (
            f"{out.case.kind} at {out.case.fraction:g}: {out.events:,} events, "
            f"{out.triggers} trigger(s), {out.cpu_s:.1f} CPU-s"
        ),
    )
    print(
        f"\n{MODEL} at {args.requests_per_hour:,} requests/h, {args.hours:g} h per scenario, "
        f"injected {INJECTED_AT} in for {LASTING}; detection on every request and on "
        f"{args.fraction:g} of them (detection.sample_fractions)"
    )
    print("\n".join(report(outcomes, args.fraction)))
    print(
        "minutes: first matching trigger after the injection began (event time); "
        "ratio: sampled / every request; triggers: every request, sampled (clean: false)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
