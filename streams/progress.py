"""Progress of the long offline jobs (simulate, replay, backtest): one rule for all of them.

On a terminal, a bar (tqdm) redrawn in place. Anywhere else (a log file, a pipe, CI), a
whole line every :data:`LINE_EVERY_S` seconds: a redrawn bar would run together on one
line there, and no progress at all leaves a long job's log silent for minutes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, Final, Protocol

LINE_EVERY_S: Final = 10.0


class Progress(Protocol):
    """What the jobs call: ``update(n)`` for ``n`` more events, ``close()`` at the end."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> None: ...


class LineProgress:
    """``desc: N events [of TOTAL (P%)] (R events/s)``, a line at most every ``every_s``
    seconds of ``clock`` (the first after ``every_s``: a short job writes none; its
    command's summary line says what it did)."""

    def __init__(
        self,
        desc: str,
        stream: IO[str],
        *,
        total: int | None = None,
        every_s: float = LINE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.desc, self.stream, self.total = desc, stream, total
        self.every_s, self.clock = every_s, clock
        self.n = 0
        self.began = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        of = f" of {self.total:,} ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = self.n / (now - self.began)
        self.stream.write(f"{self.desc}: {self.n:,} events{of} ({rate:,.0f} events/s)\n")
        self.stream.flush()

    def close(self) -> None:
        """Nothing to undo: every line written is whole."""


def progress_bar(
    desc: str,
    *,
    total: int | None = None,
    stream: IO[str] | None = None,
    enabled: bool = True,
) -> Progress | None:
    """The progress of a job counting events on ``stream`` (default stderr): a bar on a
    terminal, :class:`LineProgress` elsewhere; None when not ``enabled``."""
    if not enabled:
        return None
    out = stream or sys.stderr
    if not out.isatty():
        return LineProgress(desc, out, total=total)
    from tqdm import tqdm

    bar: Progress = tqdm(
        total=total, unit=" events", unit_scale=True, file=out, desc=desc, dynamic_ncols=True
    )
    return bar


@contextmanager
def showing_progress(
    desc: str,
    *,
    total: int | None = None,
    stream: IO[str] | None = None,
    enabled: bool = True,
) -> Iterator[Progress | None]:
    """:func:`progress_bar` for a block, closed however the block ends."""
    bar = progress_bar(desc, total=total, stream=stream, enabled=enabled)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()
