"""Dead letters in the log, rate-limited with counts.

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
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

ERROR_MAX_CHARS = 200
DEFAULT_INTERVAL_S = 10.0


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
