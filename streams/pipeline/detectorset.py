"""The detectors of one key (:class:`DetectorSet`), the evidence they keep, and the routing
plan: which detector kinds an event feeds and how each is built from the settings.

``FACTORIES`` is the routing plan's one list of detector kinds: each names its class
through :data:`detectors.registry.REGISTRY` (the one name -> class map) and says how many
alarm-raising tests it holds, so the false-alarm budget (:func:`per_detector_arl0`)
follows what is routed instead of a count kept by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from alerting.model import EventRange
from detectors.base import Detector, Signal
from detectors.registry import REGISTRY
from streams.contract.events import Feedback, InferenceInput, InferenceOutput
from streams.pipeline.observation import Observation, event_time
from streams.pipeline.rules import (
    ANY_TOXIC,
    is_critical,
    is_downvote,
    is_injected,
    top_toxicity,
)
from streams.settings import DetectionSettings

CHECKPOINT_EVERY: Final = 32
"""Observations between evidence checkpoints of a detector (offset granularity)."""
CHECKPOINTS_KEPT: Final = 64
"""Checkpoints kept per detector: ranges are exact for the last 2048 observations."""
SAMPLES_KEPT: Final = 10
TRAFFIC_HALF_LIFE_S: Final = 3600.0


@dataclass
class Tracker:
    """Where one detector's observations came from: offsets by checkpoint, samples."""

    n: int = 0
    checkpoints: list[list[Any]] = field(default_factory=list)  # [index, ts, {tp: offset}]
    last: dict[str, int] = field(default_factory=dict)  # "topic|partition" -> last offset
    samples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "cp": self.checkpoints, "last": self.last, "smp": self.samples}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tracker:
        return cls(n=data["n"], checkpoints=data["cp"], last=data["last"], samples=data["smp"])

    def see(self, obs: Observation, notable: bool) -> None:
        tp = f"{obs.coords.topic}|{obs.coords.partition}"
        if self.n % CHECKPOINT_EVERY == 0:
            self.checkpoints.append(
                [self.n, event_time(obs.event), dict(self.last) | {tp: obs.coords.offset}]
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
        self.trackers: dict[str, Tracker] = {}
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
            det = FACTORIES[name.split(":")[0]].rebuild(entry["params"])
            det.set_state(entry["state"])
            out.detectors[name] = det
        out.trackers = {name: Tracker.from_json(t) for name, t in data["t"].items()}
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
    ) -> list[tuple[str, Signal, Tracker]]:
        det = self.detectors.get(name)
        if name in self.hold and (det is None or det.learning):
            return []  # a more general key is alarming: do not learn a baseline from it
        if det is None:
            kind, _, features = name.partition(":")
            det = FACTORIES[kind].make(self, tuple(features.split(",")) if features else ())
            self.detectors[name] = det
        tracker = self.trackers.setdefault(name, Tracker())
        tracker.see(obs, notable)
        signal = det.update(x)
        return [(name, signal, tracker)] if signal is not None else []

    def update(
        self, obs: Observation, hold: frozenset[str] = frozenset()
    ) -> list[tuple[str, Signal, Tracker]]:
        """Feed one observation to the detectors it concerns; return (signal, evidence).

        Detectors named in ``hold`` that are still learning their baseline skip it.
        """
        self.hold = hold
        s = self.settings
        event = obs.event
        out: list[tuple[str, Signal, Tracker]] = []
        drift = self.level in s.drift_levels
        if isinstance(event, Feedback):
            down = is_downvote(event, s)
            out += self._feed("downvote", down, obs, down)
        elif isinstance(event, InferenceOutput):
            scores = event.moderation
            top = top_toxicity(scores, s)
            tox = top >= s.toxicity_cutoff
            out += self._feed("toxicity", {**scores, ANY_TOXIC: top}, obs, tox)
            if self.level == "model":
                # A critical event is judged once, at the model level: copies at the other
                # levels would only be inhibited duplicates of the same page.
                out += self._feed("critical", scores, obs, is_critical(scores, s))
            if event.prompt_injection is not None:
                flag = is_injected(event.prompt_injection, s)
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
    """How the pipeline builds one kind of detector from its settings.

    ``registered`` is the detector's name in :data:`detectors.registry.REGISTRY`;
    ``tests`` says how many alarm-raising tests one such detector runs (its share of the
    false-alarm budget).
    """

    registered: str
    build: Callable[[DetectorSet, tuple[str, ...]], Kwargs]
    tests: Callable[[DetectionSettings], int] = lambda _: 1

    @property
    def cls(self) -> type[Detector[Any]]:
        return REGISTRY[self.registered]

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


def _toxicity(ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    return _rate(ds, features) | {"categories": s.toxicity_categories, "cutoff": s.toxicity_cutoff}


def _critical(ds: DetectorSet, _: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    return {"categories": s.critical_categories, "cutoff": s.critical_cutoff}


def _confidence(ds: DetectorSet, _: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    return {"arl0": ds.arl0, "shift": s.confidence_shift_sd, "reference_size": s.warmup_events}


FACTORIES: Final[dict[str, _Factory]] = {
    "downvote": _Factory("adaptive_downvote_spike", _feedback_rate),
    "injection": _Factory("adaptive_prompt_injection_rate", _adaptive),
    # one test per category, and the pooled "any toxic category"
    "toxicity": _Factory("toxicity_rate", _toxicity, lambda s: len(s.toxicity_categories) + 1),
    # single-event pages: no run length, no share of the budget
    "critical": _Factory("critical_event", _critical, lambda _: 0),
    # mean up, mean down, distribution
    "confidence": _Factory("confidence_shift", _confidence, lambda _: 3),
    "label_mix": _Factory("label_mix_drift", _window),
    "numeric": _Factory("numeric_drift", _window),
    "categorical": _Factory("categorical_drift", _window),
    "embedding": _Factory("embedding_drift", _window),
}
"""The routing plan's detector kinds (the prefix of a detector's name in a key's set)."""


def tests_per_level(settings: DetectionSettings) -> int:
    """Alarm-raising tests an observation can feed at one level (the ARL0 budget divisor)."""
    return sum(factory.tests(settings) for factory in FACTORIES.values())


def per_detector_arl0(settings: DetectionSettings) -> float:
    """ARL0 each detector needs so the whole service meets its false-alarm budget.

    Expected false alarms per million events = sum over levels and tests of
    (observations at that level / ARL0). Every event feeds at most ``2 + len(segment
    labels)`` levels, and :func:`tests_per_level` tests at each, so this ARL0 keeps the
    total within ``false_alarms_per_million_events`` (conservatively: most events feed
    fewer).
    """
    levels = 2 + len(settings.segment_labels)
    budget = settings.false_alarms_per_million_events
    return 1e6 * levels * tests_per_level(settings) / budget
