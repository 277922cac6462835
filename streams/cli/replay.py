"""``sentinel replay --input F | --from T --to T``: the pipeline over a file or Kafka
history, without paging (:mod:`streams.pipeline.replay`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from streams.cli.common import output_file, refuse_same_file
from streams.cli.investigate import add_replay_history_arguments, run_replay_history
from streams.pipeline.calibration import kept_calibrations
from streams.pipeline.replay import replay_lines
from streams.progress import showing_progress
from streams.settings import Settings, load_settings


@contextlib.contextmanager
def _open_in(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
        return
    if not Path(path).exists():
        raise ValueError(f"input file not found: {path}")
    with Path(path).open("rb") as fh:
        yield fh


@contextlib.contextmanager
def _open_out(path: str | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
    elif path == "-":
        yield sys.stdout
    else:
        with output_file(Path(path)) as fh:
            yield fh


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", default=None, help="events JSONL file, or - for stdin")
    parser.add_argument(
        "--output", default="-", help="incidents JSONL file, or - for stdout (the default)"
    )
    parser.add_argument("--dead-letter", default=None, help="write rejected lines here (JSONL)")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar even on a terminal"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="detection processes for a file (default 1): models are split between them, "
        "each with 1/N of the false-alarm budget, as N workers would; incidents are written "
        "at the end",
    )
    add_replay_history_arguments(parser)  # --from/--to/--shadow-topic: history from Kafka


def run_replay(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """``sentinel replay`` from a file: print a summary with units to stderr."""
    settings = settings or load_settings(getattr(args, "config", None))
    jobs = getattr(args, "jobs", 1)
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, not {jobs}")
    if getattr(args, "start", None) or getattr(args, "end", None):
        if args.input is not None:
            raise ValueError("give either --input FILE or --from/--to, not both")
        if jobs > 1:
            raise ValueError("--jobs applies to a file (--input), not to --from/--to")
        with kept_calibrations(settings), _open_out(args.output) as sink:
            return run_replay_history(args, settings, sink)
    if args.input is None:
        raise ValueError("give --input FILE (or -), or --from TIME --to TIME to replay Kafka")
    outputs = [Path(p) for p in (args.output, args.dead_letter) if p not in (None, "-")]
    if args.input != "-":
        refuse_same_file(Path(args.input), "input", *outputs)
    if len(outputs) == 2:
        refuse_same_file(outputs[0], "output", outputs[1])
    with (
        showing_progress("sentinel replay", enabled=not args.no_progress) as progress,
        kept_calibrations(settings),
        _open_in(args.input) as src,
        _open_out(args.output) as sink,
        _open_out(args.dead_letter) as dlq,
    ):
        source = "standard input" if args.input == "-" else args.input
        result = replay_lines(
            src, settings, dead_letters=dlq, sink=sink, progress=progress, source=source, jobs=jobs
        )
        # before the outputs are kept: a file of no events leaves them as they were
        result.require_events(source)
    hint = ""
    if result.dead_letters and args.dead_letter is None:
        hint = "; --dead-letter FILE keeps each rejected line with its reason"
    on = f"; detection on {jobs} processes" if jobs > 1 else ""
    print(f"sentinel replay: {result.summary()}{on}{hint}", file=sys.stderr)
    return 0
