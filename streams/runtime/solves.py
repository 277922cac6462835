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
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue

from detectors.arl import SolveRequest, defer_solves, record_solved
from streams.runtime.exposition import Histogram

log = logging.getLogger(__name__)

WAIT_BUCKETS_S = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0)
"""Buckets of :attr:`BackgroundSolves.wait`: from a solve answered before the next batch
to a cold worker's queue of thousands."""

ANSWER_EVERY_S = 0.05
"""The child sends its answers at least this often while it works through a batch."""

PRUNE_EVERY_S = 1.0
"""How often the requests waiting in the worker are swept for those nobody holds."""

SEND_AHEAD = 256
"""Requests sent to the child and not yet answered, at most. The rest wait in the worker,
where a request that every detector has replaced by a newer one (a young key's baseline
or ARL0 moves again before its answer) is dropped unsolved: a cold worker asks for
thousands at once, and some of them are stale before the child reaches them."""

Answer = tuple[SolveRequest, int | None, str | None]
"""A request, its threshold (None if the solve failed) and the failure."""


def _exit_with(parent: BaseProcess) -> None:
    """Wait for the worker to end, then end this process at once, wherever its main thread
    is. A worker killed while its queue's feeder thread was writing a batch leaves half a
    message in the pipe, and this process holds the pipe's write end too (a queue carries
    both), so a read of that message would wait for ever: checking the worker between
    reads left such a child running after a SIGKILL."""
    parent.join()
    os._exit(0)


def _serve(requests: Queue[list[SolveRequest] | None], answers: Queue[list[Answer]]) -> None:
    """The child: solve each batch of requests in order, answering as it goes; stop on
    None, or as soon as the worker is gone (killed: nobody would tell it to stop)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    # Exit without flushing answers nobody reads: this process holds the queue's read
    # end too, so a full pipe would block its exit for ever once the worker stopped.
    answers.cancel_join_thread()
    while True:
        batch = requests.get()
        if batch is None:
            return
        done: list[Answer] = []
        last = time.monotonic()
        for request in batch:
            try:
                done.append((request, request.solve(), None))
            except Exception as exc:  # a solve's own error: its detector keeps its bound
                done.append((request, None, f"{type(exc).__name__}: {exc}"))
            if time.monotonic() - last >= ANSWER_EVERY_S:
                answers.put(done)
                done, last = [], time.monotonic()
        if done:
            answers.put(done)


@dataclass(frozen=True)
class _Child:
    """The solving process and its two queues."""

    process: BaseProcess
    requests: Queue[list[SolveRequest] | None]
    answers: Queue[list[Answer]]

    @staticmethod
    def start() -> _Child:
        # spawn: the worker has threads (aiokafka, faust), which fork does not carry safely.
        context = multiprocessing.get_context("spawn")
        requests: Queue[list[SolveRequest] | None] = context.Queue()
        answers: Queue[list[Answer]] = context.Queue()
        process = context.Process(
            target=_serve, args=(requests, answers), name="sentinel-solves", daemon=True
        )
        process.start()
        return _Child(process, requests, answers)


class BackgroundSolves:
    """One child process solving the thresholds that detectors ask for; :meth:`install`
    starts it and routes the requests here. Requests go out and answers come back in
    batches, on the caller's thread (:meth:`collect`): nothing is handed over per request
    on a thread of its own, which would need the GIL of a worker busy in Python (a
    process pool does that: docs/validation.md, stop 36)."""

    def __init__(
        self, monotonic: Callable[[], float] = time.monotonic, send_ahead: int = SEND_AHEAD
    ) -> None:
        self._child: _Child | None = None  # made by install
        # Not sent yet, held weakly (a request nobody waits for any more is dropped),
        # with when it was asked for.
        self._outbox: list[tuple[weakref.ref[SolveRequest], float]] = []
        # Sent and not answered, held so that its key stays in flight (no second solve).
        self._in_child: dict[object, tuple[SolveRequest, float]] = {}
        self._monotonic = monotonic
        self._send_ahead = send_ahead
        self._pruned_at = monotonic()
        self._closed = False
        self.sent = 0
        self.answered = 0
        self.failed = 0
        self.superseded = 0
        """Requests dropped unsolved: every detector that asked had moved on to a newer one."""
        self.wait = Histogram(WAIT_BUCKETS_S)
        """Seconds from a request to its answer's collection: how long its detector
        charted on the bound."""

    @property
    def in_flight(self) -> int:
        """Requests made and not yet answered or dropped (waiting in the worker or in the
        child)."""
        return self.sent - self.answered - self.failed - self.superseded

    @property
    def unsent(self) -> int:
        """Requests waiting in the worker for room in the child (:data:`SEND_AHEAD`)."""
        return len(self._outbox)

    def install(self) -> None:
        """Start the child (a process start is tens of milliseconds: not in the first
        batch) and defer every threshold solve of this process to it."""
        self._child = _Child.start()
        defer_solves(self.submit)

    def submit(self, request: SolveRequest) -> None:
        """Queue one solve (called by :mod:`detectors.arl`, once per request in flight);
        it goes out with a later :meth:`collect`, at most :data:`SEND_AHEAD` ahead of the
        answers, unless its detectors have dropped it by then."""
        self._outbox.append((weakref.ref(request), self._monotonic()))
        self.sent += 1

    def collect(self) -> int:
        """Keep every answer that has come back where its detectors look for it, and send
        the requests queued since the last call; returns how many answers. A solve that
        failed keeps its stand-in (logged): still at least the ARL0 asked for, never an
        exception in the detect agent. A child that died hands the solves back to the
        caller (:meth:`_give_up`)."""
        child = self._child
        if self._closed or child is None:  # closed, or not installed yet
            return 0
        n = 0
        while True:
            try:
                answers = child.answers.get_nowait()
            except queue.Empty:
                break
            for request, h, error in answers:
                n += 1
                _, asked = self._in_child.pop(request.key, (request, self._monotonic()))
                self.wait.observe(self._monotonic() - asked)
                if h is None:
                    self.failed += 1
                    log.warning("threshold solve %s failed: %s (bound kept)", request.key[0], error)
                    h = request.bound
                else:
                    self.answered += 1
                record_solved(request, h)
        if not child.process.is_alive():
            self._give_up(f"exit code {child.process.exitcode}")
        else:
            batch = self._next_batch()
            if batch:
                child.requests.put(batch)
        return n

    def _next_batch(self) -> list[SolveRequest]:
        """The queued requests still wanted, oldest first, up to :data:`SEND_AHEAD`
        unanswered in the child; those nobody holds any more are dropped on the way, and
        from the whole queue every :data:`PRUNE_EVERY_S` (the counts stay current without
        a pass over thousands of requests after every batch)."""
        batch: list[SolveRequest] = []
        room = self._send_ahead - len(self._in_child)
        taken = 0
        for ref, asked in self._outbox:
            if len(batch) >= room:
                break
            taken += 1
            request = ref()
            if request is None:
                self.superseded += 1
                continue
            batch.append(request)
            self._in_child[request.key] = (request, asked)
        del self._outbox[:taken]
        now = self._monotonic()
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            live = [(ref, asked) for ref, asked in self._outbox if ref() is not None]
            self.superseded += len(self._outbox) - len(live)
            self._outbox = live
        return batch

    def _give_up(self, why: str) -> None:
        """The child is gone: solve in the caller from now on. Every request in flight is
        forgotten, so each waiting detector solves its own on its next update."""
        log.error("background threshold solves stopped (%s): solving in the event loop", why)
        self.failed += self.in_flight
        self._outbox, self._closed = [], True
        self._in_child.clear()
        defer_solves(None)

    def close(self) -> None:
        """Solve in the caller again, and stop the child (its queued solves are dropped:
        their detectors ask again, and solve at once, on their next update)."""
        if not self._closed:
            self._closed = True
            defer_solves(None)
        child = self._child
        if child is not None:
            child.requests.cancel_join_thread()  # exit without flushing to a stopped child
            if child.process.is_alive():
                child.process.kill()
                child.process.join(timeout=10)
