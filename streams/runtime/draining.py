"""A faust app that lets the pipeline write what it keeps in memory once its agents are
idle, before a rebalance hands partitions to another worker and before a stop.

faust waits for its agents to finish the events they hold (``App._consumer_wait_empty``)
both when partitions are revoked (then it flushes its producer and gives them up) and when
the worker stops (then it stops the tables). State an agent keeps outside faust's tables
between batches -- the detector sets written back at an interval
(:mod:`streams.pipeline.live_sets`) -- must reach the changelog there, or the next owner
restores it as it was at the last write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust

log = logging.getLogger(__name__)


class DrainingApp(faust.App):
    """A faust app calling its :attr:`drained` callbacks each time its agents have drained
    for a rebalance or a stop (before faust flushes its producer or stops its tables)."""

    drained: list[Callable[[], None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.drained = []
        super().__init__(*args, **kwargs)

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        await super()._consumer_wait_empty(consumer, logger)
        for callback in self.drained:
            try:
                callback()
            except Exception:  # the rebalance or stop goes on; the state is as last written
                log.exception("writing state back before a rebalance or stop failed")
