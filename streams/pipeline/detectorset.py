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

from alerting.model import EventRange, Labels
from alerting.relearn import RelearnBook, RelearnRecord
from detectors.base import Detector, Signal, SignalKind
from detectors.registry import REGISTRY
from streams.contract.events import Evaluation, Feedback, InferenceInput, InferenceOutput
from streams.detection_settings import DetectionSettings
from streams.pipeline import budget
from streams.pipeline.observation import Observation, event_time
from streams.pipeline.priors import adopt_parent_prior
from streams.pipeline.rules import (
    finish_flags,
    harm_flags,
    is_critical,
    is_downvote,
    is_evaluation_fail,
    is_guardrail_block,
    is_hallucination,
    is_injected,
)

CHECKPOINT_EVERY: Final = 32
"""Observations between evidence checkpoints of a detector (offset granularity)."""
CHECKPOINTS_DENSE: Final = 64
"""The newest checkpoints, every :data:`CHECKPOINT_EVERY` observations: ranges are exact
for the last 2048 observations."""
CHECKPOINTS_KEPT: Final = 96
"""Checkpoints kept per detector: the dense ones and older ones thinned so that their
spacing grows with their age (:meth:`Tracker._thin`)."""
SAMPLES_KEPT: Final = 10
TRAFFIC_HALF_LIFE_S: Final = 3600.0
PRIOR_FOLLOW_EVERY: Final = 64
"""Observations between a segment detector's looks at its parent's baseline once it has
learned its own: while a parent's prior still floors its baseline, the floor follows the
parent's re-estimates (:meth:`detectors.rate.BernoulliCusum.adopt_prior`)."""
RATE_MIN_SPAN_S: Final = 60.0


def decayed(count: float, since: float, t: float) -> float:
    """A count last updated at event time ``since``, decayed to ``t`` (half-life
    :data:`TRAFFIC_HALF_LIFE_S`; a ``t`` before ``since`` leaves it as it is)."""
    return count * math.exp2(-(t - since) / TRAFFIC_HALF_LIFE_S) if t > since else count


def decayed_rate(count: float, t: float, t0: float | None) -> float:
    """Events per second (event time) of a decayed count last updated at ``t``, first at
    ``t0``: the count over the decayed time it covers, ``H / ln 2 * (1 - 2^-(age / H))``,
    so a young count is not underestimated. The first minute counts as a minute (no rate
    from a single event)."""
    age = t - (t0 if t0 is not None else 0.0)
    span = TRAFFIC_HALF_LIFE_S / math.log(2) * -math.expm1(-age / TRAFFIC_HALF_LIFE_S * math.log(2))
    return count / max(span, RATE_MIN_SPAN_S)


def source(obs: Observation) -> str:
    """Where ``obs`` was read, as a tracker keys its offsets: ``"topic|partition"``."""
    return f"{obs.coords.topic}|{obs.coords.partition}"


@dataclass
class Tracker:
    """Where one detector's observations came from: offsets by checkpoint, samples."""

    n: int = 0
    checkpoints: list[list[Any]] = field(default_factory=list)  # [index, ts, {tp: offset}]
    """Every :data:`CHECKPOINT_EVERY` observations, thinned with age beyond the newest
    :data:`CHECKPOINTS_DENSE` (:meth:`_thin`): its index, event time and, per
    ``"topic|partition"``, the last offset seen there *before* it (its own partition's
    entry is its offset - 1)."""
    last: dict[str, int] = field(default_factory=dict)  # "topic|partition" -> last offset
    samples: list[str] = field(default_factory=list)
    first: dict[str, int] = field(default_factory=dict)  # "topic|partition" -> first offset

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "cp": self.checkpoints,
            "last": self.last,
            "smp": self.samples,
            "first": self.first,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tracker:
        return cls(
            n=data["n"],
            checkpoints=data["cp"],
            last=data["last"],
            samples=data["smp"],
            first=data.get("first", {}),  # states saved before it: first seen unknown
        )

    def see(self, obs: Observation, notable: bool, tp: str) -> None:
        """Count ``obs``, read from ``tp`` (``"topic|partition"``, :func:`source`)."""
        offset = obs.coords.offset
        if self.n % CHECKPOINT_EVERY == 0:
            self.checkpoints.append(
                [self.n, event_time(obs.event), dict(self.last) | {tp: offset - 1}]
            )
            if len(self.checkpoints) > CHECKPOINTS_KEPT:
                self._thin()
        if tp not in self.last:
            self.first[tp] = offset
        self.last[tp] = offset
        if notable:
            self.samples.append(obs.event.request_id)
            if len(self.samples) > SAMPLES_KEPT:
                del self.samples[0]
        self.n += 1

    def _thin(self) -> None:
        """Drop one of the checkpoints older than the dense ones: the one whose neighbours
        lie closest together relative to its age. Spacing then grows in proportion to age,
        and the first checkpoint stays, so the evidence of a CUSUM that summed for hours
        starts at a checkpoint at or before its change point, not at the oldest one kept,
        after it: the incident engine tells evidence that began before a cause ended from
        evidence of a new change by that start. It errs early by a fraction of the change
        point's age that grows slowly with the tracker's length (at most 0.21 after 200k
        observations, 0.36 after 1M): a new change an hour old on a busy key may be dated
        up to about 20 minutes early."""
        cps = self.checkpoints
        older = len(cps) - CHECKPOINTS_DENSE
        j = min(
            range(1, older),
            key=lambda i: (cps[i + 1][0] - cps[i - 1][0]) / max(self.n - cps[i][0], 1),
        )
        del cps[j]

    def time_at(self, index: int) -> float | None:
        """Event time of the first checkpoint at or after observation ``index``: the time of
        that observation or, between checkpoints or before the oldest kept, a later one
        (an estimate that errs late). None when no checkpoint is that recent."""
        for cp in self.checkpoints:
            if cp[0] >= index:
                return float(cp[1])
        return None

    def evidence(self, first_index: int) -> tuple[float | None, tuple[EventRange, ...]]:
        """Event time of the window start and the offset ranges since ``first_index``:
        per partition, from the first offset after the last one seen before the window
        (or the first ever seen there) to the last seen; a partition with nothing in the
        window has no range."""
        chosen = None
        for cp in self.checkpoints:
            if cp[0] <= first_index:
                chosen = cp
            else:
                break
        if chosen is None and self.checkpoints:
            chosen = self.checkpoints[0]
        before: dict[str, int] = chosen[2] if chosen else {}
        ranges = []
        for tp, last in sorted(self.last.items()):
            if tp in before:
                if last <= before[tp]:
                    continue  # nothing from this partition since the window began
                first = before[tp] + 1
            else:
                first = self.first.get(tp, last)
            topic, _, part = tp.rpartition("|")
            ranges.append(
                EventRange(topic=topic, partition=int(part), first_offset=first, last_offset=last)
            )
        if not ranges and self.last:  # a checkpoint saved before "offset - 1": the last seen
            tp, last = max(self.last.items(), key=lambda item: item[1])
            topic, _, part = tp.rpartition("|")
            ranges.append(
                EventRange(topic=topic, partition=int(part), first_offset=last, last_offset=last)
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
        self.traffic_t0: float | None = None  # event time of the first event counted
        # The same for the inputs and outputs alone (the key serving requests; feedback and
        # evaluations about earlier outputs trail it): when its serving stopped.
        self.served = 0.0
        self.served_t = 0.0
        self.served_t0: float | None = None
        self._targeted: dict[str, float] = {}  # detector name -> per-test ARL0 it runs at
        # detector name (or INPUT_DRIFT_HOLD) -> event time its alarm holds learning until
        self.alarms: dict[str, float] = {}
        self.hold: frozenset[str] = frozenset()
        self.parents: tuple[DetectorSet, ...] = ()
        self.share = 1.0
        self.versions: list[str] = []  # model level only: versions in order of appearance
        self._source = ""  # the observation being fed: its "topic|partition"
        self.relearn_mark: tuple[str, str] | None = None
        """The newest operator re-learn applied here (:meth:`alerting.relearn.RelearnRecord.
        mark`); kept in the state, so a restart does not apply it again."""
        self.relearn_generation = -1
        """The :class:`alerting.relearn.RelearnBook` generation this set was last checked
        against (in memory only: a restored set checks once)."""

    # -- state ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "d": {
                name: {"params": _jsonable(det.params()), "state": det.get_state()}
                for name, det in self.detectors.items()
            },
            "t": {name: tr.to_json() for name, tr in self.trackers.items()},
            "traffic": [self.traffic, self.traffic_t, self.traffic_t0],
            "served": [self.served, self.served_t, self.served_t0],
            "alarms": self.alarms,
            "versions": self.versions,
            # The run length the key's budget gave it and what each detector runs at: a
            # restored set keeps them, so hysteresis holds across a restart or an eviction.
            "arl0": self.arl0,
            "targeted": self._targeted,
            "relearned": list(self.relearn_mark) if self.relearn_mark else None,
        }

    @classmethod
    def from_json(
        cls, data: dict[str, Any], settings: DetectionSettings, level: str, arl0: float
    ) -> DetectorSet:
        out = cls(settings, level, arl0)
        for name, entry in data["d"].items():
            factory = FACTORIES.get(name.split(":")[0])
            if factory is None:
                continue  # a retired kind (e.g. "toxicity", now "harm"): learned afresh
            params = entry["params"]
            if not params.keys() >= ADDED_PARAMS:
                # Saved before a parameter existed: this release's setting.
                fresh = factory.kwargs(out, _features(name))
                params = {k: v for k, v in fresh.items() if k in ADDED_PARAMS} | params
            if name == "embedding" and "designs" not in params:
                # Saved before embeddings had distance charts: this release's parameters
                # for the level, the saved ones kept; the charts start on the saved
                # reference (EmbeddingDrift.set_state).
                params = factory.kwargs(out, ()) | params
            det = factory.rebuild(params)
            det.set_state(entry["state"])
            out.detectors[name] = det
        out.trackers = {name: Tracker.from_json(t) for name, t in data["t"].items()}
        out.traffic, out.traffic_t, out.traffic_t0 = data["traffic"]
        # Absent in state of older releases: every event counted as serving then.
        out.served, out.served_t, out.served_t0 = data.get("served", data["traffic"])
        out.alarms = dict(data["alarms"])
        out.versions = list(data["versions"])
        out.arl0 = float(data.get("arl0", arl0))
        out._targeted = {k: float(v) for k, v in data.get("targeted", {}).items()}
        mark = data.get("relearned")
        out.relearn_mark = (str(mark[0]), str(mark[1])) if mark else None
        return out

    def canary_copy(self) -> DetectorSet:
        """A new version's detectors, starting from this (previous) version's baselines.

        Canary analysis: a new version is judged against the baseline of the version it
        replaces instead of learning a fresh baseline from its own, possibly bad, traffic.
        Evidence trackers and alarm holds start empty; the re-learns applied to the
        baselines come with them.
        """
        data = self.to_json()
        fresh = {
            "d": data["d"],
            "t": {},
            "traffic": [0.0, 0.0, None],
            "alarms": {},
            "versions": [],
            "relearned": data["relearned"],
        }
        return DetectorSet.from_json(fresh, self.settings, self.level, self.arl0)

    def follow_relearns(
        self, book: RelearnBook, labels: Labels
    ) -> list[tuple[RelearnRecord, list[str]]]:
        """Apply the operator re-learns of ``book`` that cover this key (its ``labels``) and
        that it has not applied yet, oldest first (:meth:`relearn`); a no-op unless the book
        changed since the last call. Each record applied, with the detector names dropped;
        the book counts those that dropped any (:meth:`RelearnBook.record_applied`)."""
        if self.relearn_generation == book.generation:
            return []
        applied = []
        for rec in book.pending(labels, self.relearn_mark):
            dropped = self.relearn(rec.selects)
            book.record_applied(rec, dropped)
            applied.append((rec, dropped))
            self.relearn_mark = rec.mark()
        self.relearn_generation = book.generation
        return applied

    def relearn(self, selects: Callable[[SignalKind], bool]) -> list[str]:
        """Drop the detectors whose signal kind ``selects`` accepts, with their evidence and
        alarm holds: the next observation builds each afresh, which learns a new baseline
        (an operator's re-learn, :mod:`alerting.relearn`). The names dropped."""
        names = [n for n, det in self.detectors.items() if selects(type(det).kind)]
        for name in names:
            del self.detectors[name]
            self.trackers.pop(name, None)
            self._targeted.pop(name, None)
            self.alarms.pop(name, None)
        if any(input_drift(n) for n in names):
            self.alarms.pop(INPUT_DRIFT_HOLD, None)
        return names

    # -- updating ------------------------------------------------------------------------

    def see_traffic(self, t: float, serving: bool = True) -> float:
        """Count an event at event time ``t`` (``serving``: an input or output,
        :func:`streams.pipeline.observation.serves`); the key's decayed event count
        (half-life one hour of event time)."""
        if serving:
            if self.served_t0 is None:
                self.served_t0 = t
            self.served = decayed(self.served, self.served_t, t) + 1.0
            self.served_t = max(self.served_t, t)
        if self.traffic_t0 is None:
            self.traffic_t0 = t
        self.traffic = decayed(self.traffic, self.traffic_t, t) + 1.0
        self.traffic_t = max(self.traffic_t, t)
        return self.traffic

    def rate(self) -> float:
        """Events per second (event time): :func:`decayed_rate` of every event."""
        return decayed_rate(self.traffic, self.traffic_t, self.traffic_t0)

    def served_rate(self) -> float:
        """Inputs and outputs per second (event time), as :meth:`rate`."""
        return decayed_rate(self.served, self.served_t, self.served_t0)

    def set_budget(self, test_seconds: float, floor_events: float = budget.MIN_ARL0) -> None:
        """Re-derive the per-test ARL0 in events from this key's rate and the per-test ARL0
        in seconds (:mod:`streams.pipeline.budget`); detectors follow on their next
        observation, keeping their evidence. ``floor_events``: the events budget, if any."""
        target = budget.key_arl0(self.rate(), test_seconds, floor_events)
        if self.arl0 <= 0 or budget.moved(self.arl0, target):
            self.arl0 = target

    def _feed(
        self, name: str, x: Any, obs: Observation, notable: bool
    ) -> list[tuple[str, Signal, Tracker]]:
        fed = self._ready(name, obs, notable)
        if fed is None:
            return []
        det, tracker, held = fed
        signal = det.update_settled(x) if held else det.update(x)
        return [(name, signal, tracker)] if signal is not None else []

    def _ready(
        self, name: str, obs: Observation, notable: bool
    ) -> tuple[Detector[Any], Tracker, bool] | None:
        """All that feeding ``obs`` to detector ``name`` does before the update itself:
        build it or retarget it to the key's budget, let a segment's detector look at its
        parents' baseline, count ``obs`` in its evidence. Returns the detector, its tracker
        and whether it is held (it takes the update of its settled parts only); None when
        it skips ``obs`` (held while it learns)."""
        det = self.detectors.get(name)
        # A more general key is alarming: do not learn a baseline from it. A detector
        # whose parts have partly learned theirs feeds only those (``update_settled``).
        held = holds(self.hold, name) and (det is None or det.learns)
        if held and (det is None or not det.alarm_ready):
            return None
        if det is None:
            det = FACTORIES[name.partition(":")[0]].make(self, _features(name))
            self.detectors[name] = det
            self._targeted[name] = self.arl0
        elif self._targeted.get(name) != self.arl0:
            arl0 = FACTORIES[name.partition(":")[0]].arl0(self, _features(name))
            if arl0 is not None:
                budget.retarget(det, arl0)
            self._targeted[name] = self.arl0
        tracker = self.trackers.get(name)
        if tracker is None:
            tracker = self.trackers[name] = Tracker()
        if self.parents and not held and (det.learning or tracker.n % PRIOR_FOLLOW_EVERY == 0):
            adopt_parent_prior(det, name, self.parents, self.settings.segment_prior_events)
        tracker.see(obs, notable, self._source)
        return det, tracker, held

    def update(
        self,
        obs: Observation,
        hold: frozenset[str] = frozenset(),
        parents: tuple[DetectorSet, ...] = (),
        share: float = 1.0,
    ) -> list[tuple[str, Signal, Tracker]]:
        """Feed one observation to the detectors it concerns; return (signal, evidence).

        Detectors named in ``hold`` (every input-drift detector, when it holds
        :data:`INPUT_DRIFT_HOLD`) that are still learning their baseline skip it (those
        made of parts, some of which have learned theirs, feed only those parts). A
        segment key's rate detectors still warming up start from the baseline of the
        first of ``parents`` (closest first) that has one (:mod:`streams.pipeline.priors`).
        ``share`` is this key's share of its model's recent traffic (segment drift).
        """
        self.hold = hold
        self.parents = parents
        self.share = share
        self._source = source(obs)
        s = self.settings
        event = obs.event
        out: list[tuple[str, Signal, Tracker]] = []
        if not obs.sampled:
            # Outside its model's sample: a critical output, for the critical test alone
            # (streams.pipeline.sampling; the detect stage feeds it to the model key only).
            if not isinstance(event, InferenceOutput):
                return out
            return self._feed("critical", event.moderation, obs, True)
        drift = self.level in s.drift_levels or self._segment_drift()
        if isinstance(event, Feedback):
            down = is_downvote(event, s)
            out += self._feed("downvote", down, obs, down)
        elif isinstance(event, InferenceOutput):
            scores = event.moderation
            flags = harm_flags(scores, s)
            out += self._feed("harm", flags, obs, any(flags.values()))
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
            out += self._update_quality(event, obs)
        elif isinstance(event, Evaluation):
            out += self._update_evaluation(event, obs)
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

    def _segment_drift(self) -> bool:
        """A segment key with enough traffic also runs drift detectors: a drift confined
        to one locale or tenant is diluted model-wide. Enough = at least
        ``segment_drift_min_share`` of its model's recent traffic (so at most 1 / share
        values per label, and at most one drift key per label for each event: a bounded
        cost) and ``segment_drift_min_events_per_hour``. ``traffic`` decays with a one-hour
        half-life, so its steady state is (events per hour) / ln 2."""
        s = self.settings
        return (
            self.level == "segment"
            and s.segment_drift_min_share > 0
            and self.share >= s.segment_drift_min_share
            and self.traffic * math.log(2) >= s.segment_drift_min_events_per_hour
        )

    def _update_quality(
        self, event: InferenceOutput, obs: Observation
    ) -> list[tuple[str, Signal, Tracker]]:
        """Groundedness (hallucinations), finish reasons, latency and output tokens."""
        out: list[tuple[str, Signal, Tracker]] = []
        if event.groundedness is not None:
            wrong = is_hallucination(event.groundedness, self.settings)
            out += self._feed("hallucination", wrong, obs, wrong)
            out += self._feed("groundedness", event.groundedness, obs, wrong)
        flags = finish_flags(event, self.settings)
        if flags:
            out += self._feed("finish", flags, obs, any(flags.values()))
        if self.level in self.settings.drift_levels:
            # Serving-path signals: a per-segment cut adds little but calibration cost.
            if event.latency_ms is not None:
                out += self._feed("latency", event.latency_ms, obs, False)
            if event.output_tokens is not None:
                out += self._feed("tokens", float(event.output_tokens), obs, False)
        return out

    def _update_evaluation(
        self, event: Evaluation, obs: Observation
    ) -> list[tuple[str, Signal, Tracker]]:
        """One (evaluator, metric)'s score shift, and its fail rate or guardrail block rate.

        At most ``max_evaluation_metrics`` pairs per key are watched (first seen first):
        evaluator and metric names come from producers, and state must stay bounded.
        """
        features = f"{event.evaluator},{event.name}"
        pairs = {
            rest
            for kind, _, rest in map(lambda n: n.partition(":"), self.detectors)
            if kind in _EVAL_KINDS
        }
        if features not in pairs and len(pairs) >= self.settings.max_evaluation_metrics:
            return []
        out: list[tuple[str, Signal, Tracker]] = []
        if event.score is not None:
            out += self._feed("eval_score:" + features, event.score, obs, False)
        block = is_guardrail_block(event)
        if block is not None:
            out += self._feed("guardrail:" + features, block, obs, block)
        fail = is_evaluation_fail(event)
        if fail is not None:
            out += self._feed("eval_fail:" + features, fail, obs, fail)
        return out


_EVAL_KINDS: Final = frozenset({"eval_score", "eval_fail", "guardrail"})
"""Detector kinds keyed by (evaluator, metric): the ``max_evaluation_metrics`` bound."""


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

    def kwargs(self, ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
        """Constructor arguments. ``ds.arl0`` is the ARL0 of ONE test; a detector with
        ``tests`` tests gets ``ds.arl0 / tests`` as its whole ARL0 and splits it over its
        tests itself, so each runs at ``ds.arl0`` (this is the only conversion: before,
        the budget divided by the tests and the detector split again, and harm tests ran
        at 13x their share)."""
        kwargs = self.build(ds, features)
        if "arl0" in kwargs:
            kwargs["arl0"] = kwargs["arl0"] / max(1, self.tests(ds.settings))
        return kwargs

    def arl0(self, ds: DetectorSet, features: tuple[str, ...]) -> float | None:
        """The whole detector's ARL0 at the key's current per-test ARL0 (None: the kind
        has no run length, e.g. single-event pages)."""
        arl0 = self.kwargs(ds, features).get("arl0")
        return None if arl0 is None else float(arl0)

    def make(self, ds: DetectorSet, features: tuple[str, ...]) -> Detector[Any]:
        return self.cls(**self.kwargs(ds, features))

    def rebuild(self, params: Kwargs) -> Detector[Any]:
        return self.cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


def _rate(ds: DetectorSet, _: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    return {"arl0": ds.arl0, "warmup": s.warmup_events, "relative_shift": s.relative_shift}


DESIGN_SHIFTS: Final = (0.5, 1.0, 3.0)
"""Design shifts of a rate's parallel CUSUMs, in units of ``relative_shift``: with the
default doubling, 1.5x, 2x and 4x. Downvote spikes and evaluator fail rates come in
every size from a few tens of percent to several-fold."""

WAVE_SHIFTS: Final = (*DESIGN_SHIFTS, 7.0, 15.0)
"""Rare flags (prompt injections, hallucinations, harm categories: base rates of 0.1-1 %)
also jump 10-30x in a wave, where a design for 4x drifts at little more than half the optimal
rate. The two extra parts cost each part ln(5/3) = 0.5 nats of threshold, a few percent
of delay on a doubling."""


SCORE_DESIGNS: Final = (1.0, 2.0, 4.0)
"""Design shifts of every mean chart's parallel CUSUMs (scores and numeric drift), in units of
``confidence_shift_sd``: with the default 0.5 sd, 0.5, 1 and 2 sd. A confidence drop or
a judge-score drop is often one or two standard deviations, where a chart for half of
one alarms at half the optimal speed; the split costs a few percent at 0.5 sd."""


def _mean_designs(ds: DetectorSet) -> Kwargs:
    """The design of every mean chart: ``confidence_shift_sd`` times :data:`SCORE_DESIGNS`."""
    return {"shift": ds.settings.confidence_shift_sd, "designs": SCORE_DESIGNS}


def _score_chart(ds: DetectorSet) -> Kwargs:
    """A score chart's design (:func:`_mean_designs`) and its reference's growth."""
    return _mean_designs(ds) | {"reference_growth": ds.settings.score_reference_growth}


def relative_shifts(
    settings: DetectionSettings, grid: tuple[float, ...] = DESIGN_SHIFTS
) -> tuple[float, ...]:
    """The design shifts of a rate's parallel CUSUMs: ``grid`` in units of the configured
    ``relative_shift``."""
    return tuple(m * settings.relative_shift for m in grid)


def _adaptive(
    ds: DetectorSet, _: tuple[str, ...], grid: tuple[float, ...] = DESIGN_SHIFTS
) -> Kwargs:
    """Parallel CUSUMs for a grid of design shifts (multiples of ``relative_shift``)."""
    return {
        "arl0": ds.arl0,
        "warmup": ds.settings.warmup_events,
        "relative_shifts": relative_shifts(ds.settings, grid),
    }


def _wave(ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
    """Rare flags: designs up to 16x (:data:`WAVE_SHIFTS`)."""
    return _adaptive(ds, features, WAVE_SHIFTS)


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


def _numeric(ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
    """Numeric input features: the window test and each feature's mean CUSUMs, designed
    as the score charts are (:data:`SCORE_DESIGNS`)."""
    return _window(ds, features) | _mean_designs(ds)


def _embedding(ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
    """Embeddings: the window test, and at ``drift_levels`` (model, version) the distance's
    mean CUSUMs as well (:class:`detectors.drift.EmbeddingDrift`). A segment's drift keeps
    the window test alone: the charts need each embedding's distance as it comes, which
    the window test batches (its CPU cost at every level: docs/validation.md, stop 51)."""
    charts = _mean_designs(ds) if ds.level in ds.settings.drift_levels else {}
    return _window(ds, features) | charts


def _harm(ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    return _wave(ds, features) | {"max_categories": s.max_harm_categories, "pooled": True}


def _finish(ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    return _adaptive(ds, features) | {
        "max_categories": len(s.finish_reason_flags),
        "pooled": False,
    }


def _metric(features: tuple[str, ...]) -> str:
    return "/".join(features)


def _eval_rate(ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
    """Evaluations see ``evaluation_fraction`` of the events, spread over their metrics:
    with each (evaluator, metric)'s ARL0 in its own observations scaled by that fraction,
    all metrics together spend one test's share of the budget per event."""
    s = ds.settings
    return _adaptive(ds, features) | {
        "metric": _metric(features),
        "warmup": s.evaluation_warmup_events,
        "arl0": ds.arl0 * s.evaluation_fraction,
    }


def _eval_score(ds: DetectorSet, features: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    return {
        "metric": _metric(features),
        "arl0": ds.arl0 * s.evaluation_fraction,
        "reference_size": s.evaluation_warmup_events,
    } | _score_chart(ds)


def _score(ds: DetectorSet, _: tuple[str, ...]) -> Kwargs:
    return _confidence(ds, ()) | {"metric": ""}


def _critical(ds: DetectorSet, _: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    return {"categories": s.critical_categories, "cutoff": s.critical_cutoff}


def _confidence(ds: DetectorSet, _: tuple[str, ...]) -> Kwargs:
    s = ds.settings
    return {"arl0": ds.arl0, "reference_size": s.warmup_events} | _score_chart(ds)


def _features(name: str) -> tuple[str, ...]:
    """The features a detector's name gives after its kind (``"numeric:a,b"``)."""
    features = name.partition(":")[2]
    return tuple(features.split(",")) if features else ()


ADDED_PARAMS: Final = frozenset({"reference_growth"})
"""Detector parameters added after states were first saved: a detector saved before one
existed is rebuilt with this release's setting (:meth:`DetectorSet.from_json`)."""


INPUT_DRIFT_HOLD: Final = "input_drift"
"""The entry an input-drift alarm leaves in its key's :attr:`DetectorSet.alarms` (and,
from a model or version key, in its model's): while it lasts, every input-drift detector
of the key (or of the model's keys) that is still learning its reference skips values.
The drift tests of one key read the same inputs, so a drift one of them alarms on is in
the traffic the others would learn from: a young segment's embedding reference that took
a numeric drift's values in read the return to normal as a drift of its own."""


def input_drift(name: str) -> bool:
    """Whether detector ``name`` of a key's set tests input drift."""
    factory = FACTORIES.get(name.partition(":")[0])
    return factory is not None and factory.cls.kind == SignalKind.INPUT_DRIFT


def holds(hold: frozenset[str], name: str) -> bool:
    """Whether ``hold`` (detector names, and :data:`INPUT_DRIFT_HOLD`) holds ``name``."""
    return name in hold or (INPUT_DRIFT_HOLD in hold and input_drift(name))


FACTORIES: Final[dict[str, _Factory]] = {
    "downvote": _Factory("adaptive_downvote_spike", _feedback_rate),
    "injection": _Factory("adaptive_prompt_injection_rate", _wave),
    # one test per moderation category (up to the bound), and the pooled "any category"
    "harm": _Factory("harm_rate", _harm, lambda s: s.max_harm_categories + 1),
    # single-event pages: no run length, no share of the budget
    "critical": _Factory("critical_event", _critical, lambda _: 0),
    # mean up, mean down, distribution
    "confidence": _Factory("confidence_shift", _confidence, lambda _: 3),
    "label_mix": _Factory("label_mix_drift", _window),
    "numeric": _Factory("numeric_drift", _numeric),
    "categorical": _Factory("categorical_drift", _window),
    "embedding": _Factory("embedding_drift", _embedding),
    # groundedness below the cutoff; its distribution (mean down, mean up, shape)
    "hallucination": _Factory("hallucination_rate", _wave),
    "groundedness": _Factory("groundedness_shift", _score, lambda _: 3),
    # per (evaluator, metric), ARL0 scaled by evaluation_fraction (see _eval_rate)
    "eval_score": _Factory("evaluation_score_shift", _eval_score, lambda _: 3),
    "eval_fail": _Factory("evaluation_fail_rate", _eval_rate),
    "guardrail": _Factory("guardrail_block_rate", _eval_rate),
    "finish": _Factory("finish_reason_rate", _finish, lambda s: len(s.finish_reason_flags)),
    "latency": _Factory("latency_shift", _score, lambda _: 3),
    "tokens": _Factory("token_shift", _score, lambda _: 3),
}
"""The routing plan's detector kinds (the prefix of a detector's name in a key's set)."""


def tests_per_level(settings: DetectionSettings) -> int:
    """Alarm-raising tests an observation can feed at one level (the ARL0 budget divisor)."""
    return sum(factory.tests(settings) for factory in FACTORIES.values())


def per_detector_arl0(settings: DetectionSettings) -> float:
    """Per-test ARL0 in events from ``false_alarms_per_million_events`` (the events
    budget), or :data:`budget.MIN_ARL0` when only the weekly budget is set.

    Expected false alarms per million events = sum over levels and tests of
    (observations at that level / ARL0). Every event feeds at most ``2 + len(segment
    labels)`` levels, and :func:`tests_per_level` tests at each, so this ARL0 keeps the
    total within the budget (conservatively: most events feed fewer). It is the floor of
    every key's ARL0 (:meth:`DetectorSet.set_budget`): when both budgets are set, the
    stricter wins.
    """
    per_million = settings.false_alarms_per_million_events
    if not per_million:
        return budget.MIN_ARL0
    levels = 2 + len(settings.segment_labels)
    return max(budget.MIN_ARL0, 1e6 * levels * tests_per_level(settings) / per_million)


def per_test_seconds(settings: DetectionSettings, keys: int, share: float = 1.0) -> float:
    """Per-test ARL0 in seconds of event time with ``keys`` live keys sharing this worker's
    ``share`` of the weekly budget (:func:`budget.seconds_per_test`)."""
    pages = settings.false_pages_per_week
    return budget.seconds_per_test(pages, keys, tests_per_level(settings), share)
