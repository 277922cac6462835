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
from concurrent.futures import Future, ProcessPoolExecutor

from detectors.arl import SolveRequest, defer_solves, record_solved

log = logging.getLogger(__name__)


def _solve(request: SolveRequest) -> int:
    return request.solve()


class BackgroundSolves:
    """One child process solving the thresholds that detectors ask for, answers collected
    on the caller's thread (:meth:`collect`); :meth:`install` routes the requests here."""

    def __init__(self) -> None:
        # spawn: the worker has threads (aiokafka, faust), which fork does not carry safely.
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self._done: queue.SimpleQueue[tuple[SolveRequest, Future[int]]] = queue.SimpleQueue()
        self.sent = 0
        self.answered = 0
        self.failed = 0

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet collected."""
        return self.sent - self.answered - self.failed

    def install(self) -> None:
        """Defer every threshold solve of this process to the child."""
        defer_solves(self.submit)

    def submit(self, request: SolveRequest) -> None:
        """Send one solve (called by :mod:`detectors.arl`, once per request in flight)."""
        future = self._pool.submit(_solve, request)
        self.sent += 1
        future.add_done_callback(lambda f: self._done.put((request, f)))

    def collect(self) -> int:
        """Keep every answer that has come back where its detectors look for it; returns
        how many. A solve that failed keeps its stand-in (logged): still at least the
        ARL0 asked for, never an exception in the detect agent."""
        n = 0
        while True:
            try:
                request, future = self._done.get_nowait()
            except queue.Empty:
                return n
            n += 1
            try:
                h = future.result()
            except Exception as exc:  # the child's error, or the pool broken or shut down
                self.failed += 1
                log.warning("threshold solve %s failed (%s): kept its bound", request.key[:2], exc)
                h = request.bound
            else:
                self.answered += 1
            record_solved(request, h)

    def close(self) -> None:
        """Solve in the caller again, and stop the child (queued solves are dropped: their
        detectors ask again, and solve at once, on their next update)."""
        defer_solves(None)
        self._pool.shutdown(wait=False, cancel_futures=True)
