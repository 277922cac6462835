"""Idle detector keys: which keys saw no event for a while, found without a full scan.

:class:`IdleKeys` keeps every detector key in the order it was last touched, with the
event time of its latest event. Each batch, :class:`streams.pipeline.detect.Detect` moves
the keys it touched to the end and pops at most ``max_per_batch`` keys from the front whose
latest event is older than the idle horizon: the work per batch is bounded and no scan of
the store is needed. Order is by last touch, so with events slightly out of order across
keys a key may expire a batch later than its own time says, never earlier.

It also counts keys by level exactly (``sentinel_detector_keys`` on ``/metrics``).
After a restart or a rebalance the order is unknown: :meth:`seed` enters the keys found in
the restored store as if last seen at the first batch's event time, so a key that never
comes back expires ``idle_key_hours`` after that.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable

from streams.pipeline.keys import Level, level_of_key


class IdleKeys:
    """Keys in last-touched order with their latest event time (seconds since the epoch)."""

    def __init__(self) -> None:
        self._last: OrderedDict[str, float] = OrderedDict()
        self.by_level: Counter[Level] = Counter()
        self.expired = 0
        """Keys expired since the process started."""

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, kid: object) -> bool:
        return kid in self._last

    def touch(self, kid: str, t: float) -> None:
        """``kid`` saw an event at ``t``: it becomes the most recently touched key."""
        prev = self._last.get(kid)
        if prev is None:
            self.by_level[level_of_key(kid)] += 1
            self._last[kid] = t
        else:
            self._last[kid] = max(prev, t)
            self._last.move_to_end(kid)

    def seed(self, kids: Iterable[str], t: float) -> int:
        """Enter restored keys not tracked yet as last seen at ``t`` (oldest first, so the
        keys touched since stay behind them). Returns how many were entered."""
        new = [kid for kid in kids if kid not in self._last]
        for kid in reversed(new):
            self.by_level[level_of_key(kid)] += 1
            self._last[kid] = t
            self._last.move_to_end(kid, last=False)
        return len(new)

    def due(self, horizon: float, max_keys: int) -> list[str]:
        """Pop and return at most ``max_keys`` least recently touched keys whose latest
        event is before ``horizon``."""
        out: list[str] = []
        while self._last and len(out) < max_keys:
            kid, t = next(iter(self._last.items()))
            if t >= horizon:
                break
            del self._last[kid]
            self.by_level[level_of_key(kid)] -= 1
            out.append(kid)
        self.expired += len(out)
        return out

    def clear(self) -> None:
        self._last.clear()
        self.by_level.clear()
