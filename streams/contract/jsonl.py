"""The JSONL stream format that ``sentinel simulate --out`` writes and offline replay reads.

One event per line, UTF-8, ``\\n``-terminated: the same compact JSON object a producer
publishes to Kafka (alias field names, ``event_type`` always present), in delivery order
(which is *not* strictly event-time order: late events are part of the data). Blank lines
are skipped; anything else that fails to decode becomes a
:class:`~streams.contract.decode.DeadLetter`. A line's coordinates are ``(source, 0,
line number)`` with 0-based line numbers, everywhere (replay, backtests, tests).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from streams.contract.decode import DEFAULT_LIMITS, Coordinates, DeadLetter, IngressLimits, decode
from streams.contract.events import AnyEvent

JSONL_FORMAT: Final = "sentinel-events-jsonl/1"

NO_FUTURE_CHECK: Final = datetime(9999, 1, 1, tzinfo=UTC)
"""``now`` for files: history has no "now", event times are only checked against the file."""

FILE_LIMITS: Final = DEFAULT_LIMITS.model_copy(update={"max_past_s": 1e12})
"""Limits for files: history is old by nature, so no lower bound on event time."""


def decode_lines(
    lines: Iterable[bytes],
    source: str,
    *,
    now: datetime = NO_FUTURE_CHECK,
    limits: IngressLimits = FILE_LIMITS,
) -> Iterator[tuple[int, AnyEvent | DeadLetter]]:
    """(0-based line number, event or dead letter) for each non-blank line of ``lines``.
    A UTF-8 byte-order mark before the first line (some editors and Windows tools write
    one) is not part of its JSON."""
    for lineno, line in enumerate(lines):
        raw = line.rstrip(b"\r\n")
        if lineno == 0:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if raw.strip():
            yield lineno, decode(raw, Coordinates(source, 0, lineno), now=now, limits=limits)


def read_records(path: Path) -> Iterator[AnyEvent | DeadLetter]:
    """Yield an event or a dead letter for each non-blank line of a JSONL file."""
    with path.open("rb") as f:
        for _, record in decode_lines(f, str(path)):
            yield record
