"""False pages in a simulated week of clean traffic, through the whole pipeline (issue 19).

    .venv/bin/python -m bench.week [--days 7] [--requests-per-day 40000] [--seed 19] [--jobs N]

Issue 19's third goal: fewer than one false page a week of clean traffic at 40k requests a
day, with deploys, bursts and new tenants. Nothing is injected, so every incident is false.
The week is several simulator streams merged by event time (each is an ordinary
:class:`~streams.devtools.simulate.Scenario`, so each part has the simulator's daily cycle,
late events and rare rates):

* the base traffic at ``--requests-per-day``, whose first part runs the default model
  versions;
* **deploys**: at 40 % of the week every model moves to a new version of the same quality
  (a fresh version key learns its baselines while pages stay possible);
* **bursts**: on days 1, 3 and 5 at 14:00, one hour at ten times the traffic;
* **new tenants**: from day 2, three tenants never seen before send 15 % more traffic.

The merged lines go through :func:`streams.pipeline.replay.replay_lines` with the service's
default settings (``false_pages_per_week`` from ``config/sentinel.toml``). Printed: the
events and their span, every trigger (type, scope, severity), the pages (SEV1-2 triggers
and reopenings) scaled to a week, and the replay speed. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import heapq
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from alerting.model import IncidentAction
from bench.quality import Trigger
from streams.devtools.scenario import ModelSpec, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.replay import replay_lines
from streams.progress import progress_bar
from streams.settings import load_settings

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
DEPLOY_AT = 0.4
"""When the models move to their new versions, as a fraction of the run."""
BURST_DAYS = (1, 3, 5)
BURST_HOUR = 14
BURST_FACTOR = 10.0
NEW_TENANTS = ["newco", "bigbank", "startup-x"]
NEW_TENANT_SHARE = 0.15


@dataclass(frozen=True)
class Part:
    """One simulator stream of the week: what it adds, for the printout."""

    what: str
    scenario: Scenario


def _models(deployed: bool) -> list[ModelSpec]:
    base = Scenario().models
    if not deployed:
        return list(base)
    return [m.model_copy(update={"version": m.version + "-next"}) for m in base]


def week_parts(days: float, requests_per_day: float, seed: int) -> list[Part]:
    """The streams that make up the run (see the module docstring)."""
    start = Scenario().start
    span = timedelta(days=days)
    deploy = start + span * DEPLOY_AT
    per_hour = requests_per_day / 24.0

    def piece(
        what: str, k: int, begin: datetime, end: datetime, rate: float, **kw: object
    ) -> list[Part]:
        """``[begin, end)`` cut at the deploy, each side with its model versions."""
        out = []
        for lo, hi, deployed in ((begin, min(end, deploy), False), (max(begin, deploy), end, True)):
            if hi > lo:
                sc = Scenario(
                    seed=seed * 100 + k * 2 + deployed,
                    start=lo,
                    duration=hi - lo,
                    events_per_hour=rate,
                    models=_models(deployed),
                    **kw,
                )
                out.append(Part(what, sc))
        return out

    parts = piece("base traffic", 0, start, start + span, per_hour)
    for i, day in enumerate(d for d in BURST_DAYS if d < days):
        at = start + day * DAY + BURST_HOUR * HOUR
        parts += piece(
            f"burst x{BURST_FACTOR:g}", 1 + i, at, at + HOUR, per_hour * (BURST_FACTOR - 1)
        )
    if days > 2:
        parts += piece(
            "new tenants",
            9,
            start + 2 * DAY,
            start + span,
            per_hour * NEW_TENANT_SHARE,
            tenants=NEW_TENANTS,
        )
    return parts


def _timestamp(line: str) -> str:
    i = line.index('"timestamp":"') + 13
    return line[i : i + 24]


def merged_lines(parts: list[Part]) -> Iterator[bytes]:
    """Every part's lines, merged by event time (each part is in time order up to its late
    events, which stay late in the merge)."""
    streams = [Simulator(p.scenario).lines() for p in parts]
    for line in heapq.merge(*streams, key=_timestamp):
        yield line.encode()


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (detection processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0, help="event-time length (days)")
    parser.add_argument("--requests-per-day", type=float, default=40_000.0)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="detection processes (sentinel replay --jobs): the models split between them, "
        "each with 1/N of the budget, as N workers",
    )
    args = parser.parse_args(argv)
    if args.days <= 0 or args.requests_per_day <= 0 or args.jobs < 1:
        parser.error("--days and --requests-per-day must be > 0, --jobs >= 1")
    parts = week_parts(args.days, args.requests_per_day, args.seed)
    print(f"{args.days:g} days at {args.requests_per_day:,.0f} requests/day, seed {args.seed}:")
    for p in parts:
        sc = p.scenario
        versions = ",".join(f"{m.name}={m.version}" for m in sc.models)
        print(
            f"  {p.what:<13} {sc.start:%a %H:%M} + {sc.duration.total_seconds() / 3600:6.1f} h "
            f"at {sc.events_per_hour:8,.0f} requests/h  ({versions})"
        )
    settings = load_settings(env={})
    began, cpu = time.perf_counter(), _cpu_seconds()
    result = replay_lines(
        merged_lines(parts), settings, progress=progress_bar("  replayed"), jobs=args.jobs
    )
    wall, cpu = time.perf_counter() - began, _cpu_seconds() - cpu
    triggers = [
        Trigger.from_event(e) for e in result.incidents if e.action == IncidentAction.TRIGGER
    ]
    pages = [t for t in triggers if t.pages]
    print(
        f"\n{result.lines:,} lines, {result.events:,} events, {result.dead_letters} dead letters; "
        f"budget {settings.detection.false_pages_per_week:g} false pages/week"
    )
    print(f"triggers: {len(triggers)} (all false: nothing was injected)")
    for t in triggers:
        where = " ".join(
            [t.model, f"version={t.version}" if t.version else "all versions"]
            + [f"{k}={v}" for k, v in sorted(t.segment.items())]
        )
        again = "  (reopened)" if t.reopened else ""
        print(f"  {t.at:%a %H:%M} {t.severity} {t.incident_type} {where}{again}")
    per_week = len(pages) * 7.0 / args.days
    print(
        f"false pages: {len(pages)} in {args.days:g} days = {per_week:.2f} per week "
        f"(goal < 1 per week: {'PASS' if per_week < 1.0 else 'MISS'})"
    )
    speed = result.lines / max(cpu, 1e-9)
    on = f" on {args.jobs} detection processes" if args.jobs > 1 else ""
    print(
        f"replay{on}: {wall:.0f} s wall ({result.lines / max(wall, 1e-9):,.0f} lines/s), "
        f"{cpu:.0f} s CPU, {speed:,.0f} lines per CPU-second"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
