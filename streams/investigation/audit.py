"""``sentinel investigate``: the events behind an incident, its audit trail, its statistic.

An incident pins offset ranges (topic, partition, first/last offset) of the records its
detector saw. Investigation reads those records back, plus a look-back of history before
the evidence window (the detector needs its baseline), and:

* keeps the events of the ranges that carry the incident's labels: the audit trail, each
  with its input joined by request id (model version, system-instruction hash, retrieved
  document ids), scores, and prompt/output excerpts, redacted unless asked otherwise;
* re-runs the pipeline's own join and the detector set of the incident's key
  (:class:`streams.pipeline.detect.DetectorSet`, the same code and settings as the worker) over
  the observations of that key, recording ``statistic / threshold`` after every
  observation, so the statistic's path to the alarm can be plotted and checked.

The recomputation starts from a fresh baseline at the start of the look-back and applies
the operator re-learns (:mod:`alerting.relearn`) requested inside the read range where the
worker applied them; when the look-back covers the key's history (a replay, or a young
key) it reproduces the live alarm exactly, otherwise it approximates it, and the report
says which. The report
itself (text) is :mod:`streams.investigation.report`; the chart,
:mod:`streams.investigation.chart`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from alerting.clock import SYSTEM_CLOCK, Clock
from alerting.model import EventRange, IncidentEvent, Labels, labels_of_key
from alerting.relearn import RelearnBook, RelearnRecord
from detectors.base import Signal, SignalKind
from streams.contract.decode import Coordinates, DeadLetter, decode
from streams.contract.events import (
    AnyEvent,
    Evaluation,
    Feedback,
    InferenceInput,
    InferenceOutput,
)
from streams.detection_settings import DetectionSettings
from streams.investigation.history import event_topics, read_relearns
from streams.investigation.incidents import triggered_at
from streams.investigation.kafka_read import KafkaHistory, Span
from streams.investigation.redact import shown
from streams.pipeline.detectorset import DetectorSet, per_detector_arl0, per_test_seconds
from streams.pipeline.join import Joiner
from streams.pipeline.keys import key_id, key_levels, level_of
from streams.pipeline.observation import Observation, event_time, serves
from streams.pipeline.replay import REPLAY_LIMITS
from streams.pipeline.rules import (
    ANY_TOXIC,
    evaluation_metric,
    finish_flags,
    is_critical,
    is_downvote,
    is_evaluation_fail,
    is_guardrail_block,
    is_hallucination,
    is_injected,
    is_toxic,
)
from streams.pipeline.sampling import reaches
from streams.settings import Settings

DEFAULT_LOOKBACK: Final = timedelta(hours=6)
REPRODUCED_WITHIN: Final = timedelta(seconds=60)


@dataclass(frozen=True)
class AuditEntry:
    """One event behind the incident, as the audit trail shows it."""

    time: datetime
    request_id: str
    event_type: str
    model: str
    version: str
    coords: Coordinates
    flagged: bool
    system_hash: str | None = None
    doc_ids: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    prompt: str | None = None
    output: str | None = None
    user_hash: str | None = None


@dataclass
class StatisticSeries:
    """The recomputed detector statistic, one point per observation of the incident's key.

    ``ratio`` is ``statistic / threshold``: the detector alarms when it reaches 1.0
    (``nan`` while the detector is still learning its baseline). ``alarms`` are indices
    where the recomputed detector fired; ``trigger_index`` the one matching the recorded
    trigger time (``None`` if none did).
    """

    detector: str
    times: list[datetime] = field(default_factory=list)
    statistic: list[float] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)
    alarms: list[int] = field(default_factory=list)
    trigger_index: int | None = None
    recorded_trigger: datetime | None = None
    ready_index: int | None = None
    """First observation at which the detector could alarm (its warm-up over)."""
    relearns: list[tuple[datetime, str]] = field(default_factory=list)
    """Operator re-learns of this detector applied in the recomputation, where the worker
    applied them (the first observation at or after the request): when, and who asked
    why. The statistic starts afresh there, learning a new baseline."""

    @property
    def reproduced(self) -> bool:
        if self.trigger_index is None or self.recorded_trigger is None:
            return False
        return abs(self.times[self.trigger_index] - self.recorded_trigger) <= REPRODUCED_WITHIN


@dataclass
class Investigation:
    incident: IncidentEvent
    events: list[IncidentEvent]
    history_from: datetime
    history_to: datetime
    records_read: int = 0
    evidence: list[AuditEntry] = field(default_factory=list)
    series: StatisticSeries | None = None
    doc_stats: list[tuple[str, int, int]] = field(default_factory=list)
    lookback: timedelta = DEFAULT_LOOKBACK
    from_beginning: bool = False
    """Every partition was read from its first retained record: a longer look-back reads
    nothing more."""

    @property
    def flagged(self) -> int:
        return sum(1 for e in self.evidence if e.flagged)


def _in_ranges(coords: Coordinates, ranges: Sequence[EventRange]) -> bool:
    return any(
        r.topic == coords.topic
        and r.partition == coords.partition
        and r.first_offset <= coords.offset <= r.last_offset
        for r in ranges
    )


def flagged(obs: Observation, signal: Signal, det: DetectionSettings) -> bool:
    """Whether an event is one the detector counts against the baseline (the worker's
    rules, :mod:`streams.pipeline.rules`)."""
    event = obs.event
    kind = signal.kind
    if kind == SignalKind.TOXICITY_RATE and isinstance(event, InferenceOutput):
        return is_toxic(event.moderation, det, signal.feature or ANY_TOXIC)
    if kind == SignalKind.CRITICAL_EVENT and isinstance(event, InferenceOutput):
        return is_critical(event.moderation, det)
    if kind == SignalKind.DOWNVOTE_RATE and isinstance(event, Feedback):
        return is_downvote(event, det)
    if kind == SignalKind.PROMPT_INJECTION_RATE and isinstance(event, InferenceOutput):
        return is_injected(event.prompt_injection, det)
    if kind == SignalKind.HALLUCINATION_RATE and isinstance(event, InferenceOutput):
        return is_hallucination(event.groundedness, det)
    if kind == SignalKind.FINISH_REASON_RATE and isinstance(event, InferenceOutput):
        return bool(finish_flags(event, det).get(signal.feature or "", False))
    if isinstance(event, Evaluation) and evaluation_metric(event) == signal.feature:
        if kind == SignalKind.EVALUATION_FAIL_RATE:
            return bool(is_evaluation_fail(event))
        if kind == SignalKind.GUARDRAIL_BLOCK_RATE:
            return bool(is_guardrail_block(event))
    return False


def _scores(event: AnyEvent) -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(event, InferenceOutput):
        if event.confidence is not None:
            out["confidence"] = event.confidence
        if event.moderation:
            top = max(event.moderation, key=lambda c: event.moderation[c])
            out[top] = event.moderation[top]
        if event.prompt_injection is not None:
            out["prompt_injection"] = event.prompt_injection
        if event.groundedness is not None:
            out["groundedness"] = event.groundedness
    elif isinstance(event, Feedback):
        if event.rating is not None:
            out["rating"] = float(event.rating)
        if event.vote is not None:
            out["downvote"] = 1.0 if event.vote == "down" else 0.0
    return out


class _Recompute:
    """The incident key's detector set, fed the key's observations in stream order."""

    def __init__(
        self,
        settings: DetectionSettings,
        incident: IncidentEvent,
        relearns: Sequence[RelearnRecord] = (),
    ) -> None:
        self.settings = settings
        self.labels = incident.labels
        self.signal = incident.evidence.signal
        self.kid = key_id(self.labels)
        self.book = RelearnBook()
        self.book.schedule(relearns)
        self.relearned: list[tuple[datetime, RelearnRecord, list[str]]] = []
        arl0 = per_detector_arl0(settings)
        self.level = level_of(self.labels)
        self.set = DetectorSet(settings, self.level, arl0)
        # Canary analysis: a deployed version's detectors start from the previous
        # version's baselines, as in the pipeline.
        deploy = incident.deploy
        self.prev_kid: str | None = None
        self.prev: DetectorSet | None = None
        if self.level == "version" and deploy is not None and deploy.previous_version:
            self.prev_kid = key_id(Labels(model=self.labels.model, version=deploy.previous_version))
            self.prev = DetectorSet(settings, "version", arl0)
        self.started = False
        self.points: dict[str, StatisticSeries] = {}
        self.floor = arl0
        self.keys: set[str] = set()
        """Keys seen in the fetched history: the live keys the worker's weekly budget is
        shared by (:meth:`streams.pipeline.live_sets.LiveSets.budget_seconds`), approximately."""

    def _budget(self, ds: DetectorSet, obs: Observation) -> None:
        """The key's run length as the worker derives it: its traffic rate in event time
        and its share of the weekly false-page budget."""
        ds.see_traffic(event_time(obs.event), serves(obs.event))
        ds.set_budget(per_test_seconds(self.settings, len(self.keys)), self.floor)

    def _follow(self, ds: DetectorSet, kid: str, obs: Observation) -> None:
        """The operator re-learns covering ``kid`` due by now, as the worker applies them."""
        for rec, names in ds.follow_relearns(self.book, labels_of_key(kid)):
            if names and kid == self.kid:
                self.relearned.append((obs.event.timestamp, rec, names))

    def feed(self, obs: Observation) -> None:
        t = event_time(obs.event)
        self.book.release(t)
        if not reaches(obs, self.level):
            return  # as the worker: outside its model's sample, for the model key alone
        kids = {kid for _, _, kid in key_levels(obs, self.settings)}
        self.keys |= kids
        if self.prev is not None and self.prev_kid in kids and not self.started:
            self._follow(self.prev, self.prev_kid or "", obs)
            self._budget(self.prev, obs)
            self.prev.update(obs)
        if self.kid not in kids:
            return
        if not self.started and self.prev is not None and self.prev.detectors:
            self.set = self.prev.canary_copy()
        self.started = True
        self._follow(self.set, self.kid, obs)
        self._budget(self.set, obs)
        before = {name: tr.n for name, tr in self.set.trackers.items()}
        fired = {name: sig for name, sig, _ in self.set.update(obs)}
        for name, det in self.set.detectors.items():
            if type(det).__name__ != self.signal.detector or det.kind != self.signal.kind:
                continue
            if self.set.trackers[name].n == before.get(name, 0):
                continue  # this observation did not feed it
            series = self.points.setdefault(name, StatisticSeries(detector=name))
            sig = fired.get(name)
            stat, thr = (sig.statistic, sig.threshold) if sig else (det.statistic, det.threshold)
            ready = det.alarm_ready
            ratio = stat / thr if thr and math.isfinite(thr) and ready else math.nan
            if ready and series.ready_index is None:
                series.ready_index = len(series.times)
            if sig is not None:
                ratio = sig.statistic / sig.threshold if sig.threshold else math.inf
                series.alarms.append(len(series.times))
            series.times.append(obs.event.timestamp)
            series.statistic.append(stat)
            series.threshold.append(thr)
            series.ratio.append(ratio)

    def result(self, recorded: datetime) -> StatisticSeries | None:
        best: StatisticSeries | None = None
        best_gap = math.inf
        for series in self.points.values():
            series.recorded_trigger = recorded
            for i in series.alarms:
                gap = abs((series.times[i] - recorded).total_seconds())
                if gap < best_gap:
                    best, best_gap = series, gap
                    series.trigger_index = i
        if best is None and self.points:
            best = max(self.points.values(), key=lambda s: len(s.times))
        if best is not None:
            best.relearns = [
                (at, f"re-learned ({rec.requested_by}: {rec.reason})")
                for at, rec, names in self.relearned
                if best.detector in names
            ]
        return best


def investigate(
    settings: Settings,
    events: Sequence[IncidentEvent],
    history: KafkaHistory,
    *,
    lookback: timedelta = DEFAULT_LOOKBACK,
    show_text: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> Investigation:
    """Fetch and analyse the records behind an incident (``events``: its lifecycle steps)."""
    if not events:
        raise ValueError("an incident needs at least one event")
    latest = events[-1]
    ranges = [r for ev in events for r in ev.evidence.ranges]
    starts = [ev.evidence.window_start or ev.first_seen for ev in events]
    t0 = min(starts) - lookback
    t1 = max(ev.evidence.window_end for ev in events) + timedelta(milliseconds=1)
    t = settings.topics
    topics = [*dict.fromkeys([*(r.topic for r in ranges), t.inputs, t.outputs])]
    spans, from_beginning = _spans(history, topics, ranges, t0, t1)
    inv = Investigation(latest, list(events), t0, t1, lookback=lookback)
    inv.from_beginning = from_beginning
    relearns = read_relearns(settings, t0, t1)
    inputs, matched = _read(settings, history, spans, ranges, inv, clock, relearns)
    _audit_trail(inv, inputs, matched, settings.detection, show_text=show_text)
    return inv


_InputFacts = tuple[str | None, tuple[str, ...], str | None]
"""What an input event tells about its request: system-instruction hash, retrieved
document ids, prompt."""


def _spans(
    history: KafkaHistory,
    topics: Sequence[str],
    ranges: Sequence[EventRange],
    t0: datetime,
    t1: datetime,
) -> tuple[list[Span], bool]:
    """The offset spans to read (the time window, widened to the evidence ranges), and
    whether they start at the beginning of their partitions (the whole key history)."""
    spans = []
    beginning = {
        (sp.topic, sp.partition): sp.start for sp in history.spans_between(topics, None, t1)
    }
    for span in history.spans_between(topics, t0, t1):
        start, stop = span.start, span.stop
        for r in ranges:
            if (r.topic, r.partition) == (span.topic, span.partition):
                start, stop = min(start, r.first_offset), max(stop, r.last_offset + 1)
        spans.append(Span(span.topic, span.partition, start, stop))
    from_beginning = bool(spans) and all(
        sp.start <= beginning.get((sp.topic, sp.partition), 0) for sp in spans
    )
    return spans, from_beginning


def _read(
    settings: Settings,
    history: KafkaHistory,
    spans: Sequence[Span],
    ranges: Sequence[EventRange],
    inv: Investigation,
    clock: Clock,
    relearns: Sequence[RelearnRecord] = (),
) -> tuple[dict[str, _InputFacts], list[Observation]]:
    """Read ``spans`` through the pipeline's join, recompute the incident's detector over
    its key (``inv.series``, with the operator ``relearns`` of the range), and return the
    inputs' facts by request id and the observations of the evidence ranges that carry the
    incident's labels."""
    det = settings.detection
    latest = inv.incident
    kinds = event_topics(settings)
    joiner = Joiner(det, {})
    recompute = _Recompute(det, latest, relearns)
    inputs: dict[str, _InputFacts] = {}
    matched: list[Observation] = []
    now = clock.now()
    for rec in history.read(spans):
        inv.records_read += 1
        coords = Coordinates(rec.topic, rec.partition, rec.offset)
        event = decode(
            rec.value,
            coords,
            now=now,
            limits=REPLAY_LIMITS,
            default_type=kinds.get(rec.topic),
            key=rec.key,
        )
        if isinstance(event, DeadLetter):
            continue
        if isinstance(event, InferenceInput):
            inputs[event.request_id] = (
                event.system_instructions_hash,
                tuple(event.retrieved_doc_ids),
                event.prompt,
            )
        for obs in joiner.process(event, coords):
            recompute.feed(obs)
            # Outside its model's sample, a critical output is evidence of its own page
            # only: a rate's evidence is the sample.
            evidence = obs.sampled or latest.evidence.signal.kind is SignalKind.CRITICAL_EVENT
            if (
                evidence
                and _in_ranges(obs.coords, ranges)
                and latest.labels.covers(
                    Labels(model=obs.model, version=obs.version, segment=obs.segment)
                )
            ):
                matched.append(obs)
    inv.series = recompute.result(triggered_at(inv.events))
    return inputs, matched


def _audit_trail(
    inv: Investigation,
    inputs: dict[str, _InputFacts],
    matched: Sequence[Observation],
    det: DetectionSettings,
    *,
    show_text: bool,
) -> None:
    """Fill ``inv.evidence`` (one entry per matched observation) and ``inv.doc_stats``
    (the retrieved documents most often behind flagged events)."""
    signal = inv.incident.evidence.signal
    outputs_text: dict[str, str | None] = {}
    for obs in matched:
        if isinstance(obs.event, InferenceOutput):
            outputs_text[obs.event.request_id] = obs.event.output_text
    flagged_docs: Counter[str] = Counter()
    all_docs: Counter[str] = Counter()
    for obs in matched:
        rid = obs.event.request_id
        sys_hash, docs, prompt = inputs.get(rid, (None, (), None))
        is_flagged = flagged(obs, signal, det)
        inv.evidence.append(
            AuditEntry(
                time=obs.event.timestamp,
                request_id=rid,
                event_type=obs.event.event_type,
                model=obs.model,
                version=obs.version,
                coords=obs.coords,
                flagged=is_flagged,
                system_hash=sys_hash,
                doc_ids=docs,
                scores=_scores(obs.event),
                prompt=shown(prompt, show_text=show_text),
                output=shown(outputs_text.get(rid), show_text=show_text),
                user_hash=obs.event.user_hash,
            )
        )
        all_docs.update(set(docs))
        if is_flagged:
            flagged_docs.update(set(docs))
    inv.doc_stats = sorted(
        ((d, flagged_docs[d], all_docs[d]) for d in flagged_docs),
        key=lambda x: (-x[1], x[0]),
    )[:10]
