"""The injected clock: logic never calls ``datetime.now()`` itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clock, for entry points only."""

    def now(self) -> datetime:
        return datetime.now(UTC)
