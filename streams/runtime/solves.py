"""Exact threshold solves in a child process, so that the worker's event loop never waits
for one (issue 14, item 3).

A detector whose baseline is new asks :mod:`detectors.arl` for the threshold of its
``(design, ARL0, calibration rate)``; one not known yet is a linear solve, from a fraction
of a millisecond to tens of milliseconds, and a cold worker asks for thousands. With
:class:`BackgroundSolves` installed (``worker.background_solves``, on by default), such a
request goes to one child process, and the detector charts meanwhile on
:func:`detectors.arl.drift_bound`: a threshold with at least the configured ARL0 (so no
extra false alarms), above the exact one (so a little less sensitive). The detect agent
:meth:`collects <BackgroundSolves.collect>` the answers between its steps, on the loop,
and each waiting detector takes its exact threshold on its next update. The answers join
the worker's calibration cache (:mod:`streams.pipeline.calibration`) like any solve.

What it changes: in a worker, the observation at which a young key's chart alarms can
depend on how fast its solve came back, so a live incident can differ from the offline
replay of the same events (which solves at once) by the events a stand-in threshold
took. ``worker.background_solves = false`` keeps every solve in the loop and the two
identical.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from detectors.arl import SolveRequest, defer_solves, record_solved
from streams.runtime.exposition import Histogram

log = logging.getLogger(__name__)

WAIT_BUCKETS_S = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0)
"""Buckets of :attr:`BackgroundSolves.wait`: from a solve answered before the next batch
to a cold worker's queue of thousands."""


def _solve(request: SolveRequest) -> int:
    return request.solve()


class BackgroundSolves:
    """One child process solving the thresholds that detectors ask for, answers collected
    on the caller's thread (:meth:`collect`); :meth:`install` routes the requests here."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        # spawn: the worker has threads (aiokafka, faust), which fork does not carry safely.
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self._done: queue.SimpleQueue[tuple[SolveRequest, Future[int], float]] = queue.SimpleQueue()
        self._monotonic = monotonic
        self.sent = 0
        self.answered = 0
        self.failed = 0
        self._closed = False
        self.wait = Histogram(WAIT_BUCKETS_S)
        """Seconds from a request to its answer's collection: how long its detector
        charted on the bound."""

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet collected."""
        return self.sent - self.answered - self.failed

    def install(self) -> None:
        """Start the child (a process start is tens of milliseconds: not in the first
        batch) and defer every threshold solve of this process to it."""
        self._pool.submit(int)
        defer_solves(self.submit)

    def submit(self, request: SolveRequest) -> None:
        """Send one solve (called by :mod:`detectors.arl`, once per request in flight).

        If the child cannot take it (it died: a broken pool), solves go back to the
        caller (:meth:`_give_up`), and this request is solved there on its detector's next
        update."""
        sent = self._monotonic()
        try:
            future = self._pool.submit(_solve, request)
        except (BrokenProcessPool, RuntimeError) as exc:  # RuntimeError: shut down
            self._give_up(exc)
            return
        self.sent += 1
        future.add_done_callback(lambda f: self._done.put((request, f, sent)))

    def _give_up(self, exc: BaseException) -> None:
        """The child is gone: solve in the caller from now on. Every request in flight is
        forgotten, so each waiting detector solves its own on its next update."""
        if not self._closed:
            log.error("background threshold solves stopped (%s): solving in the event loop", exc)
        defer_solves(None)

    def collect(self) -> int:
        """Keep every answer that has come back where its detectors look for it; returns
        how many. A solve that failed keeps its stand-in (logged): still at least the
        ARL0 asked for, never an exception in the detect agent. A child that died hands
        the solves back to the caller (:meth:`_give_up`)."""
        n = 0
        while True:
            try:
                request, future, sent = self._done.get_nowait()
            except queue.Empty:
                return n
            n += 1
            self.wait.observe(self._monotonic() - sent)
            try:
                h = future.result()
            except (BrokenProcessPool, CancelledError) as exc:  # the child died or stopped
                self.failed += 1
                self._give_up(exc)
                continue
            except Exception as exc:  # the solve's own error
                self.failed += 1
                log.warning("threshold solve %s failed (%s): kept its bound", request.key[:2], exc)
                h = request.bound
            else:
                self.answered += 1
            record_solved(request, h)

    def close(self) -> None:
        """Solve in the caller again, and stop the child (queued solves are dropped: their
        detectors ask again, and solve at once, on their next update)."""
        self._closed = True
        defer_solves(None)
        self._pool.shutdown(wait=False, cancel_futures=True)
