"""A faust app that lets the pipeline write what it keeps in memory once its agents are
idle, before a rebalance hands partitions to another worker and before a stop.

faust waits for its agents to finish the events they hold (``App._consumer_wait_empty``)
both when partitions are revoked (then it flushes its producer and gives them up) and when
the worker stops (then it stops the tables). State an agent keeps outside faust's tables
between batches -- the detector sets written back at an interval
(:mod:`streams.pipeline.live_sets`) -- must reach the changelog there, or the next owner
restores it as it was at the last write.

Its flow control also keeps what the agents' queues hold when faust resumes a flow that
is already on (:class:`KeepingFlowControl`): faust's recovery does that right after
seeking the source partitions to their commits, and the queued events were dropped
unprocessed, on the batch ingress and on faust's per-record topics alike.

And its producer buffer sends what it holds without handing the event loop over between
messages (:meth:`DrainingApp.maybe_start_producer`): every commit waits for that buffer to
drain, so the pace it drains at is the pace a busy worker commits at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import faust
from faust.types import ProducerT
from mode.utils.futures import stampede
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

log = logging.getLogger(__name__)

_BUFFERED: ContextVar[bool] = ContextVar("sentinel_buffered_send", default=False)
"""Set while the producer buffer sends one of its messages (:meth:`DrainingApp._new_producer`)."""


class KeepingFlowControl(FlowControlEvent):
    """faust's flow control, except that resuming a flow that is already on keeps what
    the agents' queues hold.

    mode's ``resume`` empties every stream queue whatever the state, and faust's recovery
    calls it several times per assignment, the last time right after seeking the source
    partitions to their commits (``Recovery.on_recovery_completed``): an event delivered
    before that last call was dropped from its agent's queue, never processed and never
    acked, while its partition read on past it (faust's per-record path and the batch
    ingress alike, :mod:`streams.runtime.batching`). Only a resume after a suspension (a
    rebalance, whose revocation already cleared the queues) has stale events to drop."""

    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()


class DrainingApp(faust.App):
    """A faust app calling its :attr:`drained` callbacks each time its agents have drained
    for a rebalance or a stop (before faust flushes its producer or stops its tables), with
    a :class:`KeepingFlowControl`, and whose producer buffer drains without yielding between
    messages (:meth:`maybe_start_producer`)."""

    drained: list[Callable[[], None]]

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return KeepingFlowControl(loop=self.loop)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.drained = []
        super().__init__(*args, **kwargs)

    def _new_producer(self) -> ProducerT:
        """faust's producer, whose buffer marks its sends (:data:`_BUFFERED`)."""
        producer = super()._new_producer()
        buffer: Any = producer.buffer  # faust's ProducerBuffer (its type hides the method)
        send = buffer._send_pending

        async def send_buffered(fut: Any) -> None:
            token = _BUFFERED.set(True)
            try:
                await send(fut)
            finally:
                _BUFFERED.reset(token)

        buffer._send_pending = send_buffered
        return producer

    async def maybe_start_producer(self) -> ProducerT:
        """The running producer, at once, for the producer buffer's sends; faust's
        start-up guard for the others.

        faust's producer buffer (table writes, ``send_soon``) sends each message through
        this call, and faust's version is a stampede guard that hands the event loop over
        three times per call. In a busy worker every hand-over waits behind the agents'
        work, so the buffer sent one message per three turns of the loop, and faust's
        commit, which flushes that buffer before it commits, took seconds: the committed
        offsets lagged by that much more (docs/validation.md, "Stop 65"). An agent's own
        ``send`` keeps the guard and its hand-overs, on which the agents' share of the loop
        rests: without them the ingress ran further ahead of detection after a burst."""
        producer = self.producer
        if _BUFFERED.get() and producer.started and not self.in_transaction:
            return producer
        started: ProducerT = await self._start_producer()
        return started

    @stampede
    async def _start_producer(self) -> ProducerT:
        """faust's guarded start of the producer (one caller starts it, the others wait)."""
        started: ProducerT = await faust.App.maybe_start_producer.__wrapped__(self)
        return started

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        await super()._consumer_wait_empty(consumer, logger)
        for callback in self.drained:
            try:
                callback()
            except Exception:  # the rebalance or stop goes on; the state is as last written
                log.exception("writing state back before a rebalance or stop failed")
