"""Offline replay on several processes (``sentinel replay --jobs N``).

Detection is partitioned by model: one model's keys, engine and silence watch live in one
place, as the by-model topic partitions them between workers. This process decodes and
joins every line (the join is by request id, and feedback need not name its model) and
hands each observation to the detection process of its model. Models are placed by their
share of the first :data:`LOOKAHEAD` observations, busiest first on the least loaded
process (a model first seen later: on the least loaded one then). Each process runs the
pipeline's own :class:`~streams.pipeline.detect.Detect` with a ``1 / N`` share of the
false-alarm budget, as N workers that own the by-model partitions evenly do
(:meth:`~streams.pipeline.live_sets.LiveSets.set_share`): the service's budget is spent
once, and a key's run length depends on the keys its own process holds, so incidents can
differ from a one-process replay's where a run length does.

A model that stops is found offline while other models keep the stream's event time
moving. Those sweeps are decided here over the whole stream
(:class:`~streams.pipeline.detect.SweepGrid`) and sent to every process at their place in
the stream. Incident events come back tagged with the position of the observation (or
sweep) that raised them and are merged in that order, so with one process the output is
byte for byte the in-process replay's (``tests/unit/pipeline/test_parallel_replay.py``).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any, Final

from alerting.model import IncidentEvent
from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from detectors.arl import ThresholdKey, add_thresholds, known_thresholds
from streams.contract.decode import Coordinates
from streams.contract.events import AnyEvent
from streams.pipeline.detect import SweepGrid, in_memory_detect
from streams.pipeline.join import Joiner
from streams.pipeline.observation import Observation, event_time, serves
from streams.settings import Settings

IN_FLIGHT: Final = 4
"""Batches queued to each detection process before this process waits for it: enough
that one process's slow batch does not idle the others, bounded so that memory does not
grow with the file when detection is slower than decoding."""

LOOKAHEAD: Final = 50_000
"""Observations read before the models are placed on processes by their counts (items
held: tens of MB); a model first seen later goes to the least loaded process."""

POLL_S: Final = 1.0
"""How often a wait on a detection process checks that it is still alive."""


@dataclass(frozen=True)
class Sweep:
    """Check every model but ``current`` for silence at the stream's event time ``now``
    (:meth:`streams.pipeline.detect.Detect.sweep`)."""

    current: str
    now: datetime


Item = tuple[int, Observation | Sweep]
"""An observation or a sweep with its position in the stream (1-based)."""

Tagged = tuple[int, int, str]
"""An incident event's JSON with the position that raised it: (position, 0 for a sweep
or 1 for an observation, JSON). Sorting these gives the one-process replay's order: a
sweep comes before its observation's own tick and detections there."""


class DetectionProcessError(RuntimeError):
    """A detection process of a parallel replay failed; the message holds its traceback."""


def detect_process(
    settings: Settings,
    jobs: int,
    inbox: Queue[list[Item] | None],
    results: Queue[tuple[Any, ...]],
    job: int,
    thresholds: dict[ThresholdKey, int],
) -> None:  # pragma: no cover - runs in a child process (tested through ParallelPipeline)
    """One detection process: take batches of items until ``None``, then put ``("done",
    job, tagged incident events, thresholds solved, observations)`` on ``results`` (or
    ``("error", job, traceback)``)."""
    # The reading process owns an interrupt (a terminal's Ctrl-C reaches the whole
    # process group) and stops the detection processes itself (``close``). Set here too
    # for a caller that starts them outside the main thread (see ``_interrupts_ignored``).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    try:
        add_thresholds(thresholds)
        detect = in_memory_detect(settings.detection, sweeps=False)
        detect.live_sets.set_share(1, jobs)
        out: list[Tagged] = []
        while (items := inbox.get()) is not None:
            run: list[Observation] = []
            where: list[int] = []
            for pos, item in items:
                if isinstance(item, Sweep):
                    _detect_run(detect, run, where, out)
                    run, where = [], []
                    swept = detect.sweep(item.current, item.now)
                    out.extend((pos, 0, ev.model_dump_json()) for ev in swept)
                else:
                    run.append(item)
                    where.append(pos)
            _detect_run(detect, run, where, out)
        results.put(("done", job, out, known_thresholds(), detect.stats.observations))
    except BaseException:
        results.put(("error", job, traceback.format_exc()))
        raise


def _end_with_parent() -> None:
    """End this process as soon as the reading process is gone (killed: nobody will read
    a result or send the end). A thread, not a check between reads: a reading process
    killed while it wrote a batch leaves that batch half in the pipe, and the read waits
    for the rest for good."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="sentinel-replay-parent-watch", daemon=True).start()


@contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """SIGINT ignored while processes start, so that they start with it ignored (an
    ignored signal stays ignored across exec, and Python keeps it so): a Ctrl-C during
    their imports would otherwise print a traceback from each. Only the main thread may
    set handlers; elsewhere the processes set it themselves, a moment later."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _raise_if_error(result: tuple[Any, ...]) -> tuple[Any, ...]:
    """``result`` of a detection process, unless it is its error (``("error", job,
    traceback)``), which is raised."""
    if result[0] == "error":
        # (from None: it may be read while a queue's Full is being handled)
        raise DetectionProcessError(f"detection process {result[1]} failed:\n{result[2]}") from None
    return result


def _detect_run(detect: Any, run: list[Observation], where: list[int], out: list[Tagged]) -> None:
    """Detect ``run`` (observations at positions ``where``), tagging each incident event
    with its observation's position: one step per observation, the steps' last part (the
    state written back) with the last one."""
    if not run:
        return
    last = len(where) - 1
    for i, events in enumerate(detect.process_steps(run, chunk=1)):
        pos = where[min(i, last)]
        out.extend((pos, 1, ev.model_dump_json()) for ev in events)


class ParallelPipeline:
    """:class:`streams.pipeline.replay.Pipeline` with detection in ``jobs`` processes:
    :meth:`feed` joins and hands observations on, :meth:`flush` (once, at the end) waits
    for every process and returns all incident events in stream order. :meth:`close`
    stops the processes (call it in a ``finally``)."""

    def __init__(self, settings: Settings, jobs: int, *, batch: int) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, not {jobs}")
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.jobs = jobs
        self.batch = batch
        # the detection processes' own settings, read here first: a bad policy or playbook
        # fails before any process starts
        load_policy(settings.detection.alerting_policy)
        load_playbooks(settings.detection.playbooks_dir)
        self.joiner = Joiner(settings.detection, {})
        self.observations = [0] * jobs
        """Observations each detection process took (filled by :meth:`flush`)."""
        self._grid = SweepGrid()
        self._job_of: dict[str, int] = {}
        """Each model's detection process."""
        self._lookahead: list[Item] | None = []
        """The first observations (and sweeps) until the models are placed, then None."""
        self._seen: dict[str, int] = {}
        """Observations per model in the look-ahead."""
        self._held = 0
        """Observations in the look-ahead."""
        self._sent = [0] * jobs
        """Observations queued for each process."""
        self._early: list[tuple[Any, ...]] = []
        """Results read while waiting to queue more input (:meth:`_check_errors`)."""
        self._position = 0
        self._buffers: list[list[Item]] = [[] for _ in range(jobs)]
        # spawn, not fork: the parent may run threads (a progress bar's monitor). As with
        # any spawning code, a script that calls this needs an ``if __name__ == "__main__"``
        # guard (the children import the script's main module).
        ctx = multiprocessing.get_context("spawn")
        self._results: Queue[tuple[Any, ...]] = ctx.Queue()
        self._inboxes: list[Queue[list[Item] | None]] = [
            ctx.Queue(maxsize=IN_FLIGHT) for _ in range(jobs)
        ]
        known = known_thresholds()
        self._procs: list[BaseProcess] = [
            ctx.Process(
                target=detect_process,
                args=(settings, jobs, self._inboxes[i], self._results, i, known),
                name=f"sentinel-replay-detect-{i}",
                daemon=True,
            )
            for i in range(jobs)
        ]
        with _interrupts_ignored():
            for proc in self._procs:
                proc.start()

    @property
    def pids(self) -> list[int | None]:
        """The detection processes' ids."""
        return [proc.pid for proc in self._procs]

    def feed(self, event: AnyEvent, coords: Coordinates) -> list[IncidentEvent]:
        """Join one decoded event and queue its observations (incidents come at the end)."""
        for obs in self.joiner.process(event, coords):
            self._position += 1
            pos = self._position
            if self._grid.due(event_time(obs.event), serves(obs.event)):
                self._route(pos, Sweep(obs.model, obs.event.timestamp))
            self._route(pos, obs)
        return []

    def _route(self, pos: int, item: Observation | Sweep) -> None:
        """Queue ``item`` for its model's process (a sweep: for every process). The first
        :data:`LOOKAHEAD` observations wait until the models are placed by their counts
        among them (:meth:`_place`)."""
        if self._lookahead is not None:
            self._lookahead.append((pos, item))
            if isinstance(item, Observation):
                self._seen[item.model] = self._seen.get(item.model, 0) + 1
                self._held += 1
                if self._held >= LOOKAHEAD:
                    self._place()
            return
        if isinstance(item, Sweep):
            for buf in self._buffers:
                buf.append((pos, item))
            return
        job = self._job_of.get(item.model)
        if job is None:  # a model first seen after the look-ahead: the least loaded process
            job = self._job_of[item.model] = min(range(self.jobs), key=self._sent.__getitem__)
        self._sent[job] += 1
        self._buffers[job].append((pos, item))
        if len(self._buffers[job]) >= self.batch:
            self._send(job)

    def _place(self) -> None:
        """Place the models seen so far, busiest first, each on the process with the fewest
        observations placed (longest-processing-time first: within 4/3 of the best split
        of those counts), then route what waited."""
        loads = [0] * self.jobs
        for model, count in sorted(self._seen.items(), key=lambda mc: (-mc[1], mc[0])):
            job = min(range(self.jobs), key=loads.__getitem__)
            self._job_of[model] = job
            loads[job] += count
        waiting, self._lookahead = self._lookahead or [], None
        for pos, item in waiting:
            self._route(pos, item)

    def flush(self) -> list[IncidentEvent]:
        """Send what is left, end every process and merge their incident events."""
        if self._lookahead is not None:
            self._place()
        for job in range(self.jobs):
            self._send(job)
            self._put(job, None)
        by_job: dict[int, list[Tagged]] = {}
        for _ in range(self.jobs):
            _, job, *rest = _raise_if_error(self._result())
            by_job[job], thresholds, self.observations[job] = rest
            add_thresholds(thresholds)
        for proc in self._procs:
            proc.join()
        # stable: at one position, a process's own order, then the processes in order
        tagged = sorted(
            (t for job in range(self.jobs) for t in by_job[job]), key=lambda t: (t[0], t[1])
        )
        return [IncidentEvent.model_validate_json(js) for _, _, js in tagged]

    def close(self) -> None:
        """Stop every detection process still running (after an error or interrupt) and
        drop what is still queued for them: a queue's feeder thread would otherwise wait at
        exit for a reader that is gone."""
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
        for inbox in self._inboxes:
            inbox.cancel_join_thread()
            inbox.close()
        self._results.close()

    def _send(self, job: int) -> None:
        buf = self._buffers[job]
        if buf:
            self._buffers[job] = []
            self._put(job, buf)

    def _put(self, job: int, items: list[Item] | None) -> None:
        """Queue ``items`` for ``job``, waiting while its queue is full; a process that
        died meanwhile raises its error instead of waiting forever."""
        while True:
            try:
                self._inboxes[job].put(items, timeout=POLL_S)
                return
            except queue.Full:
                self._check_errors()
                self._check_alive()  # (a process killed with no message)

    def _result(self) -> tuple[Any, ...]:
        if self._early:
            return self._early.pop(0)
        while True:
            try:
                result: tuple[Any, ...] = self._results.get(timeout=POLL_S)
                return result
            except queue.Empty:
                self._check_alive()

    def _check_errors(self) -> None:
        """Raise a process's error if one came back: a process that failed puts its
        traceback on the results queue and cannot finish exiting until it is read."""
        try:
            result: tuple[Any, ...] = self._results.get_nowait()
        except queue.Empty:
            return
        # A process that had all its input (flush) and is done: kept for ``_result``.
        self._early.append(_raise_if_error(result))

    def _check_alive(self) -> None:
        for job, proc in enumerate(self._procs):
            if not proc.is_alive() and proc.exitcode != 0:
                detail = ""
                try:
                    kind, _, *rest = self._results.get(timeout=POLL_S)
                    detail = f":\n{rest[0]}" if kind == "error" else ""
                except queue.Empty:
                    pass
                raise DetectionProcessError(
                    f"detection process {job} exited with code {proc.exitcode}{detail}"
                ) from None
