"""Operating the worker: Prometheus metrics, health and readiness, structured JSON logs.

:func:`register_observability` adds three views to the faust web server of a worker
built by :func:`streams.runtime.worker.build_service`:

``/metrics``  Prometheus text exposition format 0.0.4 (written here: no new dependency).
``/healthz``  liveness: 200 while the app has not crashed (the event loop answers).
``/readyz``   readiness: 200 once the worker has source partitions assigned, no rebalance
              is in progress and table recovery has finished; 503 with the reasons before.

Metric names and labels are listed in ``docs/operations.md``. Cardinality is bounded: per
topic/partition/reason/event type/severity/incident type (small, fixed sets), and at most
``top_k`` detector keys. Detector statistics are read from the live detector sets (no
deserialising), at most every ``detector_scan_interval_s`` and over a rotating sample of at
most ``max_scan_keys`` keys within ``scan_budget_s``, on the event loop
(:mod:`streams.runtime.detector_metrics`); key counts are exact (the detect stage's key
tracker), so a scrape stays fast at 100k keys (``bench/state.py``).

The text format itself is :mod:`streams.runtime.exposition`; the log formats are
:mod:`streams.runtime.logs` (their names are re-exported here for existing imports).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import logging.config
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from alerting.clock import Clock
from streams.pipeline.load import WARN_NEED
from streams.pipeline.state import RESETS, STATE_VERSIONS, loaded
from streams.runtime.detector_metrics import DetectorMetrics
from streams.runtime.exposition import (
    CONTENT_TYPE,
    LATENCY_BUCKETS_S,
    Histogram,
    MetricFamily,
    Sample,
    escape_label_value,
    render,
)
from streams.runtime.fetch_guard import fetch_guard_for
from streams.runtime.logs import (
    JsonFormatter,
    UtcTextFormatter,
    configure_logging,
    logging_config,
)

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS_S",
    "SEVERITIES",
    "Histogram",
    "JsonFormatter",
    "MetricFamily",
    "Observability",
    "Readiness",
    "Sample",
    "UtcTextFormatter",
    "configure_logging",
    "escape_label_value",
    "logging_config",
    "observability_for",
    "register_observability",
    "render",
]

if TYPE_CHECKING:
    import faust

    from streams.pipeline.observation import Observation
    from streams.runtime.agents import Service

log = logging.getLogger(__name__)

SEVERITIES: Final = ("SEV1", "SEV2", "SEV3", "SEV4")
LOAD_MODELS: Final = 100
"""Models named in the detect-load families (the first met); the rest are summed as
:data:`OTHER_MODELS`."""
OTHER_MODELS: Final = "(other models)"
"""The detect-load families' label for the models not named: no model can be called that
(a model's name has no spaces nor parentheses, :data:`streams.contract.events.Name`)."""

# --------------------------------------------------------------------------------------
# Collecting the service's metrics.


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, **self.checks}


def _is_changelog(topic: str) -> bool:
    return topic.endswith("-changelog")


class Observability:
    """Metrics, health and readiness of one worker. Built by :func:`register_observability`."""

    def __init__(
        self,
        app: faust.App,
        service: Service,
        clock: Clock,
        *,
        top_k: int = 20,
        detector_scan_interval_s: float = 30.0,
        max_scan_keys: int = 500,
        scan_budget_s: float = 0.015,
        end_offsets_timeout_s: float = 2.0,
        monotonic: Any = time.monotonic,
    ) -> None:
        self.app = app
        self.service = service
        self.clock = clock
        self.end_offsets_timeout_s = end_offsets_timeout_s
        self._end_offsets: dict[Any, int] = {}
        self.latency = Histogram()
        self.detectors = DetectorMetrics(
            service,
            top_k=top_k,
            interval_s=detector_scan_interval_s,
            max_scan_keys=max_scan_keys,
            scan_budget_s=scan_budget_s,
            monotonic=monotonic,
        )
        self.errors: Counter[str] = Counter()

    # -- fed by the detect agent ---------------------------------------------------------

    def observe_processed(self, observations: Iterable[Observation]) -> None:
        """Record event time -> processed wall time for each observation just detected."""
        now = self.clock.now()
        for obs in observations:
            lag = (now - obs.event.timestamp).total_seconds()
            self.latency.observe(max(0.0, lag), {"event_type": obs.event.event_type})

    # -- health --------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        crashed = bool(getattr(self.app, "crashed", False))
        return not crashed, {"alive": not crashed, "state": str(getattr(self.app, "state", ""))}

    def _assignment(self) -> list[Any]:
        tps = self.app.consumer.assignment()
        return sorted((tp for tp in tps if not _is_changelog(tp.topic)), key=lambda t: tuple(t))

    def readiness(self) -> Readiness:
        checks: dict[str, Any] = {}
        try:
            checks["rebalancing"] = bool(self.app.rebalancing)
            tables: Any = self.app.tables
            checks["recovery_completed"] = tables.recovery.completed.is_set()
            checks["assigned_partitions"] = len(self._assignment())
        except Exception as exc:
            checks["error"] = type(exc).__name__
            return Readiness(False, checks)
        guard = fetch_guard_for(self.app)
        undecodable = guard.paused() if guard is not None else []
        checks["undecodable_partitions"] = [p.to_json() for p in undecodable]
        ready = (
            not checks["rebalancing"]
            and checks["recovery_completed"]
            and checks["assigned_partitions"] > 0
            and not undecodable
        )
        return Readiness(ready, checks)

    # -- metrics -------------------------------------------------------------------------

    def render(self) -> str:
        return render(self.collect())

    async def refresh_end_offsets(self) -> None:
        """Ask the broker for the log-end offsets of the assigned source partitions.

        The consumer's own high-water mark of a partition comes with fetch responses. When
        the worker falls behind, faust stops fetching the partitions whose buffers are full,
        so their marks go stale and the lag read from them is too low, sometimes 0, exactly
        when it matters (seen: 0 while the broker counted 5,000 records behind, in
        ``tests/integration/test_burst.py``). The metrics view calls this before each
        scrape; on failure or timeout the fetched marks are used alone.
        """
        try:
            assigned = self._assignment()
            if not assigned:
                self._end_offsets = {}
                return
            ends = await asyncio.wait_for(
                self.app.consumer.highwaters(*assigned), self.end_offsets_timeout_s
            )
        except Exception as exc:  # a scrape must still answer
            self.errors["end_offsets"] += 1
            log.warning("metrics: end offsets not refreshed (%s)", type(exc).__name__)
            return
        self._end_offsets = {tp: int(offset) for tp, offset in ends.items()}

    def collect(self) -> list[MetricFamily]:
        families: list[MetricFamily] = []
        sections = (
            ("ingress", self._ingress),
            ("pipeline", self._pipeline),
            ("incidents", self._incidents),
            ("detectors", self.detectors.families),
            ("consumer", self._consumer),
            ("fetch", self._fetch),
            ("readiness", self._ready),
        )
        for name, section in sections:
            try:
                families.extend(section())
            except Exception:  # one broken section must not hide the others
                self.errors[name] += 1
                log.exception("metrics section %s failed", name)
        families.append(self.latency.family(
            "sentinel_processing_latency_seconds",
            "Event time to detection wall time, per event type (clamped at 0).",
        ))  # fmt: skip
        errors = MetricFamily(
            "sentinel_metrics_errors_total", "counter", "Metric sections that failed to collect."
        )
        for name in (*(name for name, _ in sections), "end_offsets"):
            errors.add(self.errors[name], {"section": name})
        families.append(errors)
        return families

    def _ingress(self) -> list[MetricFamily]:
        stats = self.service.ingress.stats
        consumed = MetricFamily(
            "sentinel_events_consumed_total", "counter", "Records read by ingress, per topic."
        )
        accepted = MetricFamily(
            "sentinel_events_accepted_total",
            "counter",
            "Valid events handed to the pipeline, per topic and event type.",
        )
        dead = MetricFamily(
            "sentinel_events_dead_lettered_total",
            "counter",
            "Records sent to the dead-letter topic, per source topic and reason.",
        )
        per_topic: Counter[str] = Counter()
        for (topic, kind), n in sorted(stats.accepted.items()):
            accepted.add(n, {"topic": topic, "event_type": kind})
            per_topic[topic] += n
        for (topic, reason), n in sorted(stats.dead.items()):
            dead.add(n, {"topic": topic, "reason": reason})
            per_topic[topic] += n
        for topic, n in sorted(per_topic.items()):
            consumed.add(n, {"topic": topic})
        return [consumed, accepted, dead]

    def _detect_load(self) -> list[MetricFamily]:
        """The detect stage's seconds and observations per model
        (:class:`streams.pipeline.load.DetectLoad`): ``rate()`` of the first is the share of
        the wall time a model's detection takes, their ratio its cost per observation
        (what it *needs* of the worker is read against event time, by
        :class:`streams.pipeline.load.LoadWatch`). The first :data:`LOAD_MODELS` models
        the stage met by name, the rest summed as :data:`OTHER_MODELS`: a fixed split, so no
        counter goes down when models change places."""
        load = self.service.detect.load
        named = set(itertools.islice(load.seconds, LOAD_MODELS))
        seconds = MetricFamily(
            "sentinel_detect_model_seconds_total",
            "counter",
            "Seconds the detect stage spent on a model's observations and ticks (wall time "
            "of its code): rate() is the share of the worker its detection holds.",
        )
        taken = MetricFamily(
            "sentinel_detect_model_observations_total",
            "counter",
            "Observations the detect stage took, per model.",
        )
        need = MetricFamily(
            "sentinel_detect_need_ratio",
            "gauge",
            "What a model's detection needed of the worker's time for its traffic over the "
            "last interval (worker.load_watch_seconds; its seconds over the event time of the "
            "traffic detection advanced): summed over models, 1 or more cannot keep up; the "
            f"worker warns from {WARN_NEED:g}.",
        )
        watch = self.service.load_watch
        last = watch.last if watch is not None else None
        needs = {m.model: m.need for m in last.models} if last is not None else {}
        for family, values in (
            (seconds, load.seconds),
            (taken, load.observations),
            (need, needs),
        ):
            other = 0.0
            for model in sorted(values):
                if model in named:
                    family.add(values[model], {"model": model})
                else:
                    other += values[model]
            if any(model not in named for model in values):
                family.add(other, {"model": OTHER_MODELS})
        window = MetricFamily(
            "sentinel_detect_need_window_seconds",
            "gauge",
            "The wall seconds of the interval sentinel_detect_need_ratio was read over (absent "
            "before the first reading).",
        )
        if last is not None:
            window.add(last.window_s)
        return [seconds, taken, need, window]

    def _pipeline(self) -> list[MetricFamily]:
        out = []
        for stage, stats in (
            ("join", self.service.joiner.stats),
            ("detect", self.service.detect.stats),
        ):
            for f in dataclasses.fields(stats):
                fam = MetricFamily(
                    f"sentinel_{stage}_{f.name}_total",
                    "counter",
                    f"{type(stats).__name__}.{f.name} of this worker since start.",
                )
                fam.add(getattr(stats, f.name))
                out.append(fam)
        out += self._detect_load()
        resets = MetricFamily(
            "sentinel_state_resets_total",
            "counter",
            "Stored state values of another version dropped and relearned, by store.",
        )
        for kind in STATE_VERSIONS:
            resets.add(RESETS[kind], {"store": kind})
        out.append(resets)
        solves = self.service.solves
        if solves is not None:
            done = MetricFamily(
                "sentinel_threshold_solves_total",
                "counter",
                "Threshold solves sent to the background process, by outcome (sent, "
                "answered, failed: a failed one keeps its conservative bound; superseded: "
                "dropped unsolved, every detector that asked had asked for a newer one).",
            )
            for outcome in ("sent", "answered", "failed", "superseded"):
                done.add(getattr(solves, outcome), {"outcome": outcome})
            waiting = MetricFamily(
                "sentinel_threshold_solves_in_flight",
                "gauge",
                "Threshold solves asked for and not yet answered: their detectors chart on a "
                "conservative bound meanwhile.",
            )
            waiting.add(solves.in_flight)
            wait = solves.wait.family(
                "sentinel_threshold_solve_wait_seconds",
                "From a threshold solve's request to its answer's collection: how long its "
                "detector charted on the conservative bound.",
            )
            out.extend([done, waiting, wait])
        return out

    def _incidents(self) -> list[MetricFamily]:
        by_sev: Counter[str] = Counter()
        by_type: Counter[tuple[str, str]] = Counter()
        muted = 0
        for _, value in self.service.tables["engines"].items():
            try:
                state = loaded(value) or {}
            except ValueError:
                continue  # dropped when its engine is restored (sentinel_state_resets_total)
            for inc in state.get("incidents", ()):
                if inc.get("status") == "resolved":
                    continue
                sev = str(inc.get("severity"))
                by_sev[sev] += 1
                by_type[(sev, str(inc.get("incident_type")))] += 1
                muted += inc.get("muted_by") is not None
        open_ = MetricFamily(
            "sentinel_incidents_open",
            "gauge",
            "Open (firing or escalated) incidents in this worker's partitions, by severity.",
        )
        for sev in sorted(set(SEVERITIES) | set(by_sev)):
            open_.add(by_sev[sev], {"severity": sev})
        typed = MetricFamily(
            "sentinel_incidents_open_by_type", "gauge", "Open incidents by severity and type."
        )
        for (sev, kind), n in sorted(by_type.items()):
            typed.add(n, {"severity": sev, "incident_type": kind})
        m = MetricFamily("sentinel_incidents_open_muted", "gauge", "Open incidents muted.")
        m.add(muted)
        return [open_, typed, m]

    def _consumer(self) -> list[MetricFamily]:
        consumer = self.app.consumer
        monitor_committed = dict(getattr(self.app.monitor, "tp_committed_offsets", None) or {})
        # faust's own record of committed offsets (seeded from the group on assignment).
        group_committed = dict(getattr(consumer, "_committed_offset", None) or {})
        lag = MetricFamily(
            "sentinel_consumer_lag",
            "gauge",
            "High-water offset minus committed offset per assigned source partition "
            "(records not yet processed and committed).",
        )
        hw_f = MetricFamily(
            "sentinel_consumer_highwater_offset",
            "gauge",
            "High-water offset: the broker's log-end offset asked at scrape time, or the "
            "last one fetched if newer.",
        )
        co_f = MetricFamily(
            "sentinel_consumer_committed_offset", "gauge", "Last committed offset (next to read)."
        )
        assigned = self._assignment()
        for tp in assigned:
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            try:
                fetched = consumer.highwater(tp)
            except Exception:
                fetched = None
            known = [o for o in (fetched, self._end_offsets.get(tp)) if o is not None]
            highwater = max(known) if known else None
            committed = monitor_committed.get(tp)
            if committed is None:
                committed = group_committed.get(tp)
            if committed is not None:
                co_f.add(committed, labels)
            if highwater is not None:
                hw_f.add(highwater, labels)
                # No commit yet: the group starts at the beginning (auto_offset_reset).
                lag.add(max(0, highwater - (committed or 0)), labels)
        n = MetricFamily(
            "sentinel_consumer_assigned_partitions", "gauge", "Source partitions assigned."
        )
        n.add(len(assigned))
        return [lag, hw_f, co_f, n]

    def _fetch(self) -> list[MetricFamily]:
        """Partitions paused at a batch the worker cannot decode (:mod:`streams.fetch_guard`)."""
        guard = fetch_guard_for(self.app)
        paused = MetricFamily(
            "sentinel_fetch_undecodable_partitions",
            "gauge",
            "1 per partition paused at a record batch the worker cannot decode.",
        )
        total = MetricFamily(
            "sentinel_fetch_undecodable_total",
            "counter",
            "Fetches that failed to decode a record batch (each pauses its partition).",
        )
        for p in guard.paused() if guard is not None else []:
            paused.add(1, {"topic": p.topic, "partition": str(p.partition)})
        total.add(guard.events_total if guard is not None else 0)
        return [paused, total]

    def _ready(self) -> list[MetricFamily]:
        ready = MetricFamily("sentinel_ready", "gauge", "1 when /readyz answers 200.")
        ready.add(int(self.readiness().ready))
        rebalances = MetricFamily(
            "sentinel_rebalances_total", "counter", "Consumer group rebalances seen by this worker."
        )
        rebalances.add(int(getattr(self.app, "rebalancing_count", 0) or 0))
        return [ready, rebalances]


# --------------------------------------------------------------------------------------
# Registration on the faust app.

_REGISTERED: weakref.WeakKeyDictionary[Any, Observability] = weakref.WeakKeyDictionary()


def observability_for(app: faust.App) -> Observability | None:
    """What :func:`register_observability` registered on ``app`` (for tests and the CLI)."""
    return _REGISTERED.get(app)


def register_observability(app: faust.App, service: Service, clock: Clock) -> None:
    """Add /metrics, /healthz and /readyz to ``app``'s web server; feed latency.

    Idempotent per app. The processing-latency histogram is fed through
    ``service.processed_hooks`` (a list of callables the detect agent calls with each
    batch of observations) when the service has it; without it the histogram stays empty.
    """
    if app in _REGISTERED:
        return
    obs = Observability(app, service, clock)
    _REGISTERED[app] = obs
    hooks = getattr(service, "processed_hooks", None)
    if isinstance(hooks, list):
        hooks.append(obs.observe_processed)

    async def sentinel_metrics(view: Any, request: Any) -> Any:
        await obs.refresh_end_offsets()
        body = obs.render().encode()
        return view.bytes(body, headers={"Content-Type": CONTENT_TYPE})

    async def sentinel_healthz(view: Any, request: Any) -> Any:
        alive, body = obs.liveness()
        return view.json(body, status=200 if alive else 503)

    async def sentinel_readyz(view: Any, request: Any) -> Any:
        state = obs.readiness()
        return view.json(state.to_json(), status=200 if state.ready else 503)

    app.page("/metrics", name="sentinel_metrics")(sentinel_metrics)
    app.page("/healthz", name="sentinel_healthz")(sentinel_healthz)
    app.page("/readyz", name="sentinel_readyz")(sentinel_readyz)
