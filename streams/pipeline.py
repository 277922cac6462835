"""The detection pipeline, free of faust: join, keyed detectors, incidents.

One code path serves the streaming worker (:mod:`streams.agents`, state in faust tables)
and offline replay (:mod:`streams.replay`, state in dicts). It has two stages:

1. :class:`Joiner` (partitioned by request id): feedback and evaluations often lack the
   model version, so they are joined to the output they rate. Join state is bounded: an
   entry lives ``join_ttl_minutes`` of event time, and at most ``join_max_entries`` per
   partition are kept (oldest evicted first). Feedback that arrives before its output
   waits in the same bounded state.
2. :class:`Detect` (partitioned by model): every observation feeds detectors at several
   levels — the model, model x version, and model x each single segment label — so a
   failure that lives in one tenant or locale is seen, while no key is cut so thin that
   it never learns a baseline. Signals become :class:`alerting.model.Detection` with
   evidence (offset ranges, sample request ids, traffic share) and go through one
   :class:`alerting.engine.IncidentEngine` per model (inhibition and deploys are per
   model), whose output is the list of incident events to publish.

All state is JSON-compatible and lives in injected mappings; every value read is written
back after it changes (never mutated in place inside a table).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from alerting.engine import IncidentEngine
from alerting.model import BlastRadius, Detection, EventRange, IncidentEvent, Labels
from alerting.playbooks import PlaybookSet
from alerting.policy import AlertingPolicy, Silence
from alerting.silences import sync_engine_silences
from detectors.base import Detector, Signal
from detectors.confidence import ConfidenceShift
from detectors.drift import CategoricalDrift, EmbeddingDrift, LabelMixDrift, NumericDrift
from detectors.rate import (
    AdaptiveDownvoteSpike,
    AdaptivePromptInjectionRate,
    CriticalEventDetector,
    ToxicityRate,
)
from streams.events import AnyEvent, Evaluation, Feedback, InferenceInput, InferenceOutput
from streams.ingress import Coordinates
from streams.settings import DetectionSettings

Store = MutableMapping[str, Any]
SilenceSource = Callable[[datetime, str], list[Silence]]
"""Active runtime silences for a model at a time (see :mod:`alerting.silences`)."""

CHECKPOINT_EVERY: Final = 32
"""Observations between evidence checkpoints of a detector (offset granularity)."""
CHECKPOINTS_KEPT: Final = 64
"""Checkpoints kept per detector: ranges are exact for the last 2048 observations."""
SAMPLES_KEPT: Final = 10
ANY_TOXIC: Final = "any"
"""Pseudo-category: the output is toxic in any category. A spike spread over categories
is invisible per category long before it is obvious pooled, so both are watched."""
TRAFFIC_HALF_LIFE_S: Final = 3600.0
LEVEL_CACHE_SIZE: Final = 10_000
"""Distinct (model, version, segment labels) combinations whose detector keys are kept."""


# --------------------------------------------------------------------------------------
# Observations: a validated event with its model and version resolved, and where it was.


@dataclass(frozen=True, slots=True)
class Observation:
    """One event ready for detection: labels resolved, Kafka coordinates attached."""

    event: AnyEvent
    model: str
    version: str
    segment: dict[str, str]
    coords: Coordinates

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event.model_dump(mode="json", by_alias=True, exclude_none=True),
            "model": self.model,
            "version": self.version,
            "segment": self.segment,
            "coords": [self.coords.topic, self.coords.partition, self.coords.offset],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observation:
        from streams.events import EVENT_ADAPTER

        topic, partition, offset = data["coords"]
        return cls(
            event=EVENT_ADAPTER.validate_python(data["event"]),
            model=data["model"],
            version=data["version"],
            segment=dict(data["segment"]),
            coords=Coordinates(topic, partition, offset),
        )


# --------------------------------------------------------------------------------------
# Stage 1: the join.


@dataclass
class JoinStats:
    """Counters of the join stage (exported as metrics)."""

    joined: int = 0
    parked: int = 0
    expired_unjoined: int = 0
    evicted: int = 0


def _ts(event: AnyEvent) -> float:
    return event.timestamp.timestamp()


class Joiner:
    """Resolve model and version for feedback and evaluations by request id.

    ``store`` maps ``o:<request_id>`` to the output's labels and ``p:<request_id>`` to
    events waiting for their output. Eviction happens per partition, in the order entries
    were written, from a FIFO that is rebuilt from the store after a restart, so that
    every entry is deleted while processing an event of the partition that owns it.
    """

    def __init__(self, settings: DetectionSettings, store: Store) -> None:
        self.ttl_s = settings.join_ttl_minutes * 60.0
        self.max_entries = settings.join_max_entries
        self.store = store
        self.stats = JoinStats()
        self._fifo: dict[int, deque[tuple[float, str]]] | None = None

    def _fifos(self) -> dict[int, deque[tuple[float, str]]]:
        if self._fifo is None:
            entries = sorted(
                (value["t"], value["part"], key) for key, value in list(self.store.items())
            )
            self._fifo = {}
            for t, part, key in entries:
                self._fifo.setdefault(part, deque()).append((t, key))
        return self._fifo

    def _remember(self, key: str, value: dict[str, Any], partition: int) -> None:
        value = {**value, "part": partition}
        self.store[key] = value
        self._fifos().setdefault(partition, deque()).append((value["t"], key))

    def _evict(self, partition: int, now: float) -> None:
        fifo = self._fifos().get(partition)
        while fifo and (now - fifo[0][0] > self.ttl_s or len(fifo) > self.max_entries):
            t, key = fifo.popleft()
            value = self.store.get(key)
            if value is None or value["t"] != t:
                continue  # overwritten later; a newer FIFO entry owns it
            if key.startswith("p:"):
                self.stats.expired_unjoined += len(value["events"])
            else:
                self.stats.evicted += 1
            del self.store[key]

    def process(
        self, event: AnyEvent, coords: Coordinates, partition: int | None = None
    ) -> list[Observation]:
        """Observations ready for detection now (possibly parked events released).

        ``partition`` is the partition that owns this request id's join state (the
        worker's by-request partition); it defaults to the event's own partition.
        """
        part = coords.partition if partition is None else partition
        out: list[Observation] = []
        if isinstance(event, InferenceInput):
            out.append(Observation(event, event.model, event.model_version, event.segment, coords))
        elif isinstance(event, InferenceOutput):
            labels = {"m": event.model, "v": event.model_version, "s": event.segment}
            self._remember("o:" + event.request_id, {**labels, "t": _ts(event)}, part)
            out.append(Observation(event, event.model, event.model_version, event.segment, coords))
            parked = self.store.get("p:" + event.request_id)
            if parked is not None:
                del self.store["p:" + event.request_id]
                for item in parked["events"]:
                    obs = Observation.from_json(item)
                    out.append(self._with_labels(obs.event, obs.coords, labels))
                    self.stats.joined += 1
        else:
            out.extend(self._join(event, coords, part))
        self._evict(part, _ts(event))
        return out

    def _with_labels(
        self, event: AnyEvent, coords: Coordinates, labels: dict[str, Any]
    ) -> Observation:
        segment = {**labels["s"], **event.segment}
        return Observation(event, labels["m"], labels["v"], segment, coords)

    def _join(
        self, event: Feedback | Evaluation, coords: Coordinates, part: int
    ) -> list[Observation]:
        if event.model is not None and event.model_version is not None:
            return [Observation(event, event.model, event.model_version, event.segment, coords)]
        labels = self.store.get("o:" + event.request_id)
        if labels is not None:
            self.stats.joined += 1
            return [self._with_labels(event, coords, labels)]
        key = "p:" + event.request_id
        waiting = self.store.get(key)
        placeholder = Observation(event, "", "", {}, coords).to_json()
        events = [*(waiting["events"] if waiting else []), placeholder][-8:]
        self._remember(key, {"t": _ts(event), "events": events}, part)
        self.stats.parked += 1
        return []


# --------------------------------------------------------------------------------------
# Stage 2: keyed detectors and incidents.


def key_levels(obs: Observation, settings: DetectionSettings) -> list[tuple[str, Labels]]:
    """The detector keys an observation feeds, most general first."""
    return [(level, labels) for level, labels, _ in _key_levels(obs, settings)]


def _key_levels(obs: Observation, settings: DetectionSettings) -> list[tuple[str, Labels, str]]:
    levels: list[tuple[str, Labels]] = [
        ("model", Labels(model=obs.model)),
        ("version", Labels(model=obs.model, version=obs.version)),
    ]
    for label in settings.segment_labels:
        value = obs.segment.get(label)
        if value is not None:
            levels.append(("segment", Labels(model=obs.model, segment={label: value})))
    return [(level, labels, key_id(labels)) for level, labels in levels]


def key_id(labels: Labels) -> str:
    """A stable string for a detector key (also the detector table's key)."""
    seg = ",".join(f"{k}={v}" for k, v in sorted(labels.segment.items()))
    return f"{labels.model}|{labels.version or '*'}|{seg}"


def detectors_per_level(settings: DetectionSettings) -> int:
    """Rate-type tests an observation can feed at one level (the ARL0 budget divisor)."""
    return (
        1  # downvotes
        + len(settings.toxicity_categories)
        + 1  # any toxic category
        + 1  # prompt injection
        + 3  # confidence: mean up, mean down, distribution
        + 4  # drift: numeric, categorical, embedding, label mix
    )


def per_detector_arl0(settings: DetectionSettings) -> float:
    """ARL0 each detector needs so the whole service meets its false-alarm budget.

    Expected false alarms per million events = sum over levels and detectors of
    (observations at that level / ARL0). Every event feeds at most ``2 + len(segment
    labels)`` levels, and ``detectors_per_level`` detectors at each, so this ARL0 keeps the
    total within ``false_alarms_per_million_events`` (conservatively: most events feed
    fewer detectors).
    """
    levels = 2 + len(settings.segment_labels)
    budget = settings.false_alarms_per_million_events
    return 1e6 * levels * detectors_per_level(settings) / budget


@dataclass
class _Tracker:
    """Where one detector's observations came from: offsets by checkpoint, samples."""

    n: int = 0
    checkpoints: list[list[Any]] = field(default_factory=list)  # [index, ts, {tp: offset}]
    last: dict[str, int] = field(default_factory=dict)  # "topic|partition" -> last offset
    samples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "cp": self.checkpoints, "last": self.last, "smp": self.samples}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Tracker:
        return cls(n=data["n"], checkpoints=data["cp"], last=data["last"], samples=data["smp"])

    def see(self, obs: Observation, notable: bool) -> None:
        tp = f"{obs.coords.topic}|{obs.coords.partition}"
        if self.n % CHECKPOINT_EVERY == 0:
            self.checkpoints.append(
                [self.n, _ts(obs.event), dict(self.last) | {tp: obs.coords.offset}]
            )
            if len(self.checkpoints) > CHECKPOINTS_KEPT:
                del self.checkpoints[0]
        self.last[tp] = obs.coords.offset
        if notable:
            self.samples.append(obs.event.request_id)
            if len(self.samples) > SAMPLES_KEPT:
                del self.samples[0]
        self.n += 1

    def evidence(self, first_index: int) -> tuple[float | None, tuple[EventRange, ...]]:
        """Event time of the window start and the offset ranges since ``first_index``."""
        chosen = None
        for cp in self.checkpoints:
            if cp[0] <= first_index:
                chosen = cp
            else:
                break
        if chosen is None and self.checkpoints:
            chosen = self.checkpoints[0]
        firsts: dict[str, int] = chosen[2] if chosen else {}
        ranges = []
        for tp, last in sorted(self.last.items()):
            topic, _, part = tp.rpartition("|")
            first = min(firsts.get(tp, last), last)
            ranges.append(
                EventRange(topic=topic, partition=int(part), first_offset=first, last_offset=last)
            )
        return (chosen[1] if chosen else None), tuple(ranges)


class DetectorSet:
    """The detectors of one key, built lazily as the kinds of data they need appear."""

    def __init__(self, settings: DetectionSettings, level: str, arl0: float) -> None:
        self.settings = settings
        self.level = level
        self.arl0 = arl0
        self.detectors: dict[str, Detector[Any]] = {}
        self.trackers: dict[str, _Tracker] = {}
        self.traffic = 0.0
        self.traffic_t = 0.0
        self.alarms: dict[str, float] = {}  # detector name -> event time its alarm holds until
        self.hold: frozenset[str] = frozenset()
        self.versions: list[str] = []  # model level only: versions in order of appearance

    # -- state ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "d": {
                name: {"params": _jsonable(det.params()), "state": det.get_state()}
                for name, det in self.detectors.items()
            },
            "t": {name: tr.to_json() for name, tr in self.trackers.items()},
            "traffic": [self.traffic, self.traffic_t],
            "alarms": self.alarms,
            "versions": self.versions,
        }

    @classmethod
    def from_json(
        cls, data: dict[str, Any], settings: DetectionSettings, level: str, arl0: float
    ) -> DetectorSet:
        out = cls(settings, level, arl0)
        for name, entry in data["d"].items():
            det = _FACTORIES[name.split(":")[0]].rebuild(entry["params"])
            det.set_state(entry["state"])
            out.detectors[name] = det
        out.trackers = {name: _Tracker.from_json(t) for name, t in data["t"].items()}
        out.traffic, out.traffic_t = data["traffic"]
        out.alarms = dict(data["alarms"])
        out.versions = list(data["versions"])
        return out

    def canary_copy(self) -> DetectorSet:
        """A new version's detectors, starting from this (previous) version's baselines.

        Canary analysis: a new version is judged against the baseline of the version it
        replaces instead of learning a fresh baseline from its own, possibly bad, traffic.
        Evidence trackers and alarm holds start empty.
        """
        data = self.to_json()
        fresh = {"d": data["d"], "t": {}, "traffic": [0.0, 0.0], "alarms": {}, "versions": []}
        return DetectorSet.from_json(fresh, self.settings, self.level, self.arl0)

    # -- updating ------------------------------------------------------------------------

    def see_traffic(self, t: float) -> float:
        """Exponentially decayed event count (half-life one hour of event time)."""
        if t > self.traffic_t:
            self.traffic *= math.exp2(-(t - self.traffic_t) / TRAFFIC_HALF_LIFE_S)
            self.traffic_t = t
        self.traffic += 1.0
        return self.traffic

    def _feed(
        self, name: str, x: Any, obs: Observation, notable: bool
    ) -> list[tuple[str, Signal, _Tracker]]:
        det = self.detectors.get(name)
        if name in self.hold and (det is None or det.learning):
            return []  # a more general key is alarming: do not learn a baseline from it
        if det is None:
            kind, _, features = name.partition(":")
            det = _FACTORIES[kind].make(self, tuple(features.split(",")) if features else ())
            self.detectors[name] = det
        tracker = self.trackers.setdefault(name, _Tracker())
        tracker.see(obs, notable)
        signal = det.update(x)
        return [(name, signal, tracker)] if signal is not None else []

    def update(
        self, obs: Observation, hold: frozenset[str] = frozenset()
    ) -> list[tuple[str, Signal, _Tracker]]:
        """Feed one observation to the detectors it concerns; return (signal, evidence).

        Detectors named in ``hold`` that are still learning their baseline skip it.
        """
        self.hold = hold
        s = self.settings
        event = obs.event
        out: list[tuple[str, Signal, _Tracker]] = []
        drift = self.level in s.drift_levels
        if isinstance(event, Feedback):
            if event.vote is not None or event.rating is not None:
                down = event.vote == "down" or (
                    event.rating is not None and event.rating <= s.downvote_max_rating
                )
                out += self._feed("downvote", down, obs, down)
        elif isinstance(event, InferenceOutput):
            scores = event.moderation
            top = max((scores.get(c, 0.0) for c in s.toxicity_categories), default=0.0)
            tox = top >= s.toxicity_cutoff
            out += self._feed("toxicity", {**scores, ANY_TOXIC: top}, obs, tox)
            if self.level == "model":
                # A critical event is judged once, at the model level: copies at the other
                # levels would only be inhibited duplicates of the same page.
                crit = any(scores.get(c, 0.0) >= s.critical_cutoff for c in s.critical_categories)
                out += self._feed("critical", scores, obs, crit)
            if event.prompt_injection is not None:
                flag = event.prompt_injection >= s.prompt_injection_cutoff
                out += self._feed("injection", flag, obs, flag)
            if event.confidence is not None:
                out += self._feed("confidence", event.confidence, obs, False)
            if drift and event.label is not None:
                out += self._feed("label_mix", event.label, obs, False)
        elif isinstance(event, InferenceInput) and drift:
            if event.numeric_features:
                feats = sorted(event.numeric_features)[: s.max_features]
                out += self._feed("numeric:" + ",".join(feats), event.numeric_features, obs, False)
            if event.categorical_features:
                feats = sorted(event.categorical_features)[: s.max_features]
                name = "categorical:" + ",".join(feats)
                out += self._feed(name, event.categorical_features, obs, False)
            if event.embedding:
                out += self._feed("embedding", event.embedding, obs, False)
        return out


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


Kwargs = dict[str, Any]


@dataclass(frozen=True)
class _Factory:
    """How the pipeline builds one kind of detector from its settings."""

    cls: type[Detector[Any]]
    build: Callable[[DetectorSet, tuple[str, ...]], Kwargs]

    def make(self, ds: DetectorSet, features: tuple[str, ...]) -> Detector[Any]:
        return self.cls(**self.build(ds, features))

    def rebuild(self, params: Kwargs) -> Detector[Any]:
        return self.cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


def _rate(ds: DetectorSet, _: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    return {"arl0": ds.arl0, "warmup": s.warmup_events, "relative_shift": s.relative_shift}


def _adaptive(ds: DetectorSet, _: tuple[str, ...]) -> Kwargs:
    """Parallel CUSUMs for half, once and three times the configured shift: downvote
    spikes and injection waves come in every size (a 20x wave is common)."""
    s = ds.settings
    shift = s.relative_shift
    return {
        "arl0": ds.arl0,
        "warmup": s.warmup_events,
        "relative_shifts": (shift / 2, shift, 3 * shift),
    }


def _feedback_rate(ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
    """Feedback detectors see ``feedback_fraction`` of the events: their share of the
    false-alarm budget, counted in their own observations, is that much shorter."""
    s = ds.settings
    return _adaptive(ds, features) | {
        "warmup": s.feedback_warmup_events,
        "arl0": ds.arl0 * s.feedback_fraction,
    }


def _window(ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    kwargs: Kwargs = {
        "arl0": ds.arl0,
        "reference_size": s.drift_reference_size,
        "window": s.drift_window,
    }
    return kwargs | ({"features": features} if features else {})


_FACTORIES: Final[dict[str, _Factory]] = {
    "downvote": _Factory(AdaptiveDownvoteSpike, _feedback_rate),
    "injection": _Factory(AdaptivePromptInjectionRate, _adaptive),
    "toxicity": _Factory(
        ToxicityRate,
        lambda ds, f: (
            _rate(ds, f)
            | {"categories": ds.settings.toxicity_categories, "cutoff": ds.settings.toxicity_cutoff}
        ),
    ),
    "critical": _Factory(
        CriticalEventDetector,
        lambda ds, _: {
            "categories": ds.settings.critical_categories,
            "cutoff": ds.settings.critical_cutoff,
        },
    ),
    "confidence": _Factory(
        ConfidenceShift,
        lambda ds, _: {
            "arl0": ds.arl0,
            "shift": ds.settings.confidence_shift_sd,
            "reference_size": ds.settings.warmup_events,
        },
    ),
    "label_mix": _Factory(LabelMixDrift, _window),
    "numeric": _Factory(NumericDrift, _window),
    "categorical": _Factory(CategoricalDrift, _window),
    "embedding": _Factory(EmbeddingDrift, _window),
}


@dataclass
class DetectStats:
    """Counters of the detect stage (exported as metrics)."""

    observations: int = 0
    signals: int = 0
    incident_events: int = 0


class Detect:
    """Keyed detectors and one incident engine per model, over injected stores.

    ``detector_store`` maps :func:`key_id` to a :class:`DetectorSet` state;
    ``engine_store`` maps a model name to its :class:`IncidentEngine` state. Call
    :meth:`process` with observations of one partition in order; it returns the incident
    events to publish (keyed by their dedup key).

    Detector sets stay live in memory between batches; a key's state is written back to
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
        flush_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.playbooks = playbooks
        self.detector_store = detector_store
        self.engine_store = engine_store
        self.replay = replay
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self._live: dict[str, DetectorSet] = {}
        self._written: dict[str, float] = {}
        self._levels: dict[
            tuple[str, str, tuple[str | None, ...]], list[tuple[str, Labels, str]]
        ] = {}
        self.arl0 = per_detector_arl0(settings)
        self.learning_pause_s = settings.learning_pause_minutes * 60.0
        self.stats = DetectStats()
        self.silences: SilenceSource | None = None
        """Runtime silences (from ``sentinel silence``), applied to each engine per batch."""

    def _engine(
        self, model: str, cache: dict[str, IncidentEngine], now: datetime
    ) -> IncidentEngine:
        engine = cache.get(model)
        if engine is None:
            engine = IncidentEngine(self.policy, self.playbooks, replay=self.replay)
            state = self.engine_store.get(model)
            if state is not None:
                engine.set_state(state)
            if self.silences is not None:
                keep = [s.id for s in self.policy.silences]
                sync_engine_silences(engine, self.silences(now, model), keep_ids=keep)
            cache[model] = engine
        return engine

    def _levels_of(self, obs: Observation) -> list[tuple[str, Labels, str]]:
        """:func:`key_levels` with key ids, cached: few distinct label sets recur in every
        event, and building them was a tenth of the detect stage's time."""
        seg = tuple(obs.segment.get(label) for label in self.settings.segment_labels)
        cache_key = (obs.model, obs.version, seg)
        levels = self._levels.get(cache_key)
        if levels is None:
            if len(self._levels) >= LEVEL_CACHE_SIZE:
                self._levels.clear()
            levels = self._levels[cache_key] = _key_levels(obs, self.settings)
        return levels

    def invalidate(self) -> None:
        """Forget the in-memory detector sets (call when partitions are revoked/assigned:
        another worker may own, and change, their state in the meantime)."""
        self._live.clear()
        self._written.clear()

    def _set(self, kid: str, level: str, cache: dict[str, DetectorSet]) -> DetectorSet:
        ds = cache.get(kid) or self._live.get(kid)
        if ds is not None:
            cache[kid] = ds
        else:
            state = self.detector_store.get(kid)
            ds = (
                DetectorSet.from_json(state, self.settings, level, self.arl0)
                if state is not None
                else DetectorSet(self.settings, level, self.arl0)
            )
            cache[kid] = ds
        return ds

    def process(self, batch: Iterable[Observation]) -> list[IncidentEvent]:
        """Run a batch through the detectors; write back every state it touched."""
        sets: dict[str, DetectorSet] = {}
        engines: dict[str, IncidentEngine] = {}
        out: list[IncidentEvent] = []
        latest: dict[str, datetime] = {}
        for obs in batch:
            self.stats.observations += 1
            engine = self._engine(obs.model, engines, obs.event.timestamp)
            t = _ts(obs.event)
            model_traffic = 0.0
            hold: frozenset[str] = frozenset()
            model_set: DetectorSet | None = None
            detections: list[tuple[str, Detection]] = []
            for level, labels, kid in self._levels_of(obs):
                if (
                    model_set is not None
                    and level == "version"
                    and kid not in sets
                    and kid not in self.detector_store
                ):
                    self._new_version(model_set, engine, obs, kid, sets)
                ds = self._set(kid, level, sets)
                traffic = ds.see_traffic(t)
                if model_set is None:
                    model_set, model_traffic = ds, traffic
                    hold = frozenset(n for n, until in ds.alarms.items() if until > t)
                for name, signal, tracker in ds.update(
                    obs, hold if level != "model" else frozenset()
                ):
                    self.stats.signals += 1
                    if level != "segment":
                        model_set.alarms[name] = t + self.learning_pause_s
                    start_t, ranges = tracker.evidence(signal.first_index)
                    share = min(1.0, traffic / model_traffic) if model_traffic else None
                    detection = Detection(
                        labels=labels,
                        signal=signal,
                        at=obs.event.timestamp,
                        window_start=(
                            datetime.fromtimestamp(start_t, obs.event.timestamp.tzinfo)
                            if start_t is not None
                            else None
                        ),
                        ranges=ranges,
                        sample_request_ids=tuple(tracker.samples[-SAMPLES_KEPT:])
                        or (obs.event.request_id,),
                        blast_radius=BlastRadius(traffic_share=share),
                        replay=self.replay,
                    )
                    detections.append((level, detection))
            if detections:
                # A deployed (not first) version's incidents go first: a bad deploy names
                # the cause and mutes its model-wide symptom; otherwise general first.
                deployed = model_set is not None and obs.version in model_set.versions[1:]
                first = "version" if deployed else "model"
                detections.sort(key=lambda ld: (ld[0] != first, ld[0] == "segment"))
                for _, detection in detections:
                    out.extend(engine.observe(detection))
            prev = latest.get(obs.model)
            if prev is None or obs.event.timestamp > prev:
                latest[obs.model] = obs.event.timestamp
        for model, now in latest.items():
            out.extend(engines[model].tick(now))
        wall = self.clock()
        for kid, ds in sets.items():
            self._live[kid] = ds
            if wall - self._written.get(kid, -math.inf) >= self.flush_interval_s:
                self.detector_store[kid] = ds.to_json()
                self._written[kid] = wall
        for model, engine in engines.items():
            self.engine_store[model] = engine.get_state()
        self.stats.incident_events += len(out)
        return out

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
        previous = model_set.versions[-1] if model_set.versions else None
        model_set.versions.append(obs.version)
        if previous is None:
            return
        engine.record_deploy(obs.model, obs.version, obs.event.timestamp, previous)
        prev_kid = key_id(Labels(model=obs.model, version=previous))
        sets[kid] = self._set(prev_kid, "version", sets).canary_copy()

    def tick(self, model: str, now: datetime) -> list[IncidentEvent]:
        """Advance one model's engine to ``now`` (resolve quiet incidents) and store it."""
        engines: dict[str, IncidentEngine] = {}
        engine = self._engine(model, engines, now)
        out = engine.tick(now)
        self.engine_store[model] = engine.get_state()
        return out
