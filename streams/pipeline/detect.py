"""Stage 2 of the pipeline: keyed detectors and incidents, partitioned by model.

Every observation feeds detectors at several levels (:mod:`streams.pipeline.keys`), so a
failure that lives in one tenant or locale is seen. Signals become
:class:`alerting.model.Detection` with evidence (offset ranges, sample request ids,
traffic share) and go through one :class:`alerting.engine.IncidentEngine` per model
(inhibition and deploys are per model), whose output is the list of incident events to
publish. The same code serves the streaming worker (:mod:`streams.runtime.agents`, state
in faust tables) and offline replay (:mod:`streams.pipeline.replay`, state in dicts).

All state is JSON-compatible and lives in injected mappings; every value read is written
back after it changes (never mutated in place inside a table).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from alerting.engine import IncidentEngine
from alerting.model import BlastRadius, Detection, IncidentEvent, Labels
from alerting.playbooks import PlaybookSet, load_playbooks
from alerting.policy import AlertingPolicy, Silence, load_policy
from alerting.silences import sync_engine_silences
from detectors.base import Signal, SignalKind
from streams.detection_settings import DetectionSettings
from streams.pipeline.cardinality import OTHER, CardinalityFold
from streams.pipeline.detectorset import (
    INPUT_DRIFT_HOLD,
    SAMPLES_KEPT,
    DetectorSet,
    Tracker,
    input_drift,
    per_detector_arl0,
)
from streams.pipeline.join import Store
from streams.pipeline.keys import (
    Level,
    event_labels,
    key_id,
    key_levels,
    level_of,
    level_of_key,
    model_of_key,
)
from streams.pipeline.live_sets import LiveSets, WriteScope, one_store
from streams.pipeline.load import DetectLoad
from streams.pipeline.localize import known_keys, localize_detection, probe_health
from streams.pipeline.observation import Observation, event_time, served_time, serves
from streams.pipeline.sampling import reaches, sample_fraction
from streams.pipeline.silence import SilenceWatch
from streams.pipeline.state import VERSION_KEY, restore, stamp

SilenceSource = Callable[[datetime, str], list[Silence]]
"""Active runtime silences for a model at a time (see :mod:`alerting.silences`)."""

LEVEL_CACHE_SIZE: Final = 10_000
"""Distinct (model, version, segment labels) combinations whose detector keys are kept."""

SINGLE_EVENT: Final = frozenset({"critical"})
"""Detectors (set names) whose signal is one event: their detections carry the event's own
labels (:func:`streams.pipeline.keys.event_labels`), not the model-level key's."""

TICK_EVERY_S: Final = 60.0
"""Event-time spacing of the engines' ticks inside :meth:`Detect.process`: a model's
engine ticks at its first observation past each boundary of this grid, before that
observation is processed. Ticks tied to event time, not to batch ends, make the incidents
independent of how the stream was cut into batches (a minute is far finer than any
quiet period or deadline); the worker's wall-clock tick covers a stream that stops."""

TRAFFIC_SUFFIX: Final = "|traffic"
"""Ends the engine store's key of a model's traffic (:func:`traffic_key`)."""


def traffic_key(model: str) -> str:
    """The engine store's key of what the worker's wall-clock tick needs to go on with
    ``model`` after a restart (:meth:`Detect.tick_wall`): its latest event and serving
    times, the times its engine and its silence were last advanced to, and the silence
    watch's history. A key of its own beside the model's engine (a model name has no
    ``|``), written in the same partition: a worker of the previous release, which reads
    an engine value with a key it does not know as no engine at all, never reads it."""
    return model + TRAFFIC_SUFFIX


def is_traffic_key(key: str) -> bool:
    """Whether an engine store key is a model's traffic (:func:`traffic_key`), not its
    engine."""
    return key.endswith(TRAFFIC_SUFFIX)


log = logging.getLogger(__name__)


@dataclass
class DetectStats:
    """Counters of the detect stage (exported as metrics)."""

    observations: int = 0
    signals: int = 0
    incident_events: int = 0
    failed: int = 0
    """Observations whose processing raised, set aside and dead-lettered by the worker
    (``Detect.isolate_failures``)."""


def next_tick(t: float) -> float:
    """The first boundary of the :data:`TICK_EVERY_S` grid after event time ``t``."""
    return (math.floor(t / TICK_EVERY_S) + 1) * TICK_EVERY_S


class SweepGrid:
    """When offline replay checks every model for silence: at the first input or output
    (:func:`streams.pipeline.observation.serves`) past each boundary of the
    :data:`TICK_EVERY_S` grid of the stream's event time. One definition for
    :class:`Detect` and for the parallel replay that sends the sweeps to its detection
    processes (:mod:`streams.pipeline.parallel`)."""

    def __init__(self) -> None:
        self._next = -math.inf

    def due(self, t: float, traffic: bool) -> bool:
        """Whether an observation at event time ``t`` (an input or output: ``traffic``)
        sweeps before it is processed; a due sweep moves the grid on."""
        if not traffic or t < self._next:
            return False
        self._next = next_tick(t)
        return True


def logged_nth(n: int) -> bool:
    """Whether the ``n``-th occurrence (from 1) of a failure is logged: the 1st, 2nd, 4th,
    8th, ... A failure that recurs at every event then costs a few lines, not one per
    event; the dead letters and the counters carry each occurrence."""
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class Failure:
    """An observation whose processing raised, and the error."""

    observation: Observation
    error: str


class Detect:
    """Keyed detectors and one incident engine per model, over injected stores.

    ``detector_store`` maps :func:`key_id` to a :class:`DetectorSet` state;
    ``engine_store`` maps a model name to its :class:`IncidentEngine` state. Call
    :meth:`process` with observations of one partition in order; it returns the incident
    events to publish (keyed by their dedup key).

    Detector sets stay live in memory between batches (the ``max_live_keys`` most
    recently used; the others only in the store); a key's state is written back to
    ``detector_store`` at most every ``flush_interval_s`` seconds (0: every batch).
    Serialising large reference windows per batch was most of the worker's CPU; the cost
    of the interval is that after a crash up to that much evidence is missing from the
    restored baselines (statistically negligible at seconds). Incident-engine state is
    written every batch, so incident emission stays idempotent.
    """

    def __init__(
        self,
        settings: DetectionSettings,
        policy: AlertingPolicy,
        playbooks: PlaybookSet,
        detector_store: Store,
        engine_store: Store,
        *,
        replay: bool = False,
        sweeps: bool = True,
        flush_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        write_scope: WriteScope = one_store,
        isolate_failures: bool = False,
    ) -> None:
        self.settings = settings
        self.isolate_failures = isolate_failures
        """An observation whose processing raises is set aside (:meth:`take_failures`)
        and the batch goes on (the worker, which dead-letters it), instead of the batch
        failing: a batch that failed on an internal topic is acked by faust unhandled."""
        self._failures: list[Failure] = []
        self.policy = policy
        self.playbooks = playbooks
        self.detector_store = detector_store
        self.engine_store = engine_store
        self.replay = replay
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.wall_clock = wall_clock
        self.timer = timer
        self.load = DetectLoad()
        """Per model, the seconds (``timer``) spent on its observations and their count."""
        self._seen: dict[str, tuple[datetime, float]] = {}
        """Per model: the latest event time processed and the wall time it was processed."""
        self._next_tick: dict[str, float] = {}
        """Per model: the event time (Unix s) at or after which its engine ticks next."""
        self._sweeps = SweepGrid() if replay and sweeps else None
        """Offline: when to check every model for silence at the stream's event time (None:
        the worker, or a parallel replay's detection process, whose sweeps come from the
        process that reads the whole stream through :meth:`sweep`)."""
        self.silence = SilenceWatch(settings.silence_minutes * 60.0)
        self._traffic_seen: dict[str, tuple[float, float]] = {}
        """Per model: the latest input/output event time and the wall time it was seen."""
        self._looked_up: set[str] = set()
        """Models whose stored traffic this process has looked for (:meth:`_resume`)."""
        self._levels: dict[
            tuple[str, str, tuple[str | None, ...]], list[tuple[Level, Labels, str]]
        ] = {}
        self._keys: dict[str, dict[str, Labels]] = {}
        """Per model, the keys seen (key id -> labels): the cuts localization compares."""
        self.arl0 = per_detector_arl0(settings)
        """Per-test ARL0 floor in events (the events budget when set, else the minimum)."""
        self.learning_pause_s = settings.learning_pause_minutes * 60.0
        self.stats = DetectStats()
        self.fold = CardinalityFold(settings.max_label_values, settings.max_versions)
        self.live_sets = LiveSets(
            settings,
            detector_store,
            self.fold,
            self.arl0,
            flush_interval_s=flush_interval_s,
            clock=clock,
            write_scope=write_scope,
        )
        """The keys' detector sets in memory (live, written back, expired)."""
        self.relearns = self.live_sets.relearns
        """Operator re-learns (``sentinel relearn``), applied as each key's set is used."""
        self.silences: SilenceSource | None = None
        """Runtime silences (from ``sentinel silence``), applied to each engine per batch."""

    def _engine(
        self, model: str, cache: dict[str, IncidentEngine], now: datetime
    ) -> IncidentEngine:
        engine = cache.get(model)
        if engine is None:
            state = self.engine_store.get(model)
            restored = (
                restore("engine", state, self._engine_from_state) if state is not None else None
            )
            engine = restored or IncidentEngine(self.policy, self.playbooks, replay=self.replay)
            if self.silences is not None:
                keep = [s.id for s in self.policy.silences]
                sync_engine_silences(engine, self.silences(now, model), keep_ids=keep)
            cache[model] = engine
        return engine

    def _engine_from_state(self, data: dict[str, Any]) -> IncidentEngine:
        engine = IncidentEngine(self.policy, self.playbooks, replay=self.replay)
        engine.set_state({k: v for k, v in data.items() if k != VERSION_KEY})
        return engine

    def _levels_of(self, obs: Observation) -> list[tuple[Level, Labels, str]]:
        """:func:`key_levels` with key ids, cached: few distinct label sets recur in every
        event, and building them was a tenth of the detect stage's time."""
        seg = tuple(obs.segment.get(label) for label in self.settings.segment_labels)
        cache_key = (obs.model, obs.version, seg)
        levels = self._levels.get(cache_key)
        if levels is None:
            if len(self._levels) >= LEVEL_CACHE_SIZE:
                self._levels.clear()
            # One Labels object and one key-id string per key, shared by every cached
            # combination that contains it: the model and version keys recur in all of a
            # model's combinations (they were most of the memory per key at 100k keys).
            known = self._keys.setdefault(obs.model, {})
            levels = [
                (level, known.setdefault(kid, labels), sys.intern(kid))
                for level, labels, kid in key_levels(obs, self.settings, self.fold)
            ]
            # A folded combination is not cached: each of its events is counted as folded.
            if all(
                OTHER not in (labels.version, *labels.segment.values()) for _, labels, _ in levels
            ):
                self._levels[cache_key] = levels
        return levels

    def invalidate(self, keep: Callable[[str], bool] | None = None) -> None:
        """Forget the in-memory detector sets after a rebalance, except those of the keys
        ``keep`` accepts (:meth:`LiveSets.invalidate`), and the traffic of the models whose
        model key it does not accept: another worker may have ticked them meanwhile, and
        their stored traffic is read again (:meth:`_resume`)."""
        self.live_sets.invalidate(keep)
        for model in {*self._seen, *self._looked_up}:
            if keep is None or not keep(key_id(Labels(model=model))):
                self._seen.pop(model, None)
                self._traffic_seen.pop(model, None)
                self._looked_up.discard(model)
                self.silence.forget(model)

    def process(self, batch: Iterable[Observation]) -> list[IncidentEvent]:
        """Run a batch through the detectors; write back every state it touched. Engines
        tick on the event-time grid of :data:`TICK_EVERY_S`, so the output does not depend
        on where the batches end."""
        return [ev for part in self.process_steps(batch) for ev in part]

    def process_steps(
        self, batch: Iterable[Observation], chunk: int = 0
    ) -> Iterator[list[IncidentEvent]]:
        """:meth:`process` in steps: the incident events of every ``chunk`` observations
        (0: of the whole batch) as they come, the states written back once, after the
        last. The worker yields to its event loop between steps; writing state per step
        instead multiplied the changelog traffic by the number of steps."""
        sets: dict[str, DetectorSet] = {}
        engines: dict[str, IncidentEngine] = {}
        out: list[IncidentEvent] = []
        latest: dict[str, datetime] = {}
        touched: dict[str, float] = {}
        emitted = 0
        timer, load = self.timer, self.load
        taken_before = dict(load.observations)
        for i, obs in enumerate(batch, start=1):
            began = timer()
            try:
                self._step(obs, out, engines, sets, latest, touched)
            except Exception as exc:
                if not self.isolate_failures:
                    raise
                self._failed(obs, exc)
            load.add(obs.model, timer() - began)
            if chunk and i % chunk == 0:
                emitted += len(out)
                yield out
                out = []
        began = timer()
        wall_now = self.wall_clock()
        for model, now in latest.items():
            seen = self._seen.get(model)
            if seen is None or now >= seen[0]:  # (a batch of older events does not turn it back)
                self._seen[model] = (now, wall_now)
        # The traffic's pace: inputs and outputs, not the feedback and evaluations that
        # trail them.
        served = [self._traffic_seen[m][0] for m in latest if m in self._traffic_seen]
        if served:
            load.reached(max(served))
        if self.live_sets.expire(sets, touched):
            self._levels.clear()
        self.live_sets.keep(sets)
        for model, engine in engines.items():
            self._store_engine(model, engine)
        load.spread(timer() - began, load.taken_since(taken_before))
        self.stats.incident_events += emitted + len(out)
        yield out

    def _failed(self, obs: Observation, exc: Exception) -> None:
        self.stats.failed += 1
        self._failures.append(Failure(obs, f"{type(exc).__name__}: {exc}"))
        if logged_nth(self.stats.failed):
            c = obs.coords
            log.exception(
                "detection failed on %s[%d]@%d (model %s); set aside, the batch goes on "
                "(failure %d of this process; logged at the 1st, 2nd, 4th, 8th, ...)",
                c.topic,
                c.partition,
                c.offset,
                obs.model,
                self.stats.failed,
            )

    def take_failures(self) -> list[Failure]:
        """The observations set aside since the last call (``isolate_failures``)."""
        out, self._failures = self._failures, []
        return out

    def _step(
        self,
        obs: Observation,
        out: list[IncidentEvent],
        engines: dict[str, IncidentEngine],
        sets: dict[str, DetectorSet],
        latest: dict[str, datetime],
        touched: dict[str, float],
    ) -> None:
        """One observation of :meth:`process_steps`: its model's ticks due before it, its
        keys' detectors, their detections to the engine (events onto ``out`` as they
        come, so that those before a failure are kept)."""
        self.stats.observations += 1
        if obs.model not in self._looked_up:
            self._resume(obs.model)
        engine = self._engine(obs.model, engines, obs.event.timestamp)
        t = event_time(obs.event)
        self.relearns.release(t)  # a replay's scheduled re-learns
        out.extend(self._on_time(obs, t, engine, engines, sets))
        model_traffic = 0.0
        hold: frozenset[str] = frozenset()
        model_set: DetectorSet | None = None
        parents: list[DetectorSet] = []
        detections: list[tuple[str, Detection]] = []
        levels = self._levels_of(obs)
        serving = serves(obs.event)
        for level, labels, kid in levels:
            if not reaches(obs, level):
                # A critical output outside its model's sample: its page still names
                # its version and segment (event_labels below).
                continue
            touched[kid] = t
            if (
                model_set is not None
                and level == "version"
                and kid not in sets
                and kid not in self.live_sets.store
            ):
                self._new_version(model_set, engine, obs, kid, sets)
            ds = self.live_sets.get(kid, level, sets)
            traffic = ds.see_traffic(t, serving)
            ds.set_budget(self.live_sets.budget_seconds(), self.arl0)
            if model_set is None:
                model_set, model_traffic = ds, traffic
                hold = frozenset(n for n, until in ds.alarms.items() if until > t)
            if level != "segment":
                parents.insert(0, ds)  # a segment's priors: its version, then its model
            here = hold if level != "model" else frozenset()
            if ds.alarms.get(INPUT_DRIFT_HOLD, 0.0) > t:
                here = here | {INPUT_DRIFT_HOLD}  # a drift alarm of this key's own
            for name, signal, tracker in ds.update(
                obs,
                here,
                tuple(parents) if level == "segment" else (),
                min(1.0, traffic / model_traffic) if model_traffic else 1.0,
            ):
                self.stats.signals += 1
                until = t + self.learning_pause_s
                if level != "segment":
                    model_set.alarms[name] = until
                if input_drift(name):  # holds the key's (or its model's) drift tests
                    ds.alarms[INPUT_DRIFT_HOLD] = until
                    if level != "segment":
                        model_set.alarms[INPUT_DRIFT_HOLD] = until
                share = min(1.0, traffic / model_traffic) if model_traffic else None
                # A critical event is judged once, model-wide, but its incident is about
                # that event: it names the event's version and segment.
                where = event_labels(levels) if name in SINGLE_EVENT else labels
                detection = self._detection(obs, where, signal, tracker, share)
                if self.policy.grouping.enabled:
                    detection = self._localized(detection, name, engine, sets, t)
                detections.append((level, detection))
        if detections and model_set is not None:
            out.extend(self._observe(engine, model_set, obs, detections))
        prev = latest.get(obs.model)
        if prev is None or obs.event.timestamp > prev:
            latest[obs.model] = obs.event.timestamp

    def _detection(
        self,
        obs: Observation,
        labels: Labels,
        signal: Signal,
        tracker: Tracker,
        share: float | None,
    ) -> Detection:
        """A detector's signal on ``obs`` with its evidence (the tracked ranges and samples
        since the change-point estimate) and the key's share of its model's traffic. On a
        sampled model (:mod:`streams.pipeline.sampling`) the signal of a rate, shift or
        drift test says so in its ``details["sample_fraction"]``: its counts are of that
        share of the requests (a critical-event page judges every critical output)."""
        fraction = sample_fraction(self.settings, obs.model)
        if fraction < 1.0 and signal.kind is not SignalKind.CRITICAL_EVENT:
            details = {**signal.details, "sample_fraction": fraction}
            signal = signal.model_copy(update={"details": details})
        start_t, ranges = tracker.evidence(signal.first_index)
        served = served_time(obs)
        return Detection(
            labels=labels,
            signal=signal,
            at=obs.event.timestamp,
            served_at=(
                datetime.fromtimestamp(served, obs.event.timestamp.tzinfo)
                if served < event_time(obs.event)
                else None
            ),
            window_start=(
                datetime.fromtimestamp(start_t, obs.event.timestamp.tzinfo)
                if start_t is not None
                else None
            ),
            ranges=ranges,
            sample_request_ids=tuple(tracker.samples[-SAMPLES_KEPT:]) or (obs.event.request_id,),
            blast_radius=BlastRadius(traffic_share=share),
            replay=self.replay,
        )

    @staticmethod
    def _observe(
        engine: IncidentEngine,
        model_set: DetectorSet,
        obs: Observation,
        detections: list[tuple[str, Detection]],
    ) -> list[IncidentEvent]:
        """One observation's detections into its model's engine. A deployed (not first)
        version's go first: a bad deploy names the cause and mutes its model-wide symptom;
        otherwise the most general first."""
        first = "version" if obs.version in model_set.versions[1:] else "model"
        detections.sort(key=lambda ld: (ld[0] != first, ld[0] == "segment"))
        return [ev for _, detection in detections for ev in engine.observe(detection)]

    def _new_version(
        self,
        model_set: DetectorSet,
        engine: IncidentEngine,
        obs: Observation,
        kid: str,
        sets: dict[str, DetectorSet],
    ) -> None:
        """A version seen for the first time. If the model had one, this is a deploy: the
        engine warms it up, and its detectors start from the previous version's baselines."""
        if obs.version in model_set.versions:
            return  # a known version whose key expired while idle: it relearns, no deploy
        previous = model_set.versions[-1] if model_set.versions else None
        model_set.versions.append(obs.version)
        if previous is None:
            return
        engine.record_deploy(obs.model, obs.version, obs.event.timestamp, previous)
        prev_kid = key_id(Labels(model=obs.model, version=previous))
        sets[kid] = self.live_sets.get(prev_kid, "version", sets).canary_copy()

    def models(self) -> list[str]:
        """The wall-clock tick's targets: models this instance has processed events of,
        and those with a traffic in its store (a restarted worker's, or those of a
        partition that moved here, whose traffic may have stopped before)."""
        stored = {k.removesuffix(TRAFFIC_SUFFIX) for k in self.engine_store if is_traffic_key(k)}
        return sorted(self._seen.keys() | stored)

    def tick_wall(self, model: str) -> list[IncidentEvent]:
        """Advance a model's engine on the wall clock: to its latest event time plus the
        wall time elapsed since that event was processed. A model whose traffic stopped
        still resolves or escalates at its deadlines; a replay of old data is not aged by
        the distance between its event time and today. Silence is judged at the latest
        input or output's event time plus the wall time since it was processed (feedback
        trailing a stream that stopped does not count as traffic). The model's detector
        sets changed since their last write are written back (:meth:`LiveSets.write_dirty`:
        a quiet key's last changes would stay in memory alone). A model this process
        has not seen resumes from its stored traffic (:meth:`_resume`); no-op for one
        without."""
        if model not in self._looked_up:
            self._resume(model)
        seen = self._seen.get(model)
        if seen is None:
            return []
        began = self.timer()
        event_t, wall = seen
        wall_now = self.wall_clock()
        now = event_t + timedelta(seconds=max(0.0, wall_now - wall))
        traffic = self._traffic_seen.get(model)
        silence_t = traffic[0] + max(0.0, wall_now - traffic[1]) if traffic else None
        out = self.tick(model, now, silence_t)
        self.live_sets.write_dirty(lambda kid: model_of_key(kid) == model)
        self.load.tick(model, self.timer() - began)
        return out

    def _localized(
        self,
        detection: Detection,
        name: str,
        engine: IncidentEngine,
        sets: dict[str, DetectorSet],
        t: float,
    ) -> Detection:
        """The detection with its localization over the model's keys and its probe."""
        model = detection.labels.model
        known = self._keys.get(model, {})

        def set_of(kid: str) -> DetectorSet | None:
            level = known.get(kid)
            if kid not in sets and (level is None or not self.live_sets.known(kid)):
                return None  # (an expired key is not made again, empty, by being read)
            return self.live_sets.get(kid, level_of(level) if level is not None else "model", sets)

        def fresh(labels: Labels) -> bool:
            return (
                labels.version is not None
                and not labels.segment
                and (engine.recent_deploy(labels, detection.at) is not None)
            )

        loc, probes = localize_detection(
            name,
            detection.signal,
            detection.labels,
            known_keys(known),
            set_of,
            t,
            fresh,
            self.policy.grouping,
        )
        if loc is None:
            return detection
        return detection.model_copy(update={"localization": loc, "probes": probes})

    def _on_time(
        self,
        obs: Observation,
        t: float,
        engine: IncidentEngine,
        engines: dict[str, IncidentEngine],
        sets: dict[str, DetectorSet],
    ) -> list[IncidentEvent]:
        """Before an observation is processed: note its arrival for the silence watch and,
        at the model's next :data:`TICK_EVERY_S` boundary, check the model for silence and
        tick its engine. Offline, inputs and outputs also sweep every other model for
        silence first (:class:`SweepGrid`)."""
        out: list[IncidentEvent] = []
        now = obs.event.timestamp
        traffic = serves(obs.event)
        wall = None if self.replay else self.wall_clock()
        self.silence.see(obs.model, obs.event.event_type, t, wall)
        if traffic and t >= self._traffic_seen.get(obs.model, (-math.inf, 0.0))[0]:
            self._traffic_seen[obs.model] = (t, self.wall_clock())
        if self._sweeps is not None and self._sweeps.due(t, traffic):
            # before this model's own tick: the order a parallel replay's merge keeps
            out.extend(self._sweep(obs.model, engines, sets, now))
        if t >= self._next_tick.get(obs.model, -math.inf):
            self._next_tick[obs.model] = next_tick(t)
            if traffic:
                out.extend(self._silent(obs.model, engine, now))
            out.extend(engine.tick(now, *self._health(engine, sets)))
        return out

    def _silent(
        self, model: str, engine: IncidentEngine, now: datetime, at_t: float | None = None
    ) -> list[IncidentEvent]:
        """Observe a traffic-silence detection for ``model`` if it is silent at event time
        ``at_t`` (default ``now``; :mod:`streams.pipeline.silence`)."""
        wall_now = None if self.replay else self.wall_clock()
        signal = self.silence.check(model, now.timestamp() if at_t is None else at_t, wall_now)
        if signal is None:
            return []
        detection = Detection(
            labels=Labels(model=model),
            signal=signal,
            at=now,
            window_start=now - timedelta(minutes=signal.statistic),
            replay=self.replay,
        )
        return engine.observe(detection)

    def _sweep(
        self,
        current: str,
        engines: dict[str, IncidentEngine],
        sets: dict[str, DetectorSet],
        now: datetime,
    ) -> list[IncidentEvent]:
        """Offline only: check every other model for silence at the stream's event time
        (another model's events keep time moving when one model stops), and tick the
        engine of a model whose own tick is a whole :data:`TICK_EVERY_S` overdue (its
        events stopped), so that its incidents escalate and resolve at their deadlines
        as the worker's do, not when its traffic comes back. The worker does not sweep:
        an engine must be written with its own partition's events, so there a silent
        model is found, and its engine advanced, by its wall-clock tick (:meth:`tick_wall`)."""
        out: list[IncidentEvent] = []
        t = now.timestamp()
        for model in self.silence.models():
            if model == current:
                continue
            engine = self._engine(model, engines, now)
            out.extend(self._silent(model, engine, now))
            if self._next_tick.get(model, math.inf) <= t - TICK_EVERY_S:
                self._next_tick[model] = next_tick(t)
                out.extend(engine.tick(now, *self._health(engine, sets)))
        return out

    def sweep(self, current: str, now: datetime) -> list[IncidentEvent]:
        """Offline, for a detection process of a parallel replay (``sweeps=False``): check
        every model it has seen but ``current`` for silence at the stream's event time
        ``now``, as :meth:`process` does itself at the observation that :class:`SweepGrid`
        makes due (``current``: that observation's model, which its own tick checks), and
        store their engines."""
        engines: dict[str, IncidentEngine] = {}
        sets: dict[str, DetectorSet] = {}
        out = self._sweep(current, engines, sets, now)
        self.live_sets.keep(sets)
        for model, engine in engines.items():
            self._store_engine(model, engine)
        return out

    def _health(
        self, engine: IncidentEngine, sets: dict[str, DetectorSet]
    ) -> tuple[dict[str, bool], dict[str, datetime]]:
        """Whether each active incident's probe detector is still alarmed, and for those
        that read their change as ended, when it ended by their estimate (the engine's
        quiet period runs from there: :func:`alerting.incident.resolve_due`)."""
        probes = engine.probes()
        if not probes:
            return {}, {}

        def set_of(kid: str) -> DetectorSet | None:
            if kid not in sets and not self.live_sets.known(kid):
                return None
            return self.live_sets.get(kid, level_of_key(kid), sets)

        ended: dict[str, float] = {}
        health = probe_health(probes, set_of, self.settings.silence_minutes * 60.0, ended)
        return health, {pid: datetime.fromtimestamp(t, UTC) for pid, t in ended.items()}

    def tick(
        self, model: str, now: datetime, silence_t: float | None = None
    ) -> list[IncidentEvent]:
        """Advance one model's engine to ``now`` (a silence check, then resolve quiet
        incidents and escalate overdue ones) and store it. The worker calls it on the wall
        clock for models whose traffic may have stopped (:mod:`streams.runtime.agents`).
        ``silence_t``: the event time (Unix s) to judge silence at (None: ``now``)."""
        engines: dict[str, IncidentEngine] = {}
        sets: dict[str, DetectorSet] = {}
        engine = self._engine(model, engines, now)
        out = self._silent(model, engine, now, silence_t)
        out.extend(engine.tick(now, *self._health(engine, sets)))
        self.live_sets.keep(sets)
        self._store_engine(model, engine, now.timestamp(), silence_t)
        return out

    def _store_engine(
        self,
        model: str,
        engine: IncidentEngine,
        at: float | None = None,
        silence_t: float | None = None,
    ) -> None:
        """Write ``model``'s engine to the store, and in the worker its traffic
        (:func:`traffic_key`): ``at``, the event time the engine was advanced to (default:
        the model's latest event's), ``silence_t``, the time silence was judged at
        (default: its latest input or output's)."""
        self.engine_store[model] = stamp("engine", engine.get_state())
        watch = None if self.replay else self.silence.state_of(model)
        seen = self._seen.get(model)
        if watch is None or seen is None:
            return
        served = self._traffic_seen.get(model)
        served_at = None if served is None else served[0]
        event_at = seen[0].timestamp()
        self.engine_store[traffic_key(model)] = stamp(
            "traffic",
            {
                "event_at": event_at,
                "at": event_at if at is None else at,
                "served_at": served_at,
                "silence_at": served_at if silence_t is None else silence_t,
                "watch": watch,
            },
        )

    def _resume(self, model: str) -> None:
        """The worker, once per model and process (again after a rebalance moved it):
        take up the model's traffic where the stored engine left it, so that its wall-clock
        tick goes on ageing its engine and judging its silence. A model whose traffic
        stopped before a restart, or before its partition moved here, is otherwise never
        ticked: its open incidents neither resolve nor escalate, and its silence is never
        found. Wall-clock time goes on from where the engine and the silence were last
        advanced to, not across the downtime; events older than those times still move
        the model's latest event time as they would have (its ticks do not run ahead of a
        stream that lags); and the silence watch judges silence only once nothing of the
        model was read for ``silence_minutes`` after the restart (a backlog the worker has
        yet to read is not a silence). A stored traffic that does not read is relearned."""
        self._looked_up.add(model)
        if self.replay or model in self._seen:
            return
        raw = self.engine_store.get(traffic_key(model))
        if raw is None:
            return
        wall = self.wall_clock()
        try:
            t = restore("traffic", raw, lambda data: _Traffic.of(data))
            if t is None:
                return
            self.silence.resume(model, t.watch, wall)
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
            log.warning("stored traffic of model %r does not read (%s): relearned", model, exc)
            return
        # (wall clocks set back by what ticks had added: the next tick goes on from there)
        self._seen[model] = (
            datetime.fromtimestamp(t.event_at, UTC),
            wall - max(0.0, t.at - t.event_at),
        )
        if t.served_at is not None:
            ahead = max(0.0, (t.silence_at or t.served_at) - t.served_at)
            self._traffic_seen[model] = (t.served_at, wall - ahead)
        log.info(
            "model %r: its traffic resumed from the store (latest event %s); its silence is "
            "judged from here on",
            model,
            datetime.fromtimestamp(t.event_at, UTC).isoformat(),
        )


@dataclass(frozen=True)
class _Traffic:
    """A model's stored traffic (:func:`traffic_key`, :meth:`Detect._resume`)."""

    event_at: float
    at: float
    served_at: float | None
    silence_at: float | None
    watch: dict[str, Any]

    @classmethod
    def of(cls, data: dict[str, Any]) -> _Traffic:
        """From its stored data; KeyError, TypeError or ValueError when it is not one."""

        def time_of(value: Any) -> float | None:
            return None if value is None else float(value)

        watch = data["watch"]
        if not isinstance(watch, dict):
            raise TypeError(f"a traffic's watch is a mapping, got {type(watch).__name__}")
        return cls(
            event_at=float(data["event_at"]),
            at=float(data["at"]),
            served_at=time_of(data["served_at"]),
            silence_at=time_of(data["silence_at"]),
            watch=watch,
        )


def in_memory_detect(
    settings: DetectionSettings, *, replay: bool = True, sweeps: bool = True
) -> Detect:
    """A :class:`Detect` over in-memory stores with the settings' policy and playbooks:
    offline replay's (:class:`streams.pipeline.replay.Pipeline`) and a parallel replay's
    detection processes' (:mod:`streams.pipeline.parallel`). Offline (``replay``), detector
    state stays live in memory from start to end: each key's state is serialised once
    into its store, not after every batch (a tenth of the time)."""
    policy = load_policy(settings.alerting_policy)
    playbooks = load_playbooks(settings.playbooks_dir)
    flush = math.inf if replay else 0.0
    return Detect(
        settings, policy, playbooks, {}, {}, replay=replay, sweeps=sweeps, flush_interval_s=flush
    )
