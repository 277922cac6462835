"""Dead letters and the Kafka libraries' repeated lines in the log, rate-limited with counts.

One WARNING line per dead letter made 11 MB of log for 64k bad records (issue 17), and a
flood of bad input could bury everything else in the log. The dead-letter topic (every
record, its reason, bytes and coordinates) and ``sentinel_events_dead_lettered_total``
(counts by topic and reason) carry the detail; the log only has to say that it happens,
why, and where to look:

* the first dead letter after a quiet interval is logged at once, with its coordinates,
  reason and (cut) error;
* the others within ``interval_s`` are counted by reason and summarised in one line when
  the interval is over (at the next dead letter or the next :meth:`DeadLetterLog.tick`).

So a steady stream of bad records costs at most two lines per interval. Times come from
the caller (the ingress's injected clock).

:class:`RepeatFilter` does the same for faust's and the Kafka clients' own lines, which
the service does not write and which repeat under load (a producer's full buffer during a
backlog, a coordinator lookup while a broker starts). The first line of each kind passes;
the repeats within ``interval_s`` are counted and named on the next one that passes.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Final

ERROR_MAX_CHARS = 200
DEFAULT_INTERVAL_S = 10.0
REPEAT_INTERVAL_S: Final = 60.0
LIBRARY_LOGGERS: Final = ("faust", "mode", "aiokafka", "kafka")
"""Loggers of the libraries the worker runs on (and their children): their repeats are
limited; the service's own loggers never are."""
_KINDS_KEPT: Final = 1024
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class DeadLetterLog:
    """Log dead letters at most one line plus one summary per ``interval_s``."""

    def __init__(self, logger: logging.Logger, *, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.logger = logger
        self.interval = timedelta(seconds=interval_s)
        self._until: datetime | None = None
        self._since: datetime | None = None
        self._held: Counter[str] = Counter()

    @property
    def held(self) -> int:
        """Dead letters counted but not yet summarised."""
        return sum(self._held.values())

    def record(self, now: datetime, where: str, reason: str, error: str) -> None:
        """One dead letter at ``where`` (``topic[partition]@offset``)."""
        self.tick(now)
        if self._until is None:
            cut = error if len(error) <= ERROR_MAX_CHARS else error[:ERROR_MAX_CHARS] + "..."
            self.logger.warning(
                "dead-lettered %s: %s: %s (further dead letters within %.0f s are counted "
                "and summarised)",
                where,
                reason,
                cut,
                self.interval.total_seconds(),
            )
            self._until, self._since = now + self.interval, now
        else:
            self._held[reason] += 1

    def tick(self, now: datetime) -> None:
        """Close the interval if it is over: summarise what it held."""
        if self._until is None or now < self._until:
            return
        if self._held:
            self.flush(now)
        self._until = None

    def flush(self, now: datetime) -> None:
        """Summarise the held dead letters now (also at shutdown)."""
        if not self._held:
            return
        since = self._since or now
        by_reason = ", ".join(f"{r} {n}" for r, n in sorted(self._held.items()))
        self.logger.warning(
            "dead-lettered %d more record(s) in %.1f s (%s); every one is on the dead-letter "
            "topic with its reason, and counted in sentinel_events_dead_lettered_total",
            self.held,
            (now - since).total_seconds(),
            by_reason,
        )
        self._held.clear()
        self._since = now


class RepeatFilter(logging.Filter):
    """At most one line per ``interval_s`` of each kind from the ``libraries``' loggers.

    A kind is the logger, the level and the message with its numbers blanked ("producer
    buffer full size 9896" and "... size 988" are one kind). The first passes; repeats
    within the interval are held and counted, and the next line of that kind after it says
    how many were not logged (a kind that stops repeating leaves its count untold: the
    line before it said that it happens). Times are the records' own (``created``).
    Other loggers pass untouched.
    """

    def __init__(
        self, libraries: tuple[str, ...] = LIBRARY_LOGGERS, interval_s: float = REPEAT_INTERVAL_S
    ) -> None:
        super().__init__()
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.libraries = libraries
        self.interval_s = interval_s
        self._kinds: dict[tuple[str, int, str], list[float]] = {}  # kind -> [until, held]

    def _limited(self, name: str) -> bool:
        return any(name == lib or name.startswith(lib + ".") for lib in self.libraries)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._limited(record.name):
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True  # the formatter says it is unformattable
        kind = (record.name, record.levelno, _NUMBER.sub("N", message))
        state = self._kinds.get(kind)
        if state is not None and record.created < state[0]:
            state[1] += 1
            return False
        if state is not None and state[1]:
            held = int(state[1])
            record.msg = f"{message} ({held} more like it since the last one were not logged)"
            record.args = ()
        if len(self._kinds) >= _KINDS_KEPT:
            self._kinds.clear()
        self._kinds[kind] = [record.created + self.interval_s, 0]
        return True
