"""Time, one way: the injected clock and the duration grammar.

Logic never calls ``datetime.now()`` itself: it is handed a :class:`Clock`, and entry
points hand it :class:`SystemClock`. Durations in configuration and on the command line
(``90m``, ``1.5h``, ``1d12h``, ``1w``) are parsed by :func:`parse_duration` everywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clock, for entry points only."""

    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK: Final = SystemClock()
"""The one real clock; the default of functions that take ``clock``."""

_PART: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


MAX_DURATION_S = 100 * 365.25 * 86400.0
"""The longest duration :func:`parse_duration` takes (a longer one overflows datetimes)."""


def parse_duration(text: str) -> timedelta:
    """``"90m"``, ``"1.5h"``, ``"1d12h"``, ``"45s"``, ``"1w"`` -> a positive timedelta.

    >>> parse_duration("90m")
    datetime.timedelta(seconds=5400)
    >>> parse_duration("1d12h") == timedelta(days=1, hours=12)
    True
    """
    value = text.strip()
    pos, total = 0, 0.0
    for m in _PART.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if not value or pos != len(value):
        raise ValueError(
            f"invalid duration {text!r}: use numbers with units s, m, h, d or w "
            "(e.g. 90m, 1.5h, 1d12h)"
        )
    if total <= 0:
        raise ValueError(f"invalid duration {text!r}: must be positive")
    if total > MAX_DURATION_S:
        raise ValueError(f"invalid duration {text!r}: longer than 100 years")
    return timedelta(seconds=total)
