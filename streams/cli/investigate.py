"""``sentinel`` subcommands for analysts and incident commanders.

  incidents               list incidents from the alerts topic (latest state per incident)
  investigate ID          the events behind an incident: audit trail, statistic, plot
  postmortem ID           a Markdown root-cause-analysis draft
  backtest                two configurations over the same history: what changes

Times are ISO 8601 with an offset (``2025-01-06T02:00:00Z``), ``now``, or ``now-6h``.
Bad input exits 2 with a message; an unknown incident id exits 1. See
``docs/investigation.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from alerting.clock import SYSTEM_CLOCK, Clock
from alerting.model import IncidentEvent, Severity, time_text
from streams.cli.common import (
    check_output_path,
    connected,
    name_arg,
    parse_time,
    say,
    settings_of,
)
from streams.settings import Settings, load_settings

if TYPE_CHECKING:
    from streams.investigation.history import BacktestResult


def _history(settings: Settings) -> Any:
    """A history reader on ``settings``' broker; the settings come from :func:`connected`,
    so a running local broker serves when none is configured, as for every command."""
    from streams.investigation.kafka_read import KafkaHistory

    return KafkaHistory(settings)


def _incident_events(
    settings: Settings, history: Any, topic: str | None, incident_id: str
) -> list[IncidentEvent] | None:
    from streams.investigation.incidents import read_incident_log

    log = read_incident_log(history, topic or settings.topics.alerts)
    try:
        return log.history(incident_id)
    except LookupError:
        return None


def _unknown(incident_id: str, topic: str) -> int:
    say(f"unknown incident id {incident_id!r}: no event for it on topic {topic!r}")
    return 1


# ----------------------------------------------------------------------- incidents


def cmd_incidents(args: argparse.Namespace, *, clock: Clock = SYSTEM_CLOCK) -> int:
    from streams.investigation.incidents import (
        HEADERS,
        IncidentFilter,
        format_table,
        read_incident_log,
        select,
        table_rows,
    )

    now = clock.now()
    flt = IncidentFilter(
        model=args.model,
        severity=Severity(args.severity) if args.severity else None,
        incident_type=args.type,
        since=parse_time(args.since, now) if args.since else None,
        until=parse_time(args.until, now) if args.until else None,
        status=args.status,
    )
    settings = connected(settings_of(args))
    topic = args.alerts_topic or settings.topics.alerts
    with _history(settings) as history:
        log = read_incident_log(history, topic)
    rows = select(log, flt)
    if args.format == "json":
        for ev in rows:
            print(ev.model_dump_json())
    else:
        print(format_table(HEADERS, table_rows(rows, now)))
    skipped = f", {log.invalid} invalid records skipped" if log.invalid else ""
    say(f"{len(rows)} of {len(log.events)} incidents on {topic}{skipped}")
    return 0


# --------------------------------------------------------------------- investigate


def cmd_investigate(args: argparse.Namespace, *, clock: Clock = SYSTEM_CLOCK) -> int:
    from alerting.clock import parse_duration
    from streams.investigation.audit import investigate
    from streams.investigation.chart import plot_series, series_to_json
    from streams.investigation.report import format_investigation

    lookback = parse_duration(args.lookback)
    if args.limit < 0:
        raise ValueError("--limit must be >= 0")
    for path in (args.plot, args.series_json):
        if path is not None:
            check_output_path(path)
    settings = connected(settings_of(args))
    topic = args.alerts_topic or settings.topics.alerts
    with _history(settings) as history:
        events = _incident_events(settings, history, topic, args.incident_id)
        if events is None:
            return _unknown(args.incident_id, topic)
        inv = investigate(
            settings, events, history, lookback=lookback, show_text=args.show_text, clock=clock
        )
    print(format_investigation(inv, limit=args.limit))
    if args.plot is not None:
        if inv.series is None or not inv.series.times:
            say("nothing to plot: no observations of the incident's key were found")
            return 1
        title = f"{inv.incident.incident_id}: {inv.incident.incident_type} on " + (
            inv.incident.labels.describe()
        )
        plot_series(inv.series, args.plot, title, inv.events)
        say(f"plot written to {args.plot}")
    if args.series_json is not None and inv.series is not None:
        args.series_json.write_text(json.dumps(series_to_json(inv.series)) + "\n")
    return 0


# ---------------------------------------------------------------------- postmortem


def cmd_postmortem(args: argparse.Namespace, *, clock: Clock = SYSTEM_CLOCK) -> int:
    from datetime import timedelta

    from streams.investigation.audit import investigate
    from streams.investigation.postmortem import (
        find_playbook,
        impact_of,
        read_containment,
        render_postmortem,
    )

    if args.out is not None and args.out.is_dir():
        raise ValueError(f"output {args.out} is a directory: give a file name")
    settings = connected(settings_of(args))
    topic = args.alerts_topic or settings.topics.alerts
    with _history(settings) as history:
        events = _incident_events(settings, history, topic, args.incident_id)
        if events is None:
            return _unknown(args.incident_id, topic)
        containment = read_containment(history, settings.topics.control, args.incident_id)
        # The evidence records only (no look-back): who was affected, and from when.
        inv = investigate(settings, events, history, lookback=timedelta(0), clock=clock)
    playbook = find_playbook(events, str(settings.detection.playbooks_dir))
    text = render_postmortem(
        events,
        containment,
        playbook,
        control_topic=settings.topics.control,
        generated_at=clock.now(),
        impact=impact_of(events, inv),
    )
    if args.out is None:
        print(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        say(f"postmortem draft written to {args.out}")
    return 0


# ------------------------------------------------------------------------ backtest


def format_backtest(result: Any) -> str:
    from streams.investigation.incidents import format_table

    headers = (
        "CHANGE",
        "TYPE",
        "SCOPE",
        "TRIGGER A (UTC)",
        "TRIGGER B (UTC)",
        "SHIFT (min)",
        "SEV A",
        "SEV B",
    )
    rows = []
    for row in result.rows:
        a, b = row.baseline, row.candidate
        side = a or b
        shift = row.shift_minutes
        rows.append(
            (
                row.change,
                side.incident_type,
                side.labels,
                time_text(a.triggered_at) if a else "-",
                time_text(b.triggered_at) if b else "-",
                f"{round(shift, 1) + 0.0:+.1f}" if shift is not None else "-",  # never "-0.0"
                a.worst_severity.value if a else "-",
                b.worst_severity.value if b else "-",
            )
        )
    counts = result.counts()
    read = result.baseline  # both runs read the same lines
    summary = (
        f"{read.events:,} events, {read.dead_letters:,} dead letters; "
        f"A: {len(result.baseline.incidents)} incident events, B: "
        f"{len(result.candidate.incidents)}; unchanged {counts['unchanged']}, severity "
        f"changed {counts['severity']}, appeared {counts['appeared']}, disappeared "
        f"{counts['disappeared']}"
    )
    return (format_table(headers, rows) if rows else "no incidents in either run") + "\n" + summary


def _history_range(
    args: argparse.Namespace, clock: Clock, without_start: str
) -> tuple[datetime, datetime]:
    """``--from`` (required: ``without_start`` says so) and ``--to`` (default now), checked
    before anything connects."""
    from streams.investigation.history import check_range

    if args.start is None:
        raise ValueError(without_start)
    now = clock.now()
    start, end = parse_time(args.start, now), parse_time(args.end or "now", now)
    check_range(start, end)
    return start, end


def _backtest(
    args: argparse.Namespace, baseline: Settings, candidate: Settings, clock: Clock
) -> BacktestResult:
    """The two configurations over ``--input`` or over Kafka history ``--from``/``--to``."""
    from streams.investigation.history import backtest_kafka, backtest_lines

    if args.input is not None:
        if args.start is not None or args.end is not None:
            raise ValueError("--input replays a file: --from/--to apply to Kafka history only")
        stdin = str(args.input) == "-"
        if not stdin and not args.input.is_file():
            raise ValueError(f"input file not found: {args.input}")
        # stdin is read once, so held; a file is read again for each configuration
        lines = sys.stdin.buffer.read().splitlines() if stdin else args.input
        progress = not args.no_progress
        result = backtest_lines(lines, baseline, candidate, clock=clock, progress=progress)
        result.baseline.require_events("standard input" if stdin else str(args.input))
        return result
    start, end = _history_range(args, clock, "backtest over Kafka needs --from TIME (or --input)")
    return backtest_kafka(
        connected(baseline),
        candidate,
        start,
        end,
        progress=not args.no_progress,
        clock=clock,
    )


def cmd_backtest(args: argparse.Namespace, *, clock: Clock = SYSTEM_CLOCK) -> int:
    from streams.pipeline.calibration import kept_calibrations

    base_path: Path | None = args.backtest_config or getattr(args, "config", None)
    baseline = load_settings(base_path)
    candidate = load_settings(args.compare)
    if args.output is not None:
        check_output_path(args.output)  # before the runs, not after them
    with kept_calibrations(baseline):
        result = _backtest(args, baseline, candidate, clock)
    print(format_backtest(result))
    if args.output is not None:
        report = {
            "baseline_config": str(base_path) if base_path else "default",
            "candidate_config": str(args.compare),
            "counts": result.counts(),
            "rows": [row.to_json() for row in result.rows],
        }
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        say(f"backtest report written to {args.output}")
    return 0


# --------------------------------------------------------------------------- replay


def add_replay_history_arguments(parser: argparse.ArgumentParser) -> None:
    """``--from/--to/--shadow-topic`` for ``sentinel replay`` (Kafka-history mode)."""
    parser.add_argument("--from", dest="start", default=None, help="replay Kafka from TIME")
    parser.add_argument(
        "--to", dest="end", default=None, help="... up to TIME (exclusive; default: now)"
    )
    parser.add_argument(
        "--shadow-topic", default=None, help="also produce replayed incidents to this topic"
    )


def run_replay_history(
    args: argparse.Namespace,
    settings: Settings,
    output: IO[str] | None,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """The Kafka-history half of ``sentinel replay``; ``args`` from the arguments above."""
    from streams.investigation.history import check_shadow_topic, replay_from_kafka

    start, end = _history_range(args, clock, "--to needs --from TIME: where the history starts")
    check_shadow_topic(settings, args.shadow_topic)  # bad input first, then the broker
    result = replay_from_kafka(
        connected(settings),
        start,
        end,
        output=output,
        shadow_topic=args.shadow_topic,
        progress=not getattr(args, "no_progress", False),
        clock=clock,
    )
    say(f"replay: {result.summary('records')}")
    return 0


# ------------------------------------------------------------------------- register


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``sentinel`` subparsers ``sub``.

    Each subcommand sets ``handler`` (a function taking the parsed
    :class:`argparse.Namespace` and returning an exit code) with ``set_defaults``.
    """
    alerts_help = "read incidents from this topic (default: topics.alerts; e.g. a shadow topic)"

    p = sub.add_parser("incidents", help="list incidents from the alerts topic")
    p.add_argument("--model", type=name_arg)
    p.add_argument("--severity", choices=[s.value for s in Severity])
    p.add_argument(
        "--type", help="incident type, e.g. toxicity_rate (also matches its :categories)"
    )
    p.add_argument("--since", help="active at or after TIME")
    p.add_argument("--until", help="first seen at or before TIME")
    p.add_argument("--status", choices=["open", "resolved", "all"], default="all")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--alerts-topic", help=alerts_help)
    p.set_defaults(handler=cmd_incidents)

    p = sub.add_parser("investigate", help="the events, audit trail and statistic of an incident")
    p.add_argument("incident_id")
    p.add_argument("--plot", type=Path, help="write a PNG of the statistic here")
    p.add_argument("--show-text", action="store_true", help="do not redact prompt/output excerpts")
    p.add_argument("--limit", type=int, default=20, help="events in the audit trail (20)")
    p.add_argument("--lookback", default="6h", help="history before the evidence window (6h)")
    p.add_argument("--series-json", type=Path, help="write the recomputed statistic as JSON")
    p.add_argument("--alerts-topic", help=alerts_help)
    p.set_defaults(handler=cmd_investigate)

    p = sub.add_parser("postmortem", help="write a Markdown postmortem draft for an incident")
    p.add_argument("incident_id")
    p.add_argument("--out", type=Path, help="Markdown file (default: stdout)")
    p.add_argument("--alerts-topic", help=alerts_help)
    p.set_defaults(handler=cmd_postmortem)

    p = sub.add_parser("backtest", help="compare two configurations over the same history")
    p.add_argument("--from", dest="start", help="Kafka history from TIME")
    p.add_argument("--to", dest="end", help="... up to TIME (exclusive; default: now)")
    p.add_argument(
        "--input", type=Path, help="a JSONL events file (or - for stdin) instead of Kafka"
    )
    p.add_argument(
        "--config", dest="backtest_config", type=Path, help="baseline config A (default: current)"
    )
    p.add_argument("--compare", type=Path, required=True, help="candidate config B (TOML)")
    p.add_argument("--output", type=Path, help="also write the comparison as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=cmd_backtest)
