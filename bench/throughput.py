"""Throughput: one Sentinel worker vs a plain aiokafka consumer on the same topics.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/throughput.py [--events N] [--quick]
        [--requests-per-hour R] [--replay-only [--detect-batch B]] [--sample F] [--jobs N]
        [--workers N [--warm]] [--store memory|rocksdb]

Starts its own single-node broker (or uses SENTINEL_BENCH_BROKER=host:port), writes a
simulated stream of N events to the four event topics (keyed by request id, as the SDK
publishes), then measures in the same run, each reading the full backlog:

- plain consumer: an aiokafka consumer reading those records, doing nothing with them
  (the ceiling for any consumer in Python on this machine);
- plain consumer + decode: the same, decoding every record with the worker's own
  decoder (:func:`streams.contract.decode.decode`): the fair ceiling for the worker;
- faust no-op agent: an app with the worker's own faust settings whose agent takes the
  same records through faust's per-record path (``take_events``) and does nothing (faust
  makes an event, two asyncio tasks and a queue hand-off per record);
- batch no-op agent: the same through the batch ingress (streams.runtime.batching);
- worker: `sentinel run` (all agents and detectors on, the memory store unless
  ``--store rocksdb``), timed from its first consumed record (its /metrics endpoint)
  until the end markers (one certain self-harm output per model, published last) have
  paged and its detect stage has taken as many observations as the backlog holds, so
  every partition was processed to the end; once with the batch ingress (the default)
  and once with ``worker.batch_ingress = false`` (faust's per-record path, as before),
  and once with ``worker.background_solves = false`` (every threshold solve in its event
  loop);
- N workers in one group (``--workers N``), also by CPU: events per worker CPU-second
  for one worker and for the group, each group worker's CPU, records read and
  observations detected, and the speed-up the group would reach with a core per worker
  (on a shared 2-core machine the wall clock caps it: the broker, the bench and the
  workers take turns); with ``--warm`` once more, one worker and the group each starting
  with the first phase's solved thresholds (each worker otherwise solves its own);
- replay: the same pipeline offline over the same lines (no Kafka), and its time split
  into stages: decode, join (route to the request's join state), detect, publish
  (incident JSON); detect is split once more by replaying with every detector's update a
  no-op (its evidence tracker kept): the detectors themselves, and the rest (key
  routing, budgets, priors, evidence, the incident engines), and the rest once more into
  route, evidence (trackers, each signal's ranges and samples) and engines (the incident
  engines; the last two timed call by call). The replay's rate without the detectors is
  the ceiling of the per-event pipeline, however fast they become; another replay feeds
  each learned detector its column of a batch in one ``update_many`` (signals dropped),
  the upside of columnar detector updates. A last replay times every detector's
  ``update`` by class (calls per event, us per call, share of that replay).
  ``--replay-only`` prints this part alone (no broker). ``--requests-per-hour`` sets the
  simulated rate: a busy model (72,000 or more) gives each key long columns per batch,
  where columnar updates pay, and ``--detect-batch`` the replay's detection batch.
- ``--sample F``: once more a worker (with ``--replay-only``: a replay, beside one of
  every request) with every model's requests sampled at ``F``
  (``detection.sample_fractions``, :mod:`streams.pipeline.sampling`): what the capacity
  valve for a model busier than one worker buys.
- ``--jobs N`` (with ``--replay-only``): once more a replay with detection in N processes
  (``sentinel replay --jobs N``, :mod:`streams.pipeline.parallel`), beside one.

It prints events/s for each and the ratios to the decode-matched plain consumer, to the
plain consumer and to the faust no-op agent (absolute numbers drift on shared machines;
ratios measured in one run are what to compare). Goal from the issue: the worker at 50%
or more of the decode-matched plain consumer's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaConsumer  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer  # noqa: E402

from alerting.clock import SYSTEM_CLOCK  # noqa: E402
from bench.broker import bench_broker  # noqa: E402
from detectors.base import Signal  # noqa: E402
from streams.contract.decode import Coordinates, DeadLetter, decode  # noqa: E402
from streams.devtools.broker import free_port  # noqa: E402
from streams.devtools.scenario import Scenario  # noqa: E402
from streams.devtools.simulate import Simulator  # noqa: E402
from streams.pipeline.calibration import calibrations_path  # noqa: E402
from streams.pipeline.load import WARN_NEED  # noqa: E402
from streams.pipeline.observation import Observation  # noqa: E402
from streams.pipeline.replay import Pipeline, ReplayResult, replay_lines  # noqa: E402
from streams.settings import (  # noqa: E402
    Settings,
    load_settings,
    topic_kinds,
)
from tests.integration.traffic import critical_marker, topic_for  # noqa: E402
from tests.integration.workers import child_env  # noqa: E402

DEFAULT_RATE = 3_600
"""Simulated requests an hour unless ``--requests-per-hour`` says otherwise."""


def _say(msg: str) -> None:
    print(f"[throughput] {msg}", file=sys.stderr, flush=True)


def _publish(bootstrap: str, settings: Settings, lines: list[str]) -> float:
    topics = topic_for(settings)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=1 << 20)
    began = time.perf_counter()
    for line in lines:
        head = json.loads(line)
        producer.send(
            topics[head["event_type"]], key=head["gen_ai.response.id"].encode(), value=line.encode()
        )
    producer.flush(timeout=300)
    producer.close()
    return time.perf_counter() - began


async def _plain(bootstrap: str, settings: Settings, n: int, *, decoding: bool = False) -> float:
    """Seconds for a plain aiokafka consumer to read ``n`` records (and, with ``decoding``,
    to decode each one as the worker's ingress does)."""
    kinds = topic_kinds(settings)
    consumer = AIOKafkaConsumer(
        *topic_for(settings).values(),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    try:
        # Timed from the first record, as the agents and the worker are.
        got, began = 0, 0.0
        while got < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if batches and not got:
                began = time.perf_counter()
            got += sum(len(records) for records in batches.values())
            if decoding:
                now = SYSTEM_CLOCK.now()
                for tp, records in batches.items():
                    kind = kinds.get(tp.topic)
                    for r in records:
                        coords = Coordinates(r.topic, r.partition, r.offset)
                        decode(r.value, coords, now=now, default_type=kind, key=r.key)
        return time.perf_counter() - began
    finally:
        await consumer.stop()


def _finish(out: str, seconds: float) -> None:  # pragma: no cover - runs in a subprocess
    Path(out).write_text(str(seconds))
    os._exit(0)  # the measurement is done; no orderly faust shutdown needed


def _noop_child(out: str, n: int) -> None:  # pragma: no cover - runs in a subprocess
    """The faust no-op agent: the worker's app settings, the same four topics, no work;
    through the batch ingress when the settings say ``worker.batch_ingress``."""
    import faust

    from streams.runtime.app import create_app
    from streams.runtime.batching import BatchApp
    from streams.runtime.ingress import TAKE_MAX, TAKE_WITHIN_S
    from streams.runtime.worker import quiet_worker

    settings = load_settings(env=os.environ)
    app = create_app(settings)
    seen = {"n": 0, "t0": 0.0}
    if isinstance(app, BatchApp):

        async def noop_batches(stream: Any) -> None:
            async for batch in stream:
                if seen["n"] == 0:
                    seen["t0"] = time.perf_counter()
                seen["n"] += len(batch)
                if seen["n"] >= n:
                    _finish(out, time.perf_counter() - seen["t0"])

        batches = app.batch_topic(*topic_for(settings).values())
        app.agent(batches, name="bench.noop", concurrency=1)(noop_batches)
        sys.argv = [sys.argv[0], "worker", "-l", "warn"]
        quiet_worker(faust.Worker(app, loglevel="warning")).execute_from_commandline()
        return
    source = app.topic(
        *topic_for(settings).values(),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def noop(stream: Any) -> None:
        async for batch in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            if seen["n"] == 0:
                seen["t0"] = time.perf_counter()
            seen["n"] += len(batch)
            if seen["n"] >= n:
                _finish(out, time.perf_counter() - seen["t0"])

    app.agent(source, name="bench.noop")(noop)
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    quiet_worker(faust.Worker(app, loglevel="warning")).execute_from_commandline()


def _child_env(settings: Settings) -> dict[str, str]:
    return child_env(settings, {"OPENBLAS_NUM_THREADS": "1"})


def _faust_noop(settings: Settings, n: int, tmp: Path) -> float:
    out = tmp / "noop.seconds"
    log = tmp / "noop.log"
    with log.open("wb") as sink:
        proc = subprocess.run(
            [sys.executable, __file__, "--noop-child", str(out), "--events", str(n)],
            env=_child_env(settings),
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            timeout=1800,
            check=False,
        )
    if not out.exists():
        raise RuntimeError(f"faust no-op agent failed ({proc.returncode}); see {log}")
    return float(out.read_text())


def _profiler(out: Path | None) -> list[str]:
    """The py-spy prefix that records the worker into ``out`` (nothing without ``out``)."""
    if out is None:
        return []
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return [spy, "record", "--format", "raw", "--rate", "200", "--output", str(out), "--"]


def profile_path(profile: Path | None, tag: str) -> Path | None:
    """A recording beside ``profile``: ``<stem>-<tag><suffix>`` (``profile`` itself for an
    empty ``tag``; None when nothing is recorded). A phase's first worker is recorded into
    its path, the ``i``-th into ``<stem>-<i><suffix>``; the group phase's under ``group``."""
    if profile is None or not tag:
        return profile
    return profile.with_name(f"{profile.stem}-{tag}{profile.suffix}")


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a live process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class WorkerRun:
    """One timed phase of ``count`` workers: wall seconds from the first consumed record
    until every end marker paged and the workers' detect stages together took as many
    observations as the backlog holds (:func:`_time_workers`); and per worker, its CPU
    seconds in that time (empty under the profiler, whose process is not the worker's),
    the records its ingress read, the observations its detect stage took (the models its
    partitions own) and the rebalances it saw."""

    seconds: float
    cpu: list[float]
    consumed: list[float]
    observed: list[float]
    rebalances: list[float]
    solves: list[float]
    """Threshold solves each worker asked its background process for."""
    superseded: list[float]
    """Of those, each worker's dropped unsolved (its detectors had asked for newer ones)."""
    unanswered: list[float]
    """Of those, each worker's still waiting when the backlog was done (not in the waits)."""
    solve_wait_s: list[float]
    """Each worker's mean wait from a solve's request to its answer (s)."""
    detect_s: list[float]
    """Each worker's own account of its detect stage's seconds
    (``sentinel_detect_model_seconds_total``, every model), since it started."""


def _nth_worker(settings: Settings, tmp: Path, i: int, port: int) -> Settings:
    """The settings of a phase's ``i``-th worker: its own web port and data directory."""
    data_dir = tmp / f"{settings.worker.app_id}-{i}"
    worker = settings.worker.model_copy(update={"web_port": port, "data_dir": data_dir})
    return settings.model_copy(update={"worker": worker})


def _time_workers(
    settings: Settings,
    count: int,
    tmp: Path,
    models: set[str],
    profile: Path | None,
    expect: int,
    thresholds: Path | None = None,
) -> WorkerRun:
    """Run ``count`` workers in one group over the backlog of ``expect`` events
    (:class:`WorkerRun`); with ``profile``, py-spy records each (:func:`profile_path`). With
    ``thresholds`` (a worker's saved calibrations), every worker starts with those
    thresholds solved.

    The markers alone do not show that a group is done. Each worker's ingress forwards
    the observations of the partitions it reads to the by-model topic, so a model's
    observations arrive there from several producers, and a marker can overtake another
    worker's earlier observations (docs/validation.md, "Stop 33"). So the phase ends once
    the detect stages' counters add up to the backlog too. An observation processed twice
    after a rebalance counts twice: a group's time can end early by those (each worker's
    records read are printed; their sum less the backlog is what was read twice)."""
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    logs: list[Path] = []
    try:
        for i in range(count):
            port = free_port()
            mine = _nth_worker(settings, tmp, i, port)
            if thresholds is not None:
                saved = calibrations_path(mine)
                saved.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(thresholds, saved)
            log = tmp / f"{settings.worker.app_id}-{i}.log"
            logs.append(log)
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [
                            *_profiler(profile_path(profile, str(i) if i else "")),
                            sys.executable,
                            "-m",
                            "streams.cli.main",
                            "run",
                        ],
                        env=_child_env(mine),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=REPO,
                    )
                )
            ports.append(port)
        deadline = time.monotonic() + 120
        while not any(_consumed(port) for port in ports):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"no worker started consuming; see the logs in {tmp}")
            time.sleep(0.05)
        began = time.perf_counter()
        cpu0 = [] if profile else [_cpu_seconds(p.pid) for p in procs]
        check = functools.partial(_check_dead_letters, ports)
        _wait_markers(_bootstrap_of(settings), settings, models, 1800, check)
        done = _wait_observed(ports, expect, 600)
        cpu = [_cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=False)]
        consumed = [_consumed(port) for port in ports]
        observed = [_observed(port) for port in ports]
        rebalances = [_counter(port, "sentinel_rebalances_total") for port in ports]
        sent = [_counter(port, 'sentinel_threshold_solves_total{outcome="sent"}') for port in ports]
        superseded = [
            _counter(port, 'sentinel_threshold_solves_total{outcome="superseded"}')
            for port in ports
        ]
        waits = [
            _counter(port, "sentinel_threshold_solve_wait_seconds_sum")
            / max(1.0, _counter(port, "sentinel_threshold_solve_wait_seconds_count"))
            for port in ports
        ]
        unanswered = [_counter(port, "sentinel_threshold_solves_in_flight") for port in ports]
        detect_s = [_counter(port, "sentinel_detect_model_seconds_total") for port in ports]
        return WorkerRun(
            done - began,
            cpu,
            consumed,
            observed,
            rebalances,
            sent,
            superseded,
            unanswered,
            waits,
            detect_s,
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT if profile else signal.SIGTERM)
        for proc, log in zip(procs, logs, strict=True):
            _stop_or_kill(proc, log)


def _wait_observed(ports: list[int], expect: int, timeout_s: float) -> float:
    """When the workers' detect stages together have taken ``expect`` observations."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = sum(_observed(port) for port in ports)
        if seen >= expect:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{seen:.0f} of {expect} observations detected after the markers")
        time.sleep(0.25)


def _stop_or_kill(proc: subprocess.Popen[bytes], log: Path, grace_s: float = 60.0) -> None:
    """Wait for a worker told to stop; one still running after ``grace_s`` seconds is
    killed, and its log's tail printed (the timing already taken stands)."""
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        tail = log.read_text(errors="replace").splitlines()[-40:]
        print(
            f"[throughput] worker pid {proc.pid} had not stopped {grace_s:.0f} s after it "
            f"was told to; killed. The end of its log ({log}):",
            *tail,
            sep="\n",
            file=sys.stderr,
        )


def _bootstrap_of(settings: Settings) -> str:
    return settings.kafka.broker.removeprefix("kafka://")


def _counter(port: int, name: str) -> float:
    """A worker counter summed over its labels (0 while the worker is not serving yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _consumed(port: int) -> float:
    """Records the worker's ingress has read so far."""
    return _counter(port, "sentinel_events_consumed_total")


def _observed(port: int) -> float:
    """Observations the worker is done with so far: taken by its detect stage, or dropped
    by its join as outside their model's sample (``detection.sample_fractions``)."""
    return _counter(port, "sentinel_detect_observations_total") + _counter(
        port, "sentinel_join_unsampled_total"
    )


def _check_dead_letters(ports: list[int]) -> None:
    """Fail at once, not after the markers' timeout, when the workers dead-letter most of
    what they read (e.g. events outside the ingress's time window)."""
    consumed = sum(_consumed(port) for port in ports)
    dead = sum(_counter(port, "sentinel_events_dead_lettered_total") for port in ports)
    if consumed >= 1000 and dead >= consumed / 2:
        raise RuntimeError(f"the workers dead-lettered {dead:.0f} of {consumed:.0f} records")


def _wait_markers(
    bootstrap: str,
    settings: Settings,
    models: set[str],
    timeout_s: float,
    check: Callable[[], None] = lambda: None,
) -> float:
    consumer = KafkaConsumer(
        settings.topics.alerts,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=200,
    )
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    next_check = time.monotonic() + 5.0
    try:
        while time.monotonic() < deadline:
            for record in consumer:
                event = json.loads(record.value)
                if event["incident_type"].startswith("critical"):
                    seen.add(event["labels"]["model"])
            if seen >= models:
                return time.perf_counter()
            if time.monotonic() >= next_check:  # every 5 s: a scrape costs the worker
                check()
                next_check = time.monotonic() + 5.0
        raise TimeoutError(f"markers seen for {sorted(seen)} of {sorted(models)}")
    finally:
        consumer.close()


SEGMENT_DRIFT_VARIANTS: dict[str, dict[str, Any]] = {
    "segment drift off": {"segment_drift_min_share": 0.0},
    "default (share >= 0.05)": {},
    "every segment": {"drift_levels": ("model", "version", "segment")},
}
"""The per-segment drift configurations whose replay CPU time is compared (same lines, one
run, back to back): off, the default traffic-share floor, and drift at every segment."""


def _segment_drift_cost(lines: list[str], settings: Settings) -> tuple[float, dict[str, float]]:
    """Offline replay per :data:`SEGMENT_DRIFT_VARIANTS`: (wall seconds of the default,
    {variant: CPU seconds})."""
    encoded = [line.encode() for line in lines]
    cpu: dict[str, float] = {}
    wall = 0.0
    # Untimed first pass with every variant's detectors: thresholds are calibrated once
    # per process and cached (streams.pipeline.calibration), so whichever variant ran
    # first would pay for all of them.
    every = SEGMENT_DRIFT_VARIANTS["every segment"]
    det = settings.detection.model_copy(update=every)
    replay_lines(encoded, settings.model_copy(update={"detection": det}))
    for name, update in SEGMENT_DRIFT_VARIANTS.items():
        det = settings.detection.model_copy(update=update)
        began, c0 = time.perf_counter(), time.process_time()
        replay_lines(encoded, settings.model_copy(update={"detection": det}))
        cpu[name] = time.process_time() - c0
        if not update:
            wall = time.perf_counter() - began
    return wall, cpu


def _print_segment_drift(cpu: dict[str, float], n: int) -> None:
    off = cpu["segment drift off"]
    print(f"\nsegment drift cost, offline replay of {n} events (CPU time; ratio vs off)")
    for name, secs in cpu.items():
        print(f"  {name:26} {secs:8.2f} s CPU  {secs / n * 1e6:7.1f} us/event  x{secs / off:.2f}")


def _segment_drift_only(events: int) -> int:
    """``--segment-drift-only``: the segment-drift cost without a broker (replay only)."""
    hours = max(1.0, events / 4000.0)
    scenario = Scenario(seed=7, duration=timedelta(hours=hours), events_per_hour=3600)
    lines = list(Simulator(scenario).lines())
    _, cpu = _segment_drift_cost(lines, load_settings(env={}))
    _print_segment_drift(cpu, len(lines))
    return 0


def _stages(lines: list[bytes], settings: Settings, size: int = 0) -> dict[str, float]:
    """Offline replay's seconds per stage: decode, join, detect, publish (incident JSON);
    detection in batches of ``size`` observations (0: replay's own)."""
    from streams.pipeline.replay import BATCH, Pipeline

    size = size or BATCH
    topics = {kind: topic for topic, kind in topic_kinds(settings).items()}
    pipeline = Pipeline(settings, batch=size)
    spent = dict.fromkeys(("decode", "join", "detect", "publish"), 0.0)
    clock = time.perf_counter
    batch: list[Observation] = []

    def detect_and_publish() -> None:
        t0 = clock()
        incidents = pipeline.detect.process(batch)
        t1 = clock()
        for incident in incidents:
            incident.to_json_bytes()
        spent["detect"] += t1 - t0
        spent["publish"] += clock() - t1
        batch.clear()

    now = SYSTEM_CLOCK.now()
    for offset, line in enumerate(lines):
        t0 = clock()
        event = decode(line, Coordinates("replay", 0, offset), now=now)
        t1 = clock()
        spent["decode"] += t1 - t0
        if isinstance(event, DeadLetter):
            continue
        coords = Coordinates(topics[event.event_type], 0, offset)
        batch.extend(pipeline.joiner.process(event, coords))
        spent["join"] += clock() - t1
        if len(batch) >= size:
            detect_and_publish()
    detect_and_publish()
    return spent


@contextlib.contextmanager
def _detectors_off() -> Iterator[None]:
    """Every detector's update a no-op, its evidence tracker still fed: what detection
    costs without the detectors (a counterfactual of this benchmark, never a path of the
    service)."""
    from streams.pipeline import detectorset

    original = detectorset.DetectorSet._feed

    def feed(
        ds: detectorset.DetectorSet, name: str, x: Any, obs: Observation, notable: bool
    ) -> list[tuple[str, Signal, detectorset.Tracker]]:
        tracker = ds.trackers.get(name)
        if tracker is None:
            tracker = ds.trackers[name] = detectorset.Tracker()
        tracker.see(obs, notable, detectorset.source(obs))
        return []

    detectorset.DetectorSet._feed = feed  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        detectorset.DetectorSet._feed = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _column_updates() -> Iterator[None]:
    """Each learned detector takes its values of a detection batch in one ``update_many``
    at the batch's end instead of one ``update`` per observation; all else as the service
    does it (young detectors step; trackers, budgets and priors per observation). The
    columns' signals are dropped. What the detect stage would cost with columnar detector
    updates (the epoch path of docs/validation.md, stop 47): a counterfactual of this
    benchmark, never a path of the service."""
    from streams.pipeline import detect, detectorset

    pending: dict[int, tuple[Any, list[Any]]] = {}
    feed, steps = detectorset.DetectorSet._feed, detect.Detect.process_steps

    def columns(
        ds: detectorset.DetectorSet, name: str, x: Any, obs: Observation, notable: bool
    ) -> list[tuple[str, Signal, detectorset.Tracker]]:
        det = ds.detectors.get(name)
        if det is None or det.learning:
            return feed(ds, name, x, obs, notable)
        fed = ds._ready(name, obs, notable)
        if fed is not None:
            pending.setdefault(id(det), (det, []))[1].append(x)
        return []

    def batched(self: detect.Detect, batch: Any, chunk: int = 0) -> Iterator[Any]:
        yield from steps(self, batch, chunk)
        for det, xs in pending.values():
            det.update_many(xs)
        pending.clear()

    detectorset.DetectorSet._feed = columns  # type: ignore[method-assign,assignment]
    detect.Detect.process_steps = batched  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        detectorset.DetectorSet._feed = feed  # type: ignore[method-assign]
        detect.Detect.process_steps = steps  # type: ignore[method-assign]


@contextlib.contextmanager
def _timed_solves() -> Iterator[list[float]]:
    """Seconds of each exact threshold solve (Bernoulli and mean-chart lattices) made
    inside the block: the worker makes them in its background process
    (``worker.background_solves``); with that off, its event loop waits for each."""
    from detectors import arl

    took: list[float] = []
    bernoulli, lattice = arl._bernoulli_threshold, arl.lattice_threshold

    def timed(solve: Callable[..., int]) -> Callable[..., int]:
        def run(*args: Any) -> int:
            t0 = time.perf_counter()
            try:
                return solve(*args)
            finally:
                took.append(time.perf_counter() - t0)

        return run

    arl._bernoulli_threshold = timed(bernoulli)
    arl.lattice_threshold = timed(lattice)
    try:
        yield took
    finally:
        arl._bernoulli_threshold = bernoulli
        arl.lattice_threshold = lattice


def _outermost(
    method: Callable[..., Any], busy: list[int], record: Callable[[Any, float], None]
) -> Callable[..., Any]:
    """``method`` timed at its outermost call only (``busy`` is shared by every method
    timed as one): ``record(self, seconds)`` after each such call. Calls nested inside it
    (a detector's parts, ``super()``) count as its own time."""
    clock = time.perf_counter

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        if busy[0]:
            return method(*args, **kwargs)
        busy[0] = 1
        t0 = clock()
        try:
            return method(*args, **kwargs)
        finally:
            busy[0] = 0
            record(args[0], clock() - t0)

    return run


@contextlib.contextmanager
def _timed_detectors() -> Iterator[dict[str, list[float]]]:
    """Every registered detector's ``update`` timed inside the block, by the class of the
    detector the pipeline called: ``{class name: [seconds, calls]}``. Only the outermost
    call is timed, so a detector's parts (a score chart's distribution test, a harm
    test's categories) and a subclass's ``super().update`` count as its own time. The
    timers cost a little: a counterfactual of this benchmark, never a path of the
    service."""
    from detectors.registry import REGISTRY

    spent: dict[str, list[float]] = {}
    busy = [0]

    def record(detector: Any, seconds: float) -> None:
        entry = spent.setdefault(type(detector).__name__, [0.0, 0])
        entry[0] += seconds
        entry[1] += 1

    owners = {
        owner
        for cls in REGISTRY.values()
        for owner in cls.__mro__
        if "update" in vars(owner) and not getattr(owner.update, "__isabstractmethod__", False)
    }
    originals = {owner: vars(owner)["update"] for owner in owners}
    for owner, update in originals.items():
        owner.update = _outermost(update, busy, record)
    try:
        yield spent
    finally:
        for owner, update in originals.items():
            owner.update = update


@contextlib.contextmanager
def _timed_parts() -> Iterator[dict[str, float]]:
    """Seconds spent inside the block in the detect stage's evidence bookkeeping (each
    detector's tracker, a signal's detection with its ranges and samples) and in the
    incident engines (observe a detection, tick), outermost call per part. The timers
    cost a little: a counterfactual of this benchmark, never a path of the service."""
    from alerting.engine import IncidentEngine
    from streams.pipeline.detect import Detect
    from streams.pipeline.detectorset import Tracker

    parts: dict[str, tuple[tuple[type, str], ...]] = {
        "evidence": ((Tracker, "see"), (Detect, "_detection")),
        "engines": ((IncidentEngine, "observe"), (IncidentEngine, "tick")),
    }
    spent = dict.fromkeys(parts, 0.0)

    def adder(part: str) -> Callable[[Any, float], None]:
        def record(_: Any, seconds: float) -> None:
            spent[part] += seconds

        return record

    originals = [(cls, name, vars(cls)[name]) for pairs in parts.values() for cls, name in pairs]
    for part, targets in parts.items():
        busy, record = [0], adder(part)
        for cls, name in targets:
            setattr(cls, name, _outermost(vars(cls)[name], busy, record))
    try:
        yield spent
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)


def _detector_lines(spent: dict[str, list[float]], total: float, n: int) -> list[str]:
    """The per-class report of :func:`_timed_detectors` over a replay of ``n`` events that
    took ``total`` seconds."""
    out = [
        f"\ndetectors by class (a replay with each update timed: {total:.2f} s, "
        f"{n / total:,.0f} events/s)",
        f"{'class':30} {'seconds':>8} {'share':>7} {'calls/event':>12} {'us/call':>8}",
    ]
    for name, (secs, calls) in sorted(spent.items(), key=lambda kv: -kv[1][0]):
        row = f"{name:30} {secs:8.2f} {secs / total:7.1%} {calls / n:12.2f}"
        out.append(f"{row} {secs / calls * 1e6:8.1f}")
    return out


def _solves_line(took: list[float], seconds: float) -> str:
    """What the threshold solves of a cold pass cost, and the longest event-loop wait."""
    if not took:
        return "threshold solves in the cold pass: none"
    ms = sorted(t * 1e3 for t in took)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return (
        f"threshold solves in the cold pass: {len(ms):,}, {sum(ms) / 1e3:.2f} s of "
        f"{seconds:.2f} s (the worker makes them in its background process; with "
        f"worker.background_solves = false each blocks its event loop): median "
        f"{ms[len(ms) // 2]:.2f} ms, 99th percentile {p99:.1f} ms, longest {ms[-1]:.1f} ms"
    )


def _replay_split(lines: list[bytes], settings: Settings, size: int = 0) -> list[str]:
    """Offline replay's stages, detect split into the detectors and the rest (see the
    module's docstring), after an untimed pass that fills the threshold cache from empty
    (its solves timed one by one): the report's lines. Detection takes batches of
    ``size`` observations (0: replay's own)."""
    from detectors.arl import clear_thresholds
    from streams.pipeline.replay import BATCH

    size = size or BATCH
    clear_thresholds()  # earlier phases of the run solved them: make this pass cold
    with _timed_solves() as took:
        t0 = time.perf_counter()
        replay_lines(lines, settings, batch=size)
        cold = time.perf_counter() - t0
    stages = _stages(lines, settings, size)
    with _detectors_off():
        rest = _stages(lines, settings, size)["detect"]
    with _column_updates():
        columnar = _stages(lines, settings, size)["detect"]
    with _timed_detectors() as spent, _timed_parts() as parts:
        t0 = time.perf_counter()
        replay_lines(lines, settings, batch=size)
        timed_total = time.perf_counter() - t0
    n = len(lines)
    total = sum(stages.values())
    detectors = max(0.0, stages["detect"] - rest)
    others = stages["detect"] - detectors
    rows = [
        *stages.items(),
        ("  detectors", detectors),
        ("  the rest", others),
        ("    route", max(0.0, others - parts["evidence"] - parts["engines"])),
        ("    evidence", parts["evidence"]),
        ("    engines", parts["engines"]),
    ]
    return [
        f"\nreplay by stage ({n} lines, {total:.2f} s in all, {n / total:,.0f} events/s; "
        f"detection in batches of {size:,} observations)",
        f"{'stage':12} {'seconds':>9} {'share':>7} {'us/event':>9}",
        *(f"{st:12} {secs:9.2f} {secs / total:7.1%} {secs / n * 1e6:9.1f}" for st, secs in rows),
        "(route: key levels, traffic, budgets, holds, priors; evidence: the detectors'\n"
        " trackers and each signal's ranges and samples; engines: the incident engines, both\n"
        " timed call by call in the last replay below; route: the rest less those two)",
        f"without the detectors' updates the replay would run {n / (total - detectors):,.0f} "
        f"events/s: the per-event pipeline's ceiling ({(total - detectors) / total:.0%} of "
        "its time now)",
        f"with each learned detector fed its column of a detection batch in one update_many "
        f"(a counterfactual: the columns' signals dropped), detect would take {columnar:.2f} s "
        f"against {stages['detect']:.2f} s, {stages['detect'] / columnar:.2f}x: the replay would "
        f"run {n / (total - stages['detect'] + columnar):,.0f} events/s",
        _solves_line(took, cold),
        *_detector_lines(spent, timed_total, n),
    ]


def _recent_scenario(
    events: int, now: datetime | None = None, requests_per_hour: int = DEFAULT_RATE
) -> Scenario:
    """About ``events`` events of ``requests_per_hour`` requests an hour (``events /
    4,000`` simulated hours at the default 3,600, at least the hour's worth), each request
    several events, in the hours just before ``now`` (default: the wall clock): the
    worker's ingress dead-letters events older than ``detection.max_past_hours`` (a fixed
    date in the past would be all dead letters). The traffic follows the simulator's
    daily cycle, so the same ``events`` hold fewer requests at night."""
    scale = requests_per_hour / DEFAULT_RATE
    hours = max(1.0, events / 4000.0) / scale
    now = datetime.now(UTC) if now is None else now
    start = now.replace(microsecond=0) - timedelta(hours=hours + 1)
    return Scenario(
        seed=7, start=start, duration=timedelta(hours=hours), events_per_hour=requests_per_hour
    )


def _sampled_lines(lines: list[bytes], models: list[str], fraction: float) -> list[str]:
    """Replay with every model's requests sampled at ``fraction``
    (``detection.sample_fractions``) against replay of every request, each timed on its
    second pass (the first fills the threshold cache: sampled keys see fewer events a
    second, so they run other run lengths), with the observations its detection took:
    the report's lines."""
    full = load_settings(env={})
    sampled = load_settings(
        env={}, overrides={"detection.sample_fractions": dict.fromkeys(models, fraction)}
    )
    rows = []
    for name, settings in (("every request", full), (f"sampled at {fraction:g}", sampled)):
        replay_lines(lines, settings)
        pipeline = Pipeline(settings)
        t0 = time.perf_counter()
        result = replay_lines(lines, settings, pipeline=pipeline)
        secs = time.perf_counter() - t0
        triggers = sum(e.action == "trigger" for e in result.incidents)
        rows.append((name, secs, pipeline.detect.stats.observations, triggers))
    n = len(lines)
    return [
        f"\nrequest sampling: every model at {fraction:g} of its requests "
        "(detection.sample_fractions; every line still decoded and joined)",
        f"{'replay':28} {'seconds':>8} {'events/s':>9} {'ratio':>6} {'detected':>9} "
        f"{'triggers':>8}",
        *(
            f"{name:28} {secs:8.2f} {n / secs:9,.0f} {rows[0][1] / secs:5.2f}x "
            f"{detected:9,d} {triggers:8d}"
            for name, secs, detected, triggers in rows
        ),
    ]


def _parallel_lines(lines: list[bytes], jobs: int) -> list[str]:
    """Replay with detection in ``jobs`` processes (:mod:`streams.pipeline.parallel`)
    against one, each timed on a threshold cache that an untimed run of each filled: the
    report's lines, with the triggers."""
    settings = load_settings(env={})
    # Each on a warm threshold cache: the processes' keys run other budgets (1/jobs each)
    # and so need thresholds of their own; those come back into this process's cache.
    replay_lines(lines, settings)
    replay_lines(lines, settings, jobs=jobs)
    t0 = time.perf_counter()
    one = replay_lines(lines, settings)
    one_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    many = replay_lines(lines, settings, jobs=jobs)
    many_s = time.perf_counter() - t0
    n = len(lines)

    def triggers(result: ReplayResult) -> int:
        return sum(e.action == "trigger" for e in result.incidents)

    return [
        f"\nreplay with detection in {jobs} processes (sentinel replay --jobs {jobs}; models "
        f"placed by traffic, each process 1/{jobs} of the budget; {os.cpu_count()} cores here)",
        f"{'replay':28} {'seconds':>8} {'events/s':>9} {'ratio':>6} {'triggers':>8}",
        f"{'one process':28} {one_s:8.2f} {n / one_s:9,.0f} {1:5.2f}x {triggers(one):8d}",
        f"{f'{jobs} detection processes':28} {many_s:8.2f} {n / many_s:9,.0f} "
        f"{one_s / many_s:5.2f}x {triggers(many):8d}",
    ]


def _replay_only(
    events: int, requests_per_hour: int, size: int, fraction: float, jobs: int = 1
) -> int:
    """``--replay-only``: the replay's stage split without a broker (the same scenario as
    the full run: the hours just before now, which the decoder takes as current); with
    ``fraction`` < 1, also replay with every model sampled at it; with ``jobs`` > 1, also
    replay with detection in that many processes."""
    scenario = _recent_scenario(events, requests_per_hour=requests_per_hour)
    lines = [line.encode() for line in Simulator(scenario).lines()]
    print("\n".join(_replay_split(lines, load_settings(env={}), size)))
    if fraction < 1.0:
        models = [m.name for m in scenario.models]
        print("\n".join(_sampled_lines(lines, models, fraction)))
    if jobs > 1:
        print("\n".join(_parallel_lines(lines, jobs)))
    return 0


def main() -> int:
    """The run, phase by phase in the order its report prints (long on purpose: one
    straight script reads better than helpers that each print a piece)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to process")
    parser.add_argument("--quick", action="store_true", help="30k events")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--profile",
        type=Path,
        help="record the worker with py-spy into this file (raw/collapsed stacks); with "
        "--workers, each group worker into <stem>-group[-i]<suffix> beside it (CPU-seconds "
        "are not read under the profiler)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also time this many workers in one consumer group (scale-out; default: off)",
    )
    parser.add_argument(
        "--store",
        choices=["memory", "rocksdb"],
        default="memory",
        help="the workers' state store (default memory; a deployment's default is rocksdb, "
        "whose workers also keep a standby copy of each other's partitions)",
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="with --workers: also time one worker and the group with the first phase's "
        "thresholds preloaded (scale-out without cold threshold solves)",
    )
    parser.add_argument(
        "--segment-drift-only",
        action="store_true",
        help="only the per-segment drift cost (offline replay, no broker)",
    )
    parser.add_argument(
        "--replay-only",
        action="store_true",
        help="only the offline replay's stage split (no broker)",
    )
    parser.add_argument(
        "--requests-per-hour",
        type=int,
        default=DEFAULT_RATE,
        help=f"the simulated traffic's rate (default {DEFAULT_RATE:,}; a busy model: "
        "72,000 or more, where each key's column of a batch is long)",
    )
    parser.add_argument(
        "--detect-batch",
        type=int,
        default=0,
        help="with --replay-only: observations per detection batch (default: replay's, 1,024)",
    )
    parser.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="also time a worker (with --replay-only: a replay) with every model's requests "
        "sampled at this fraction (detection.sample_fractions)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="also replay with detection in this many processes (sentinel replay --jobs), "
        "beside one",
    )
    parser.add_argument("--noop-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.noop_child:
        _noop_child(args.noop_child, args.events)
        return 0
    target = 30_000 if args.quick else args.events
    if args.segment_drift_only:
        return _segment_drift_only(target)
    if args.requests_per_hour < 1 or args.detect_batch < 0 or not 0 < args.sample <= 1:
        parser.error("--requests-per-hour must be >= 1, --detect-batch >= 0 and --sample in (0, 1]")
    if args.jobs < 1 or (args.jobs > 1 and not args.replay_only):
        parser.error("--jobs N needs --replay-only and N >= 1")
    if args.replay_only:
        return _replay_only(
            target, args.requests_per_hour, args.detect_batch, args.sample, args.jobs
        )
    scenario = _recent_scenario(target, requests_per_hour=args.requests_per_hour)
    hours = scenario.duration.total_seconds() / 3600
    lines = list(Simulator(scenario).lines())
    end = scenario.start + scenario.duration
    models = {m.name: m.version for m in scenario.models}
    markers = [
        critical_marker(m, v, end + timedelta(seconds=60 + i), i)
        for i, (m, v) in enumerate(models.items())
    ]
    n = len(lines) + len(markers)
    _say(f"{n} events ({hours:.1f} simulated hours)")

    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        with bench_broker(tmp, _say) as bootstrap:
            suffix = str(int(time.time()))
            port = free_port()
            settings = load_settings(
                env={},
                overrides={
                    "kafka.broker": f"kafka://{bootstrap}",
                    "kafka.topic_partitions": args.partitions,
                    "worker.app_id": f"bench-{suffix}",
                    "worker.store": f"{args.store}://",
                    "worker.data_dir": str(tmp / "worker"),
                    "worker.web_enabled": True,
                    "worker.web_port": port,
                    "worker.web_host": "127.0.0.1",
                    "worker.log_level": "warning",
                    "worker.batch_ingress": True,
                    **{f"topics.{k}": f"bench{suffix}.{k}" for k in Settings().topics.model_dump()},
                },
            )
            # The service creates its topics with the configured partition count.
            from streams.kafka.topics import ensure_topics

            ensure_topics(settings, [bootstrap])
            _say("publishing")
            publish_s = _publish(bootstrap, settings, [*lines, *markers])
            _say(f"published {n} in {publish_s:.1f} s; plain aiokafka consumer")
            plain_s = asyncio.run(_plain(bootstrap, settings, n))
            _say("plain aiokafka consumer + decode")
            decode_s = asyncio.run(_plain(bootstrap, settings, n, decoding=True))

            def variant(
                app_id: str, batch: bool, web: bool = True, background: bool = True
            ) -> Settings:
                worker = settings.worker.model_copy(
                    update={
                        "app_id": app_id,
                        "web_enabled": web,
                        "batch_ingress": batch,
                        "background_solves": background,
                    }
                )
                return settings.model_copy(update={"worker": worker})

            def own_group(
                app_id: str, batch: bool, alerts: str, background: bool = True
            ) -> Settings:
                """A group and an alerts topic of their own: the markers are paged again."""
                topics = settings.topics.model_copy(
                    update={"alerts": f"{settings.topics.alerts}-{alerts}"}
                )
                return variant(app_id, batch, background=background).model_copy(
                    update={"topics": topics}
                )

            _say("faust no-op agent (per-record path)")
            noop_s = _faust_noop(variant(f"bench-noop-{suffix}", False, False), n, tmp)
            _say("batch no-op agent")
            noop_batch_s = _faust_noop(variant(f"bench-noopb-{suffix}", True, False), n, tmp)
            _say("sentinel worker (batch ingress)")
            one = _time_workers(settings, 1, tmp, set(models), args.profile, n)
            worker_s = one.seconds
            _say("sentinel worker (faust per-record ingress)")
            per_record = own_group(f"bench-r-{suffix}", False, "r")
            worker_record_s = _time_workers(per_record, 1, tmp, set(models), None, n).seconds
            _say("sentinel worker (threshold solves in its event loop)")
            in_loop = own_group(f"bench-l-{suffix}", True, "l", background=False)
            worker_loop_s = _time_workers(in_loop, 1, tmp, set(models), None, n).seconds
            sampled_s = None
            if args.sample < 1.0:
                _say(f"sentinel worker, every model sampled at {args.sample:g}")
                fractions = dict.fromkeys(models, args.sample)
                detection = settings.detection.model_copy(update={"sample_fractions": fractions})
                sampled = own_group(f"bench-s-{suffix}", True, "s")
                sampled = sampled.model_copy(update={"detection": detection})
                sampled_s = _time_workers(sampled, 1, tmp, set(models), None, n).seconds
            group, scaled_s = None, None
            warm_one = warm_group = None
            if args.workers > 1:
                _say(f"{args.workers} sentinel workers (one consumer group)")
                scaled = own_group(f"bench-x-{suffix}", True, f"x{args.workers}")
                recorded = profile_path(args.profile, "group")
                group = _time_workers(scaled, args.workers, tmp, set(models), recorded, n)
                scaled_s = group.seconds
                if args.warm:
                    # The first phase's worker saved what it solved when it stopped.
                    solved = calibrations_path(_nth_worker(settings, tmp, 0, 0))
                    _say("warm: 1 sentinel worker, then the group, thresholds preloaded")
                    warm_one = _time_workers(
                        own_group(f"bench-w1-{suffix}", True, "w1"),
                        1,
                        tmp,
                        set(models),
                        None,
                        n,
                        solved,
                    )
                    warm_group = _time_workers(
                        own_group(f"bench-wx-{suffix}", True, f"wx{args.workers}"),
                        args.workers,
                        tmp,
                        set(models),
                        None,
                        n,
                        solved,
                    )

    _say("offline replay")
    began = time.perf_counter()
    replay_lines([line.encode() for line in lines], settings)
    replay_s = time.perf_counter() - began
    _say("offline replay, segment drift variants")
    seg_replay_s, seg_cpu = _segment_drift_cost(lines, settings)

    rows = [
        ("plain aiokafka consumer", plain_s),
        ("plain aiokafka consumer + decode", decode_s),
        ("faust no-op agent (per record)", noop_s),
        ("batch no-op agent", noop_batch_s),
        ("sentinel worker (all detectors)", worker_s),
        ("worker, faust per-record ingress", worker_record_s),
        ("worker, solves in its event loop", worker_loop_s),
        *([(f"worker, sampled at {args.sample:g}", sampled_s)] if sampled_s else []),
        *([(f"{args.workers} sentinel workers, one group", scaled_s)] if scaled_s else []),
        ("offline replay (no Kafka)", replay_s),
        ("offline replay, default drift", seg_replay_s),
    ]
    plain_rate, decode_rate, noop_rate = n / plain_s, n / decode_s, n / noop_s
    print(f"\nthroughput over {n} events, {args.partitions} partitions, 1 worker process")
    print(
        f"{'path':34} {'seconds':>9} {'events/s':>10} {'/ decode':>9} {'/ plain':>9} {'/ faust':>9}"
    )
    for name, secs in rows:
        rate = n / secs
        print(
            f"{name:34} {secs:9.2f} {rate:10,.0f} {rate / decode_rate:9.3f} "
            f"{rate / plain_rate:9.3f} {rate / noop_rate:9.3f}"
        )
    _say("offline replay, stage by stage")
    split = _replay_split([line.encode() for line in lines], settings)
    print("\n".join(split))
    ratio = (n / worker_s) / decode_rate
    print(
        f"\ngoal: worker >= 0.50 of the decode-matched plain consumer: {ratio:.3f} "
        f"{'PASS' if ratio >= 0.5 else 'MISS'}"
    )
    print(
        f"batch ingress: the worker ran {worker_record_s / worker_s:.2f}x the rate of the "
        f"per-record ingress; the batch no-op agent {noop_s / noop_batch_s:.1f}x the faust "
        f"no-op agent ({(n / noop_batch_s) / plain_rate:.3f} of the plain consumer)"
    )
    print(
        f"background threshold solves: the worker ran {worker_loop_s / worker_s:.2f}x the "
        "rate of one that solves in its event loop (worker.background_solves = false); "
        f"it asked for {one.solves[0]:,.0f} solves ({one.superseded[0]:,.0f} of them dropped "
        "unsolved: superseded by newer ones; "
        f"{one.unanswered[0]:,.0f} still waiting at the end), each answered "
        f"{one.solve_wait_s[0] * 1e3:,.0f} ms after its request on average (its detector "
        "charted on the bound meanwhile)"
    )
    print(
        f"the worker's own account (sentinel_detect_model_seconds_total): its detect stage "
        f"held the event loop {one.detect_s[0]:.1f} s of the {worker_s:.1f} s phase "
        f"({one.detect_s[0] / worker_s:.0%}), {one.detect_s[0] / n * 1e6:,.0f} us per event; "
        f"when its detection needs {WARN_NEED:.0%} of it or more for the traffic of five "
        "minutes, it logs a warning with sample fractions"
    )
    _print_segment_drift(seg_cpu, len(lines))
    if scaled_s:
        print(
            f"scale-out: {args.workers} workers in one group ran {worker_s / scaled_s:.2f}x "
            f"the rate of one ({os.cpu_count()} CPUs, shared with the broker)"
        )
    if group and one.cpu and group.cpu:
        print("\n".join(scale_out_lines(n, one, group)))
    if warm_one and warm_group:
        print("warm (every worker starts with the first phase's thresholds solved):")
        print("\n".join(scale_out_lines(n, warm_one, warm_group)))
    return 0


def scale_out_lines(n: int, one: WorkerRun, group: WorkerRun) -> list[str]:
    """Scale-out by CPU, which a shared machine's wall clock cannot show (the group's
    wall-clock ratio is capped by the cores it gets): events per worker CPU-second for one
    worker and for the group; each group worker's CPU, records read and observations
    detected; and the group's speed-up with a core per worker, which the busiest worker
    bounds (the group is done when it is: detection is keyed by model, so one model's
    observations all go to one worker)."""
    per_one, per_group = n / sum(one.cpu), n / sum(group.cpu)
    busiest = max(group.cpu)
    lines = [
        f"scale-out by CPU: 1 worker {per_one:,.0f} events per CPU-second "
        f"({sum(one.cpu) / one.seconds:.2f} cores busy); {len(group.cpu)} workers "
        f"{per_group:,.0f} ({sum(group.cpu) / group.seconds:.2f} cores busy): "
        f"{per_group / per_one:.2f} of one worker's work per CPU-second",
        f"  one worker: {sum(one.cpu):.1f} CPU-s, {sum(one.consumed):,.0f} records read, "
        f"{sum(one.observed):,.0f} observations detected",
    ]
    for i, (cpu, read, seen, moves) in enumerate(
        zip(group.cpu, group.consumed, group.observed, group.rebalances, strict=True)
    ):
        lines.append(
            f"  worker {i}: {cpu:.1f} CPU-s, {read:,.0f} records read, "
            f"{seen:,.0f} observations detected, {moves:.0f} rebalances"
        )
    lines.append(
        f"  with a core each, the group would take the busiest worker's {busiest:.1f} CPU-s "
        f"against one worker's {sum(one.cpu):.1f}: {sum(one.cpu) / busiest:.2f}x one worker"
    )
    return lines


if __name__ == "__main__":
    sys.exit(main())
