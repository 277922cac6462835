"""The JSONL stream format that ``sentinel simulate --out`` writes and offline replay reads.

One event per line, UTF-8, ``\\n``-terminated: the same compact JSON object a producer
publishes to Kafka (alias field names, ``event_type`` always present), in delivery order
(which is *not* strictly event-time order: late events are part of the data). Blank lines
are skipped; anything else that fails to decode becomes a
:class:`~streams.contract.decode.DeadLetter` whose coordinates are ``(file name, 0, line number)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from streams.contract.events import AnyEvent, dump_event

JSONL_FORMAT: Final = "sentinel-events-jsonl/1"

# Offline replay has no "now": event times are only checked against the file itself.
_NO_FUTURE_CHECK: Final = datetime(9999, 1, 1, tzinfo=UTC)


def read_events(path: Path, *, strict: bool = False) -> Iterator[AnyEvent]:
    """Yield the valid events of a JSONL file in file order.

    Invalid lines are skipped, or raise ``ValueError`` naming the line when ``strict``.
    Use :func:`read_records` to see the dead letters.
    """
    from streams.contract.decode import DeadLetter

    for record in read_records(path):
        if isinstance(record, DeadLetter):
            if strict:
                raise ValueError(f"{path}:{record.offset}: {record.reason}: {record.error}")
            continue
        yield record


def read_records(path: Path) -> Iterator[AnyEvent | DeadLetter]:
    """Yield an event or a dead letter for each non-blank line (1-based line numbers)."""
    from streams.contract.decode import Coordinates, decode

    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            yield decode(raw, Coordinates(str(path), 0, lineno), now=_NO_FUTURE_CHECK)


def write_events(events: Iterable[AnyEvent], out: TextIO) -> int:
    """Write events as JSONL (canonical form); returns the count."""
    n = 0
    for event in events:
        out.write(dump_event(event).decode() + "\n")
        n += 1
    return n


if TYPE_CHECKING:
    from streams.contract.decode import DeadLetter
