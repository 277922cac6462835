"""``sentinel simulate``: realistic traffic with injected failures, to Kafka or a file."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from alerting.clock import parse_duration
from alerting.policy import read_toml
from streams.cli.common import connect, output_file, refuse_same_file
from streams.contract.jsonl import JSONL_FORMAT
from streams.devtools.scenario import INJECTION_TYPES, Scenario, parse_injection
from streams.devtools.sim_requests import TRAIL_S
from streams.devtools.simulate import Simulator, publish, write_jsonl
from streams.progress import showing_progress
from streams.settings import load_settings


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``sentinel simulate`` options to a (sub)parser; the handler is :func:`run_simulate`."""
    p = parser
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--start", default=None, help="event-time start, ISO 8601 with offset")
    p.add_argument("--duration", default=None, help="event-time length: 7d, 2h, ... (1d)")
    p.add_argument(
        "--events-per-hour",
        type=float,
        default=None,
        help="requests per hour (default 3600); each makes an input and an output event, "
        "some also feedback and evaluations",
    )
    p.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="TYPE:START:DURATION[:STRENGTH[:SCOPE]]",
        help="inject a failure, e.g. toxicity_spike:2d:6h:5:model=support-chat,tenant=acme. "
        "A harm_spike names its category in the scope: category=sexual. "
        "Types: " + "; ".join(f"{k} ({v})" for k, v in INJECTION_TYPES.items()),
    )
    p.add_argument("--scenario", type=Path, default=None, help="scenario file (.json/.toml)")
    p.add_argument("--out", type=Path, default=None, help="write JSONL here instead of Kafka")
    p.add_argument(
        "--ground-truth",
        type=Path,
        default=None,
        help="ground-truth JSON (default: OUT with .truth.json, or ./ground-truth.json)",
    )
    p.add_argument("--rate", type=_rate, default=0.0, help="Kafka: events/s, 0 = unthrottled")
    p.add_argument(
        "--broker",
        default=None,
        help="Kafka: kafka://host:port (default: config, else the running local broker)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of events/s: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be >= 0 events/s: {text!r}")
    return value


def _scenario_file(path: Path) -> dict[str, Any]:
    """A scenario file's keys: a ``.toml`` table or a ``.json`` object."""
    if path.suffix not in (".toml", ".json"):
        raise ValueError(f"scenario {path}: a .toml or .json file is expected")
    if path.suffix == ".toml":
        data: Any = read_toml(path)
    else:
        try:
            data = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"scenario {path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"scenario {path}: expected an object of scenario keys")
    return data


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    data: dict[str, Any] = {}
    if args.scenario is not None:
        data = _scenario_file(args.scenario)
    if args.seed is not None:
        data["seed"] = args.seed
    if args.start is not None:
        data["start"] = args.start
    if args.duration is not None:
        data["duration"] = parse_duration(args.duration)
    elif isinstance(data.get("duration"), str) and not data["duration"].startswith("P"):
        data["duration"] = parse_duration(data["duration"])
    if args.events_per_hour is not None:
        data["events_per_hour"] = args.events_per_hour
    listed = data.get("injections", [])
    if not isinstance(listed, list) or not all(isinstance(i, dict) for i in listed):
        raise ValueError("scenario: injections must be a list of tables (objects)")
    injections = [dict(i) for i in listed]
    for inj in injections:
        for key in ("start", "duration"):
            if isinstance(inj.get(key), str) and not inj[key].startswith("P"):
                inj[key] = parse_duration(inj[key])
    data["injections"] = injections + [parse_injection(spec).model_dump() for spec in args.inject]
    return Scenario.model_validate(data)


def ending_by(scenario: Scenario, now: datetime) -> Scenario:
    """``scenario`` moved so that its events end by ``now``: to Kafka, as a worker
    dead-letters events older than ``detection.max_past_hours`` (the fixed default start
    is for reproducible files) and more than a few minutes in the future. The simulated
    period ends :data:`TRAIL_S` before ``now``, so that its last feedback and evaluations
    are not in the future either."""
    end = now - timedelta(seconds=TRAIL_S)
    return scenario.model_copy(update={"start": end - scenario.duration})


def _write_truth(sim: Simulator, out: IO[str]) -> None:
    out.write(json.dumps(sim.ground_truth(), indent=2) + "\n")


def run_simulate(args: argparse.Namespace) -> int:
    """Handler for ``sentinel simulate`` (namespace from :func:`add_simulate_arguments`)."""
    scenario = scenario_from_args(args)
    if args.out is None and args.start is None and args.scenario is None:
        scenario = ending_by(scenario, datetime.now(UTC))
    sim = Simulator(scenario)
    say = None if args.quiet else sys.stderr  # progress and the closing lines
    to_stdout = args.out is not None and str(args.out) == "-"
    if args.out is not None and not to_stdout:
        truth_path = args.ground_truth or args.out.with_suffix(".truth.json")
        refuse_same_file(args.out, "events file", truth_path)
        began = time.monotonic()
        with (
            showing_progress("sentinel simulate", enabled=say is not None) as progress,
            output_file(args.out) as f,
            output_file(truth_path) as truth,
        ):
            n = write_jsonl(sim, f, progress)
            _write_truth(sim, truth)
        if say is not None:
            say.write(
                f"sentinel simulate: {n} events ({JSONL_FORMAT}) -> {args.out} "
                f"in {time.monotonic() - began:.1f} s\n"
            )
    elif to_stdout:
        truth_path = args.ground_truth or Path("ground-truth.json")
        with output_file(truth_path) as truth:
            write_jsonl(sim, sys.stdout)
            _write_truth(sim, truth)
    else:
        # --broker is validated as kafka.broker is ("," or ";" between brokers).
        broker = {"kafka.broker": args.broker.replace(",", ";")} if args.broker else {}
        settings = load_settings(getattr(args, "config", None), overrides=broker)
        # --broker, the configured broker, or the local one that `sentinel run` started;
        # a refused login fails here, saying why, not after the producer's retries.
        try:
            settings, servers = connect(settings)
        except ValueError as exc:
            raise ValueError(f"{exc}; or pass --broker, or write a file with --out") from exc
        truth_path = args.ground_truth or Path("ground-truth.json")
        began = time.monotonic()
        with (
            showing_progress("sentinel simulate", enabled=say is not None) as progress,
            output_file(truth_path) as truth,
        ):
            n = publish(
                sim,
                servers,
                settings.topics,
                rate=args.rate,
                progress=progress,
                security=settings.kafka.security,
            )
            _write_truth(sim, truth)
        if say is not None:
            say.write(
                f"sentinel simulate: {n} events published in {time.monotonic() - began:.1f} s\n"
            )
    if say is not None:
        say.write(f"sentinel simulate: ground truth -> {truth_path}\n")
    return 0
