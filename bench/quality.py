"""End-to-end detection quality: simulated failures replayed through the offline pipeline.

Run ``python bench/quality.py`` (full: 30 injected scenarios + >= 1M clean events) or
``--quick`` (12 injected scenarios + ~200k clean events); ``--only KIND,...`` runs some
kinds. Replay runs at roughly 550-650 events per CPU-second with every detector on, so
the quick run is about 2 hours of one core (docs/validation.md). ``--seed N`` shifts every
scenario seed. ``--sample F`` detects on that fraction of every model's requests
(``detection.sample_fractions``): the capacity valve's cost at the scenarios' traffic.
Results go to stdout (tables), stderr (one progress line per finished scenario) and
``bench/out/quality.json``.

Scenarios. One failure per scenario, from :mod:`streams.devtools.simulate` at its default traffic
(3600 requests/h with a daily cycle, ~2.3 events per request). Every injection type runs
with several scopes (model-wide and single segments: tenant, feature, locale, on different
models); per scenario the start is uniform in [6 h, 12 h] of event time (every key has
learnt its baselines by then), the duration is 3 h and the strength is the simulator
default x uniform [0.8, 1.25]. Clean scenarios (no injection) measure false incidents.
The ``small`` family (rows ``small:<type>``, ``--only small``) puts one failure of each of
five types at the smallest of forty tenants (~250 requests and ~50 feedback events a day),
starting 12-30 h in while that tenant is young and lasting a day.

Definitions:

* Trigger: an :class:`alerting.model.IncidentEvent` with action ``trigger`` (a reopened,
  flapping incident triggers again and counts again: it pages again). Its detection time is
  its ``emitted_at`` (in replay, the event time at which it went out, after any muting).
* A trigger *matches* an injection when (1) its incident type starts with one of the
  prefixes accepted for the injection type (:data:`ACCEPTED`; for ``bad_deploy``: any
  incident on the new version, any incident with the ``bad_deploy`` playbook, or a type
  the ground truth lists among the injection's signals), (2) its labels are consistent
  with the injection scope (same model; a version, if any, equal to the affected one;
  no segment label contradicting the scope; a different segment label of the same model
  is accepted since that cut overlaps the scope), and (3) its detection time lies in
  [start, end + grace], grace = 30 min.
* Recall: injections with at least one matching trigger / injections.
* Precision: matching triggers / all triggers of the injected scenarios of that type
  (triggers before the injection, after the window, of another type, e.g. downvotes
  caused by a toxicity spike, or in a contradicting scope all count against it; the
  unmatched ones are listed with the reason).
* False/M: triggers per million events of the clean scenarios (events = JSONL lines:
  inputs, outputs, feedback, evaluations). Per row, clean triggers whose type that row
  accepts; the ``all`` row counts every clean trigger.
* Delay: first matching detection time - injection start, in event-time minutes and in
  events of the affected key (outputs, i.e. requests, in the injection scope between the
  start and the detection). Medians over detected injections.
* Pages/inj: matching triggers per injection (1 is ideal: more means flapping or the
  same failure paged at several keys).
* Resolve: when the last of an injection's matched incidents resolved (every one of them
  resolved and none reopened after), minus the injection's end, in event-time minutes.
  Each scenario runs :data:`AFTER_END` past the end so that this can be seen; an incident
  still open then counts as open at the end. A resolve emitted while the injection still
  lasted is counted apart: the page stream told on-call the cause was over when it was not.

Goals: recall >= 0.95 per type and < 1 false incident per million clean events.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

J = TypeVar("J")
R = TypeVar("R")

# Run as a script, ``bench/`` is first on sys.path and bench/detectors.py would shadow the
# ``detectors`` package; put the repository root there instead.
_HERE = Path(__file__).resolve().parent
ROOT: Final = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(ROOT))
# BLAS threads only contend for the 2 cores with the worker processes.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from alerting.model import IncidentAction, IncidentEvent, Labels, Severity  # noqa: E402
from bench.oracle import (  # noqa: E402
    GOAL_DELAY_RATIO,
    MIN_BEFORE,
    Probe,
    oracle_arl0,
    oracle_kinds,
)
from detectors.coverage import POOLED  # noqa: E402
from detectors.rate import EPISODE_CAP_NATS  # noqa: E402
from streams.devtools.scenario import DEFAULT_STRENGTH, Injection, Scenario  # noqa: E402
from streams.devtools.sim_events import GUARDRAIL  # noqa: E402
from streams.devtools.simulate import Simulator  # noqa: E402
from streams.pipeline.detectorset import DetectorSet, per_detector_arl0  # noqa: E402
from streams.pipeline.keys import key_id  # noqa: E402
from streams.pipeline.replay import Pipeline, replay_lines  # noqa: E402
from streams.settings import Settings, load_settings  # noqa: E402

GOAL_RECALL: Final = 0.95
GOAL_FALSE_PER_M: Final = 1.0
GRACE: Final = timedelta(minutes=30)
INJECTION_TYPES: Final = tuple(DEFAULT_STRENGTH)
TYPE_W: Final = 27
"""Width of the tables' type column (``small:prompt_injection_wave``)."""
ACCEPTED: Final[dict[str, tuple[str, ...]]] = {
    "toxicity_spike": ("toxicity_rate",),
    "downvote_spike": ("downvote_rate",),
    "confidence_drop": ("confidence_shift",),
    "input_drift": ("input_drift",),
    "prompt_injection_wave": ("prompt_injection_rate",),
    "bad_deploy": (),  # see accepts(): new version, bad_deploy playbook, listed signals
    "hallucination_wave": ("hallucination_rate", "evaluation_score", "evaluation_fail_rate"),
    "judge_score_drop": ("evaluation_score", "evaluation_fail_rate"),
    # the guardrail blocks on its score: a shift of that score is the same change
    "guardrail_block_spike": ("guardrail_block_rate", f"evaluation_score:{'/'.join(GUARDRAIL)}"),
    "harm_spike": ("toxicity_rate",),  # the injected category or pooled, see type_accepted
    "traffic_stop": ("traffic_silence",),
    "output_stop": ("traffic_silence",),
}
"""Incident-type prefixes that count as detecting each injection type."""
SIGNAL_PREFIX: Final[dict[str, str]] = {"confidence": "confidence_shift"}
"""Ground-truth signal names that differ from the incident type they should raise."""
BAD_DEPLOY_PLAYBOOK: Final = "bad_deploy"

SCOPES: Final[tuple[dict[str, str], ...]] = (
    {"model": "support-chat"},
    {"model": "support-chat", "tenant": "acme"},
    {"model": "intent-classifier"},
    {"model": "summarizer", "feature": "search"},
    {"model": "support-chat", "locale": "de-DE"},
)
"""Scope of the i-th seed of every type (model-wide and single-segment, several models)."""
LLM_SCOPES: Final[tuple[dict[str, str], ...]] = (
    {"model": "support-chat"},
    {"model": "support-chat", "tenant": "acme"},
    {"model": "summarizer"},
    {"model": "summarizer", "feature": "search"},
    {"model": "support-chat", "locale": "de-DE"},
)
"""Scopes of failures only LLM outputs have (groundedness, judges, guardrails)."""
LLM_ONLY: Final = frozenset({"hallucination_wave", "judge_score_drop", "guardrail_block_spike"})
MODEL_SCOPES: Final[tuple[dict[str, str], ...]] = (
    {"model": "support-chat"},
    {"model": "summarizer"},
    {"model": "intent-classifier"},
)
"""Scopes of a model's traffic stopping (a silence is judged per model)."""
MODEL_ONLY: Final = frozenset({"traffic_stop", "output_stop"})
HARM_CATEGORIES: Final = ("self_harm", "sexual", "violence", "hate", "harassment")
"""One harm_spike per category (quick: the first three; ``--per-type`` beyond five cycles
through them again); toxicity has toxicity_spike."""
INJECTION_DURATION: Final = timedelta(hours=3)
START_RANGE_H: Final = (6.0, 12.0)
STRENGTH_RANGE: Final = (0.8, 1.25)
AFTER_END: Final = timedelta(hours=3)
"""Event time each injected scenario runs past its injection's end: the matching grace and
time for the incidents to resolve (a rate incident at one tenant takes up to ~2 h to see
its cause ended, docs/validation.md "Stop 40")."""
OUT: Final = _HERE / "out" / "quality.json"


# ---------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Injected:
    """One injection of the ground truth, as the scorer needs it."""

    id: str
    type: str
    start: datetime
    end: datetime
    scope: Mapping[str, str]
    signals: tuple[str, ...] = ()
    new_version: str | None = None
    strength: float | None = None
    category: str | None = None

    @classmethod
    def from_ground_truth(cls, entry: Mapping[str, Any]) -> Injected:
        return cls(
            id=str(entry["id"]),
            type=str(entry["type"]),
            start=_parse_time(entry["start"]),
            end=_parse_time(entry["end"]),
            scope=dict(entry.get("scope", {})),
            signals=tuple(entry.get("signals", ())),
            new_version=entry.get("new_version"),
            strength=entry.get("strength"),
            category=entry.get("category"),
        )


@dataclass(frozen=True)
class Trigger:
    """One ``trigger`` incident event, reduced to what matching needs."""

    incident_type: str
    model: str
    at: datetime
    version: str | None = None
    segment: Mapping[str, str] = field(default_factory=dict)
    playbook: str | None = None
    note: str = ""
    severity: str = "SEV2"
    incident_id: str = ""

    @classmethod
    def from_event(cls, ev: IncidentEvent) -> Trigger:
        return cls(
            incident_type=ev.incident_type,
            model=ev.labels.model,
            at=ev.emitted_at,
            version=ev.labels.version,
            segment=dict(ev.labels.segment),
            playbook=ev.playbook.name if ev.playbook else None,
            note=ev.note,
            severity=ev.severity.value,
            incident_id=ev.incident_id,
        )

    @property
    def reopened(self) -> bool:
        return self.note.startswith("reopened")

    @property
    def pages(self) -> bool:
        """A SEV1-2 trigger pages; a reopening pages again whatever its severity."""
        return self.severity in ("SEV1", "SEV2") or self.reopened

    def to_json(self) -> dict[str, Any]:
        return {
            "incident_type": self.incident_type,
            "model": self.model,
            "at": _fmt_time(self.at),
            "version": self.version,
            "segment": dict(self.segment),
            "playbook": self.playbook,
            "note": self.note,
            "severity": self.severity,
            "incident_id": self.incident_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trigger:
        return cls(
            incident_type=data["incident_type"],
            model=data["model"],
            at=_parse_time(data["at"]),
            version=data.get("version"),
            segment=dict(data.get("segment") or {}),
            playbook=data.get("playbook"),
            note=data.get("note", ""),
            severity=data.get("severity", "SEV2"),
            incident_id=data.get("incident_id", ""),
        )

    @property
    def incident_key(self) -> str:
        """Its incident's id (older result files without one: type and time)."""
        return self.incident_id or f"{self.incident_type}@{_fmt_time(self.at)}"

    @property
    def level(self) -> str:
        if self.segment:
            return "segment"
        return "version" if self.version is not None else "model"


def type_accepted(inj: Injected, trig: Trigger) -> bool:
    """Does the trigger's incident type (or deploy context) signal this injection?"""
    if inj.type == "bad_deploy":
        if inj.new_version is not None and trig.version == inj.new_version:
            return True
        if trig.playbook == BAD_DEPLOY_PLAYBOOK:
            return True
        prefixes = tuple(SIGNAL_PREFIX.get(s, s) for s in inj.signals)
        return bool(prefixes) and trig.incident_type.startswith(prefixes)
    if inj.type == "harm_spike" and inj.category is not None:
        return trig.incident_type in (f"toxicity_rate:{inj.category}", "toxicity_rate:any")
    return trig.incident_type.startswith(ACCEPTED[inj.type])


def labels_consistent(inj: Injected, trig: Trigger) -> bool:
    """Same model; version and segment labels not contradicting the scope."""
    if "model" in inj.scope and trig.model != inj.scope["model"]:
        return False
    affected_version = inj.new_version if inj.type == "bad_deploy" else inj.scope.get("version")
    if trig.version is not None and affected_version not in (None, trig.version):
        return False
    return all(inj.scope.get(k, v) == v for k, v in trig.segment.items())


def exact_scope(inj: Injected, trig: Trigger) -> bool:
    """Are the trigger's labels the injection's scope (localization accuracy)?"""
    if trig.model != inj.scope.get("model", trig.model):
        return False
    if inj.type == "bad_deploy":
        return trig.version == inj.new_version and not trig.segment
    segment = {k: v for k, v in inj.scope.items() if k not in ("model", "version")}
    return trig.version == inj.scope.get("version") and dict(trig.segment) == segment


def in_window(inj: Injected, at: datetime, grace: timedelta = GRACE) -> bool:
    return inj.start <= at <= inj.end + grace


def matches(inj: Injected, trig: Trigger, grace: timedelta = GRACE) -> bool:
    return (
        type_accepted(inj, trig) and labels_consistent(inj, trig) and in_window(inj, trig.at, grace)
    )


def unmatched_reason(injections: Sequence[Injected], trig: Trigger, grace: timedelta) -> str:
    """Why a trigger matched no injection of its scenario (for the diagnosis)."""
    if not injections:
        return "clean scenario"
    if all(trig.at < inj.start for inj in injections):
        return "before injection"
    if all(trig.at > inj.end + grace for inj in injections):
        return "after window"
    for inj in injections:
        if in_window(inj, trig.at, grace) and labels_consistent(inj, trig):
            return "other type in scope"
    return "outside scope"


MODEL_NEEDLE: Final = '"gen_ai.request.model":"'


def model_of(line: str) -> str | None:
    """The model a simulated line names (None: it names none)."""
    i = line.find(MODEL_NEEDLE)
    if i < 0:
        return None
    i += len(MODEL_NEEDLE)
    return line[i : line.find('"', i)]


@dataclass
class UntouchedTraffic:
    """Clean traffic inside the injected scenarios: the models no injection touched.

    An injection changes one model's traffic (its scope always names the model); the
    scenario's other models run clean beside it, through the same pipeline and budget, for
    several times the events of the clean scenarios. A trigger on one of them is a false
    incident as much as one in a clean scenario.
    """

    events: int = 0
    triggers: list[Trigger] = field(default_factory=list)

    @property
    def pages(self) -> int:
        """Triggers that page (SEV1-2, or a reopening): false pages."""
        return sum(t.pages for t in self.triggers)

    @property
    def per_million(self) -> float | None:
        return 1e6 * len(self.triggers) / self.events if self.events else None

    def add(
        self,
        injections: Sequence[Injected],
        model_events: Mapping[str, int],
        triggers: Sequence[Trigger],
    ) -> None:
        """One injected scenario: its events per model and its triggers. Lines that name
        no model (feedback that names only its response, ``""``) are left out of the
        events: the rate comes out slightly high, never low."""
        touched = {inj.scope.get("model") for inj in injections}
        self.events += sum(n for m, n in model_events.items() if m and m not in touched)
        self.triggers += [t for t in triggers if t.model not in touched]

    def describe(self) -> str:
        """One line per (type, model, severity), with counts."""
        counts = Counter(f"{t.incident_type} on {t.model} {t.severity}" for t in self.triggers)
        return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


@dataclass
class InjectionScore:
    """How one injection was detected (or not)."""

    injection: Injected
    detected_at: datetime | None = None
    first: Trigger | None = None
    matching_triggers: int = 0
    delay_events: int | None = None
    pages: int = 0
    incident_ids: set[str] = field(default_factory=set)
    reopened_during: int = 0
    resolved_at: datetime | None = None
    """When the last of its matched incidents resolved; None while any is open."""
    resolved_during: int = 0
    """Resolves of its matched incidents emitted while the injection lasted."""
    raised_after_end: int = 0
    """Updates that raised one of its incidents to SEV1-2 after the injection ended: a
    page about a cause already over (an escalation at a playbook deadline that its
    detectors could not yet read as past)."""
    recoverable: bool | None = None
    """The recovery oracle reads the change as over within the observations after its end
    (``bench.oracle.Probe``); None where there is no oracle."""

    @property
    def resolve_minutes(self) -> float | None:
        """Event-time minutes from the injection's end to its last incident's resolve
        (negative: every incident resolved before the cause ended)."""
        if self.resolved_at is None:
            return None
        return (self.resolved_at - self.injection.end).total_seconds() / 60.0

    @property
    def open_at_end(self) -> bool:
        """Detected, and an incident of it was still open when the scenario ended."""
        return self.detected and self.resolved_at is None

    @property
    def open_recoverable(self) -> bool:
        """Open at the end, though the recovery oracle read the change as over in time
        (or there is no oracle to say that no test could)."""
        return self.open_at_end and self.recoverable is not False

    @property
    def incidents(self) -> int:
        return len(self.incident_ids)

    def localized(self) -> bool:
        """The first matching trigger names the injected scope exactly (for a bad deploy:
        the new version, no segment)."""
        return self.first is not None and exact_scope(self.injection, self.first)

    @property
    def detected(self) -> bool:
        return self.detected_at is not None

    @property
    def delay_minutes(self) -> float | None:
        if self.detected_at is None:
            return None
        return (self.detected_at - self.injection.start).total_seconds() / 60.0

    def first_level(self) -> str:
        """Where it was first caught: model, version, segment (exact scope) or another
        segment cut of the same model."""
        if self.first is None:
            return "-"
        if not self.first.segment:
            return self.first.level
        scope_seg = {k: v for k, v in self.injection.scope.items() if k not in ("model", "version")}
        return "segment" if dict(self.first.segment) == scope_seg else "other-segment"


@dataclass
class ScenarioScore:
    injections: list[InjectionScore]
    matched: list[bool]  # per trigger
    reasons: list[str]  # per trigger; "" when matched


def score_scenario(
    injections: Sequence[Injected],
    triggers: Sequence[Trigger],
    grace: timedelta = GRACE,
    scope_times: Sequence[float] | None = None,
    resolves: Sequence[tuple[str, datetime]] = (),
    raises: Sequence[tuple[str, datetime]] = (),
) -> ScenarioScore:
    """Match triggers to injections. ``scope_times`` (sorted epoch seconds of the outputs
    in scope, for a single-injection scenario) gives the delay in events; ``resolves``
    (incident id, emitted at) when each injection's incidents resolved."""
    scores = [InjectionScore(inj) for inj in injections]
    matched: list[bool] = []
    reasons: list[str] = []
    for trig in sorted(triggers, key=lambda t: t.at):
        hit = False
        for sc in scores:
            if matches(sc.injection, trig, grace):
                hit = True
                sc.matching_triggers += 1
                sc.pages += trig.pages
                sc.incident_ids.add(trig.incident_key)
                if trig.reopened and sc.injection.start <= trig.at <= sc.injection.end:
                    sc.reopened_during += 1
                if sc.detected_at is None or trig.at < sc.detected_at:
                    sc.detected_at, sc.first = trig.at, trig
        matched.append(hit)
        reasons.append("" if hit else unmatched_reason(injections, trig, grace))
    _score_resolves(scores, triggers, resolves)
    for sc in scores:
        sc.raised_after_end = sum(
            key in sc.incident_ids and at >= sc.injection.end for key, at in raises
        )
    detected_at = scores[0].detected_at if len(scores) == 1 else None
    if scope_times is not None and detected_at is not None:
        times = np.asarray(scope_times, dtype=np.float64)
        lo = np.searchsorted(times, scores[0].injection.start.timestamp(), side="left")
        hi = np.searchsorted(times, detected_at.timestamp(), side="right")
        scores[0].delay_events = int(hi - lo)
    return ScenarioScore(scores, matched, reasons)


def _score_resolves(
    scores: Sequence[InjectionScore],
    triggers: Sequence[Trigger],
    resolves: Sequence[tuple[str, datetime]],
) -> None:
    """Each injection's resolve time: the last resolve of its incidents, if every one of
    them resolved after its last trigger (a reopening, matched or not, opens it again)."""
    last_trigger: dict[str, datetime] = {}
    for trig in triggers:
        key = trig.incident_key
        last_trigger[key] = max(trig.at, last_trigger.get(key, trig.at))
    last_resolve: dict[str, datetime] = {}
    for key, at in resolves:
        last_resolve[key] = max(at, last_resolve.get(key, at))
    for sc in scores:
        ends = [last_resolve.get(key) for key in sc.incident_ids]
        if ends and all(
            end is not None and end >= last_trigger.get(key, end)
            for key, end in zip(sc.incident_ids, ends, strict=True)
        ):
            sc.resolved_at = max(end for end in ends if end is not None)
        sc.resolved_during = sum(
            key in sc.incident_ids and sc.injection.start <= at < sc.injection.end
            for key, at in resolves
        )


@dataclass
class TypeRow:
    """One line of the summary table."""

    type: str
    injections: int = 0
    detected: int = 0
    triggers: int = 0
    matched: int = 0
    clean_triggers: int = 0
    clean_events: int = 0
    delays_min: list[float] = field(default_factory=list)
    delays_events: list[int] = field(default_factory=list)
    unmatched: Counter[str] = field(default_factory=Counter)
    pages: int = 0
    incidents: int = 0
    localized: int = 0
    reopened_during: int = 0
    resolves_min: list[float] = field(default_factory=list)
    open_at_end: int = 0
    open_recoverable: int = 0
    resolved_during: int = 0
    raised_after_end: int = 0

    @property
    def median_resolve_min(self) -> float | None:
        return statistics.median(self.resolves_min) if self.resolves_min else None

    @property
    def recall(self) -> float | None:
        return self.detected / self.injections if self.injections else None

    @property
    def precision(self) -> float | None:
        return self.matched / self.triggers if self.triggers else None

    @property
    def false_per_million(self) -> float | None:
        return 1e6 * self.clean_triggers / self.clean_events if self.clean_events else None

    @property
    def triggers_per_injection(self) -> float | None:
        return self.matched / self.injections if self.injections else None

    @property
    def pages_per_injection(self) -> float | None:
        return self.pages / self.injections if self.injections else None

    @property
    def incidents_per_injection(self) -> float | None:
        return self.incidents / self.injections if self.injections else None

    @property
    def localization(self) -> float | None:
        return self.localized / self.detected if self.detected else None

    @property
    def median_delay_min(self) -> float | None:
        return statistics.median(self.delays_min) if self.delays_min else None

    @property
    def median_delay_events(self) -> float | None:
        return statistics.median(self.delays_events) if self.delays_events else None

    def recall_ok(self) -> bool:
        return self.recall is not None and self.recall >= GOAL_RECALL

    def false_ok(self) -> bool:
        fpm = self.false_per_million
        return fpm is not None and fpm < GOAL_FALSE_PER_M


def clean_row_of(incident_type: str) -> str | None:
    """The injection-type row a clean trigger of this incident type is charged to."""
    for kind, prefixes in ACCEPTED.items():
        if prefixes and incident_type.startswith(prefixes):
            return kind
    return None


def summarize(
    scored: Sequence[tuple[str, ScenarioScore, Sequence[Trigger]]],
    clean_triggers: Sequence[Trigger],
    clean_events: int,
) -> dict[str, TypeRow]:
    """Per injection type rows plus ``all``. ``scored``: (type, score, triggers) per
    injected scenario."""
    rows = {t: TypeRow(t) for t in INJECTION_TYPES}
    for kind, _, _ in scored:
        rows.setdefault(kind, TypeRow(kind))
    rows["all"] = TypeRow("all")
    for kind, sc, triggers in scored:
        for row in (rows[kind], rows["all"]):
            row.triggers += len(sc.matched)
            row.matched += sum(sc.matched)
            for trig, ok, why in zip(
                sorted(triggers, key=lambda t: t.at), sc.matched, sc.reasons, strict=True
            ):
                if not ok:
                    late = " (mute lifted)" if trig.note == "mute lifted" else ""
                    row.unmatched[f"{why}: {trig.incident_type}{late}"] += 1
            for inj in sc.injections:
                row.injections += 1
                row.pages += inj.pages
                row.incidents += inj.incidents
                row.reopened_during += inj.reopened_during
                row.resolved_during += inj.resolved_during
                row.open_at_end += inj.open_at_end
                row.open_recoverable += inj.open_recoverable
                row.raised_after_end += inj.raised_after_end
                if inj.resolve_minutes is not None:
                    row.resolves_min.append(inj.resolve_minutes)
                row.localized += inj.localized()
                if inj.detected:
                    row.detected += 1
                    row.delays_min.append(inj.delay_minutes or 0.0)
                    if inj.delay_events is not None:
                        row.delays_events.append(inj.delay_events)
    for row in rows.values():
        row.clean_events = clean_events
    for trig in clean_triggers:
        rows["all"].clean_triggers += 1
        row_name = clean_row_of(trig.incident_type)
        if row_name is not None:
            rows[row_name].clean_triggers += 1
    return rows


# ------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Job:
    """One scenario to simulate and replay (picklable)."""

    name: str
    kind: str  # injection type or "clean"
    scenario: dict[str, Any]
    scope: dict[str, str]
    estimate: float  # expected events, for scheduling longest first
    sample: float = 1.0  # --sample: the fraction of every model's requests detected
    family: str = ""  # a scenario family with rows of its own (SMALL_SEGMENT), else ""

    @property
    def row(self) -> str:
        """The summary row its results count in: the kind, prefixed by its family."""
        return f"{self.family}:{self.kind}" if self.family else self.kind

    @property
    def group(self) -> str:
        """What ``--only`` selects it by: its family, else its kind."""
        return self.family or self.kind


def in_pool(
    run: Callable[[J], R], jobs: Sequence[J], processes: int, describe: Callable[[R], str]
) -> list[R]:
    """``run`` over ``jobs`` in ``processes`` forked processes, the results as they finish,
    with one progress line each on stderr (``describe``, then the time elapsed)."""
    began = time.perf_counter()
    results: list[R] = []
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for k, res in enumerate(pool.imap_unordered(run, jobs), start=1):
            results.append(res)
            print(
                f"[{k:>2}/{len(jobs)}] {describe(res)} "
                f"({time.perf_counter() - began:.0f} s elapsed)",
                file=sys.stderr,
                flush=True,
            )
    return results


def select_jobs(jobs: Sequence[Job], only: set[str], sample: float = 1.0) -> list[Job]:
    """The jobs of the ``only`` kinds (all when empty) and the clean ones, each detected on
    ``sample`` of its models' requests, longest first (they run in a process pool)."""
    return sorted(
        (
            dataclasses.replace(j, sample=sample)
            for j in jobs
            if not only or j.group in {"clean", *only}
        ),
        key=lambda j: -j.estimate,
    )


def _settings(sample: float = 1.0, models: Sequence[str] = ()) -> Settings:
    """The shipped config; with ``sample`` < 1, ``models`` sampled at it
    (``detection.sample_fractions``)."""
    fractions = dict.fromkeys(models, sample) if sample < 1.0 else {}
    return load_settings(
        env={},
        overrides={
            "detection.alerting_policy": str(ROOT / "config" / "alerting.toml"),
            "detection.playbooks_dir": str(ROOT / "config" / "playbooks"),
            "detection.sample_fractions": fractions,
        },
    )


EVENTS_PER_HOUR_EST: Final = 3600.0 * 2.28


def build_jobs(quick: bool, base_seed: int, per_type: int | None = None) -> list[Job]:
    seeds_per_type = per_type or (2 if quick else len(SCOPES))
    clean_runs, clean_days = (1, 1) if quick else (3, 2)
    jobs: list[Job] = []
    for j in range(clean_runs):
        seed = base_seed * 1000 + 900 + j
        sc = Scenario(seed=seed, duration=timedelta(days=clean_days))
        jobs.append(
            Job(
                name=f"clean seed={seed} {clean_days}d",
                kind="clean",
                scenario=sc.model_dump(mode="json"),
                scope={},
                estimate=24 * clean_days * EVENTS_PER_HOUR_EST,
            )
        )
    for ti, kind in enumerate(INJECTION_TYPES):
        runs = seeds_per_type
        if kind == "harm_spike" and per_type is None:
            runs = 3 if quick else len(HARM_CATEGORIES)
        for i in range(runs):
            seed = base_seed * 1000 + ti * 100 + i
            rng = np.random.default_rng([seed, 7])
            start = timedelta(minutes=round(60 * rng.uniform(*START_RANGE_H)))
            strength = round(DEFAULT_STRENGTH[kind] * rng.uniform(*STRENGTH_RANGE), 4)
            scopes = (
                LLM_SCOPES if kind in LLM_ONLY else MODEL_SCOPES if kind in MODEL_ONLY else SCOPES
            )
            scope = dict(scopes[i % len(scopes)])
            extra = (
                {"category": HARM_CATEGORIES[i % len(HARM_CATEGORIES)]}
                if kind == "harm_spike"
                else {}
            )
            inj = Injection.model_validate(
                {
                    "type": kind,
                    "start": start,
                    "duration": INJECTION_DURATION,
                    "strength": strength,
                    "scope": scope,
                    **extra,
                }
            )
            duration = start + INJECTION_DURATION + AFTER_END
            sc = Scenario(seed=seed, duration=duration, injections=[inj])
            where = ",".join(f"{k}={v}" for k, v in {**scope, **extra}.items())
            jobs.append(
                Job(
                    name=f"{kind} seed={seed} {where}",
                    kind=kind,
                    scenario=sc.model_dump(mode="json"),
                    scope=scope,
                    estimate=duration.total_seconds() / 3600 * EVENTS_PER_HOUR_EST,
                )
            )
    return jobs


CAUSE_SCENARIOS: Final[dict[str, tuple[tuple[str, dict[str, str]], ...]]] = {
    # One tenant's failure that also shows through its locale cut and model-wide.
    "tenant_cascade": (("toxicity_spike", {"model": "support-chat", "tenant": "acme"}),),
    # Two unrelated failures on one model at once: two incidents, each at its own scope.
    "two_failures": (
        ("toxicity_spike", {"model": "support-chat", "tenant": "acme"}),
        ("confidence_drop", {"model": "support-chat", "tenant": "globex"}),
    ),
}
"""Scenarios of the one-cause-one-page goals (issue 12), beyond one injection per type."""


def build_cause_jobs(quick: bool, base_seed: int) -> list[Job]:
    """The grouping scenarios: one seed each (quick), three (full)."""
    jobs: list[Job] = []
    for si, (kind, parts) in enumerate(CAUSE_SCENARIOS.items()):
        for i in range(1 if quick else 3):
            seed = base_seed * 1000 + 700 + 10 * si + i
            rng = np.random.default_rng([seed, 7])
            start = timedelta(minutes=round(60 * rng.uniform(*START_RANGE_H)))
            injections = [
                Injection(
                    type=t,  # type: ignore[arg-type]
                    start=start,
                    duration=INJECTION_DURATION,
                    strength=round(DEFAULT_STRENGTH[t] * rng.uniform(*STRENGTH_RANGE), 4),
                    scope=scope,
                )
                for t, scope in parts
            ]
            duration = start + INJECTION_DURATION + AFTER_END
            sc = Scenario(seed=seed, duration=duration, injections=injections)
            jobs.append(
                Job(
                    name=f"{kind} seed={seed}",
                    kind=kind,
                    scenario=sc.model_dump(mode="json"),
                    # delays in events are measured for single-injection scenarios only
                    scope=dict(parts[0][1]) if len(parts) == 1 else {},
                    estimate=duration.total_seconds() / 3600 * EVENTS_PER_HOUR_EST,
                )
            )
    return jobs


SMALL_SEGMENT: Final = "small"
"""The family of failures at a small tenant (issue 13's "a spike in a small segment"); its
rows are ``small:<type>`` and ``--only small`` runs it."""
SMALL_TENANTS: Final = (
    *Scenario.model_fields["tenants"].default,
    *(f"t{i:02d}" for i in range(6, 41)),
)
"""A long tail of tenants: by the simulator's Zipf shares the last, ``t40``, gets 0.58 % of
the requests, about 250 of support-chat's a day and 50 feedback events."""
SMALL_SEGMENT_SCOPE: Final = {"model": "support-chat", "tenant": SMALL_TENANTS[-1]}
SMALL_SEGMENT_TYPES: Final = (
    "toxicity_spike",
    "downvote_spike",
    "confidence_drop",
    "prompt_injection_wave",
    "hallucination_wave",
)
"""What fails at the small tenant, one scenario each (quick: the first three)."""
SMALL_SEGMENT_DURATION: Final = timedelta(hours=24)
"""A small tenant's failure lasts a day: at ~10 requests an hour no detector, the oracle
included, tells a 3-hour rate spike from chance at the service's budget."""
SMALL_SEGMENT_START_H: Final = (12.0, 30.0)
"""The injection starts while the tenant is young (~125-300 requests seen): its rate tests
still lean on the parent's prior, its score charts on the parent's shape."""


def build_small_segment_jobs(quick: bool, base_seed: int) -> list[Job]:
    """One failure of each :data:`SMALL_SEGMENT_TYPES` at the smallest of forty tenants."""
    jobs: list[Job] = []
    types = SMALL_SEGMENT_TYPES[:3] if quick else SMALL_SEGMENT_TYPES
    for kind in types:
        seed = base_seed * 1000 + 600 + INJECTION_TYPES.index(kind)
        rng = np.random.default_rng([seed, 7])
        start = timedelta(minutes=round(60 * rng.uniform(*SMALL_SEGMENT_START_H)))
        strength = round(DEFAULT_STRENGTH[kind] * rng.uniform(*STRENGTH_RANGE), 4)
        inj = Injection.model_validate(
            {
                "type": kind,
                "start": start,
                "duration": SMALL_SEGMENT_DURATION,
                "strength": strength,
                "scope": SMALL_SEGMENT_SCOPE,
            }
        )
        duration = start + SMALL_SEGMENT_DURATION + AFTER_END
        sc = Scenario(seed=seed, duration=duration, tenants=list(SMALL_TENANTS), injections=[inj])
        where = ",".join(f"{k}={v}" for k, v in SMALL_SEGMENT_SCOPE.items())
        jobs.append(
            Job(
                name=f"{SMALL_SEGMENT} {kind} seed={seed} {where}",
                kind=kind,
                scenario=sc.model_dump(mode="json"),
                scope=dict(SMALL_SEGMENT_SCOPE),
                estimate=duration.total_seconds() / 3600 * EVENTS_PER_HOUR_EST,
                family=SMALL_SEGMENT,
            )
        )
    return jobs


def _scope_needles(scope: Mapping[str, str]) -> list[str]:
    out = []
    for k, v in scope.items():
        if k == "model":
            out.append(f'{MODEL_NEEDLE}{v}"')
        elif k == "version":
            out.append(f'"model_version":"{v}"')
        else:
            out.append(f'"{k}":"{v}"')
    return out


WATCHED_BY: Final[Mapping[str, tuple[str, ...]]] = {
    "toxicity_spike": ("harm",),
    "harm_spike": ("harm",),
    "prompt_injection_wave": ("injection",),
    "downvote_spike": ("downvote",),
    "hallucination_wave": ("hallucination", "groundedness"),
    "guardrail_block_spike": ("guardrail",),
    "confidence_drop": ("confidence",),
    "judge_score_drop": ("eval_score",),
    "input_drift": ("numeric", "categorical", "embedding"),
}
"""The detector kinds (``streams.pipeline.detectorset.FACTORIES``) that watch each
injection type at its scope's key."""


def readiness(ds: DetectorSet | None, kind: str, category: str | None) -> str:
    """Whether the scope key's detectors of an injection type could alarm when it began:
    ``ready`` (one of them has its baseline), ``learning`` (they exist, none has),
    ``absent`` (none built yet: the key or that data had not been seen) or ``n/a`` (a
    type no single detector kind watches). A harm test is judged by its category's part,
    a toxicity spike by the pooled test (what the oracle watches). Young keys are where
    the misses are (docs/validation.md, "Stop 29")."""
    kinds = WATCHED_BY.get(kind)
    if kinds is None:
        return "n/a"
    part = {"harm_spike": category, "toxicity_spike": POOLED}.get(kind)
    dets = [
        d
        for name, d in (ds.detectors.items() if ds is not None else ())
        if name.split(":")[0] in kinds
    ]
    if not dets:
        return "absent"
    for det in dets:
        if part is not None:
            if det.excess(part) is not None:
                return "ready"
        elif not det.learning or getattr(det, "alarm_ready", False):
            return "ready"
    return "learning"


def run_job(job: Job) -> dict[str, Any]:
    """Simulate and replay one scenario; return triggers, ground truth and scope times."""
    began, cpu = time.perf_counter(), time.process_time()
    scenario = Scenario.model_validate(job.scenario)
    sim = Simulator(scenario)
    needles = _scope_needles(job.scope) if job.kind != "clean" else []
    scope_ts: list[str] = []
    settings = _settings(job.sample, [m.name for m in scenario.models])
    category = scenario.injections[0].harm_category if scenario.injections else None
    probe = Probe(job.kind, category, settings.detection)
    truth = sim.ground_truth()["injections"]
    pipeline = Pipeline(settings)
    # The scope key's per-test ARL0 when the injection starts: the budget the oracle gets.
    scope_key = key_id(_scope_labels(job.scope)) if job.scope else None
    start = None
    if len(truth) == 1:
        start = _parse_time(truth[0]["start"]).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23]
    key_arl0: list[float | None] = [None]
    at_start: list[str] = ["n/a"]
    model_events: Counter[str] = Counter()

    def feed() -> Iterator[bytes]:
        for line in sim.lines():
            model_events[model_of(line) or ""] += 1
            is_output = line.startswith('{"event_type":"output"')
            in_scope = bool(needles) and all(n in line for n in needles)
            if in_scope and is_output:
                i = line.index('"timestamp":"') + 13
                scope_ts.append(line[i : i + 23])  # drop the "Z": numpy wants naive
                if start and scope_key and key_arl0[0] is None and scope_ts[-1] >= start:
                    key_arl0[0] = pipeline.detect.live_sets.key_arl0(scope_key)
                    live = pipeline.detect.live_sets.live.get(scope_key)
                    at_start[0] = readiness(live, job.kind, category)
            if needles:
                probe.feed(line, in_scope)
            yield line.encode()

    result = replay_lines(feed(), settings, pipeline=pipeline)
    times = np.sort(np.array(scope_ts, dtype="datetime64[ms]").astype(np.int64) / 1000.0)
    triggers = [Trigger.from_event(e) for e in result.incidents if e.action == "trigger"]
    resolves = [
        [e.incident_id, _fmt_time(e.emitted_at)] for e in result.incidents if e.action == "resolve"
    ]
    return {
        "raises": paging_raises(result.incidents),
        "name": job.name,
        "kind": job.kind,
        "row": job.row,
        "scenario_start": job.scenario["start"],
        "events": result.events,
        "dead_letters": result.dead_letters,
        "incident_events": len(result.incidents),
        "triggers": [t.to_json() for t in triggers],
        "resolves": resolves,
        "truth": truth,
        "scope_times": times.tolist(),
        "model_events": dict(model_events),
        "seconds": time.perf_counter() - began,
        "cpu_seconds": time.process_time() - cpu,
        "oracle": _oracle(job.kind, probe, truth, settings, key_arl0[0]),
        "at_start": at_start[0],
    }


def paging_raises(events: Sequence[IncidentEvent]) -> list[list[str]]:
    """(incident id, emitted at) of each update that raised an open incident's severity
    to SEV1-2 (an escalation at its playbook's deadline, or stronger evidence): a page
    like a trigger's."""
    last: dict[str, Severity] = {}
    out: list[list[str]] = []
    for e in events:
        before = last.get(e.incident_id)
        last[e.incident_id] = e.severity
        raised = before is not None and e.severity.rank < min(before.rank, 3)
        if e.action == IncidentAction.UPDATE and raised:
            out.append([e.incident_id, _fmt_time(e.emitted_at)])
    return out


def _scope_labels(scope: Mapping[str, str]) -> Labels:
    """The detector key labels of an injection scope (model, version or one segment cut)."""
    segment = {k: v for k, v in scope.items() if k not in ("model", "version")}
    return Labels(model=scope["model"], version=scope.get("version"), segment=segment)


def _oracle(
    kind: str,
    probe: Probe,
    truth: Sequence[Mapping[str, Any]],
    settings: Settings,
    key_arl0: float | None,
) -> dict[str, Any] | None:
    """The oracle CUSUM's expected delay for the scenario's one injection (see bench/oracle.py),
    at the per-test ARL0 the scope's key ran at when the injection started (the events
    budget's floor if the key was not live then)."""
    if kind not in oracle_kinds() or len(truth) != 1:
        return None
    per_test = key_arl0 if key_arl0 is not None else per_detector_arl0(settings.detection)
    arl0 = oracle_arl0(kind, settings.detection, per_test)
    start = _parse_time(truth[0]["start"]).timestamp()
    end = _parse_time(truth[0]["end"]).timestamp()
    return probe.result(start, end, arl0)


# -------------------------------------------------------------------------- reporting
def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _fmt_time(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _f(x: float | None, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


LEGEND: Final = """\
legend: recall = injections with a matching trigger / injections; precision = matching
  triggers / all triggers in that type's injected scenarios; false/M = triggers per 1M
  events of the clean scenarios (row: clean triggers of the types that row accepts);
  delay = first matching trigger (emitted_at) - injection start, median, in events
  (requests in the injection scope) and event-time minutes; trig/inj = matching
  triggers per injection (any severity). A trigger matches when its type fits the
  injection type, its labels do not contradict the scope (same model) and it is emitted
  in [start, end + 30 min]."""


def print_details(
    scores: Sequence[tuple[str, ScenarioScore, Sequence[Trigger], dict[str, Any]]],
) -> None:
    print(
        "Per injection (start: hours after the scenario began; delay in event time;"
        " level = key of the first matching trigger):"
    )
    header = (
        f"{'type':<{TYPE_W}} {'scope':<32} {'strength':>8} {'start':>6} {'detected':>8} "
        f"{'level':<13} {'delay [min]':>11} {'delay [events]':>14} {'trig match/all':>14} "
        f"{'at start':<8}"
    )
    print(header)
    print("-" * len(header))
    for kind, sc, _, r in scores:
        for inj in sc.injections:
            i = inj.injection
            scope = ",".join(f"{k}={v}" for k, v in i.scope.items())
            start_h = (i.start - _parse_time(r["scenario_start"])).total_seconds() / 3600
            print(
                f"{kind:<{TYPE_W}} {scope:<32} {_f(i.strength, '8.3g')} {start_h:5.1f}h "
                f"{'yes' if inj.detected else 'NO':>8} {inj.first_level():<13} "
                f"{_f(inj.delay_minutes, '11.1f')} {_f(inj.delay_events, '14d'):>14} "
                f"{sum(sc.matched):>6}/{len(sc.matched):<7} {r.get('at_start', 'n/a'):<8}"
            )
    print(
        "at start: the scope key's detectors of that type when the injection began (ready:\n"
        "  one had its baseline; learning: none had; absent: none built yet)\n"
    )


def print_table(rows: Mapping[str, TypeRow], clean_events: int) -> None:
    header = (
        f"{'injection type':<{TYPE_W}} {'n':>3} {'recall':>6} {'goal>=0.95':>10} {'precision':>9} "
        f"{'false/M clean':>13} {'goal<1/M':>8} {'delay med [events]':>18} "
        f"{'delay med [min]':>15} {'trig/inj':>9}"
    )
    print(
        f"Summary ({clean_events:,} clean events; goals: recall >= {GOAL_RECALL}, "
        f"< {GOAL_FALSE_PER_M:g} false incident per 1M clean events):"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        if not row.injections and name != "all":
            continue  # a type left out with --only
        if name == "all":
            print("-" * len(header))
        print(
            f"{name:<{TYPE_W}} {row.injections:>3} {_f(row.recall, '6.2f')} "
            f"{'PASS' if row.recall_ok() else 'MISS':>10} {_f(row.precision, '9.2f')} "
            f"{_f(row.false_per_million, '13.2f')} {'PASS' if row.false_ok() else 'MISS':>8} "
            f"{_f(row.median_delay_events, '18.0f')} {_f(row.median_delay_min, '15.1f')} "
            f"{_f(row.triggers_per_injection, '9.2f')}"
        )
    print(LEGEND)


GOAL_PAGES: Final = 1.1
GOAL_LOCALIZATION: Final = 0.9
PAGING_LEGEND: Final = """\
legend: pages/inj = matching SEV1-2 triggers and reopenings (any severity) per injection;
  incidents/inj = distinct incident ids among the matching triggers per injection;
  localized = detected injections whose first matching trigger is labelled with the
  injected scope exactly (bad deploy: the new version, no segment) / detected injections;
  reopen@inj = reopenings emitted while the injection lasted (goal 0)."""


def _ruled_rows(rows: Mapping[str, TypeRow], header: str) -> Iterator[tuple[str, TypeRow]]:
    """Print ``header`` and its rule; yield the rows of types that ran, with a rule above
    the ``all`` row."""
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        if not row.injections:
            continue
        if name == "all":
            print("-" * len(header))
        yield name, row


def print_paging_table(rows: Mapping[str, TypeRow]) -> None:
    """One cause, one page: pages, incidents, localization and reopenings per type."""
    header = (
        f"{'injection type':<{TYPE_W}} {'n':>3} {'pages/inj':>9} {'goal<=1.1':>9} "
        f"{'incidents/inj':>13} {'localized':>9} {'goal>=0.9':>9} {'reopen@inj':>10}"
    )
    print(
        f"Paging (goals: <= {GOAL_PAGES} pages per injection, localization >= "
        f"{GOAL_LOCALIZATION}, 0 reopenings while an injection lasts):"
    )
    for name, row in _ruled_rows(rows, header):
        ppi, loc = row.pages_per_injection, row.localization
        print(
            f"{name:<{TYPE_W}} {row.injections:>3} {_f(ppi, '9.2f')} "
            f"{'PASS' if ppi is not None and ppi <= GOAL_PAGES else 'MISS':>9} "
            f"{_f(row.incidents_per_injection, '13.2f')} {_f(loc, '9.2f')} "
            f"{'PASS' if loc is not None and loc >= GOAL_LOCALIZATION else 'MISS':>9} "
            f"{row.reopened_during:>10d}"
        )
    print(PAGING_LEGEND)


LIFECYCLE_LEGEND: Final = """\
legend: resolved = detected injections whose incidents all resolved (none reopened after)
  before the scenario ended, {after:g} h after the injection; resolve = that last resolve -
  the injection's end, event-time minutes (median and max over those); open = detected
  injections with an incident still open at the scenario's end; recov = of those, the ones
  the recovery oracle read as over in time (an exact test knowing the change, reading its
  end at the pipeline's recovery evidence, {nats:g} nats, on the scope's observations
  after the end; an injection without an oracle counts here; goal 0); resolved@inj =
  resolves of its incidents emitted while the injection lasted (the page stream said the
  cause was over while it was not; goal 0); raised@end = updates raising one of its
  incidents to SEV1-2 after the injection ended (a page about a cause already over,
  e.g. an escalation at the playbook's deadline; goal 0)."""


GOAL_RESOLVE_MIN: Final = 90.0
"""Median minutes from an injection's end to its incidents' last resolve, the playbooks'
quiet periods (45 minutes for most) included: the page stream says a cause is over within
about 45 minutes of the detectors reading it so."""


def lifecycle_pass(row: TypeRow) -> bool:
    """The lifecycle goals of one row: every detected injection's incidents resolved before
    the scenario ended where the recovery oracle could read the change as over by then,
    none while the injection lasted, none raised to a page after it, median within
    :data:`GOAL_RESOLVE_MIN`."""
    med = row.median_resolve_min
    return (
        row.open_recoverable == 0
        and row.resolved_during == 0
        and row.raised_after_end == 0
        and (med is None or med <= GOAL_RESOLVE_MIN)
    )


def print_lifecycle_table(rows: Mapping[str, TypeRow]) -> None:
    """When the incidents of each injection resolved, measured from the injection's end."""
    header = (
        f"{'injection type':<{TYPE_W}} {'detected':>8} {'resolved':>8} {'open':>5} "
        f"{'recov':>5} {'resolve med [min]':>17} {'max [min]':>9} {'resolved@inj':>12} "
        f"{'raised@end':>10} {'goals':>5}"
    )
    print(
        f"Lifecycle (goals: 0 open {AFTER_END.total_seconds() / 3600:g} h after the cause "
        f"ends, median resolve <= {GOAL_RESOLVE_MIN:g} min after it, 0 resolves during it, "
        "0 raised to a page after it):"
    )
    for name, row in _ruled_rows(rows, header):
        worst = max(row.resolves_min) if row.resolves_min else None
        print(
            f"{name:<{TYPE_W}} {row.detected:>8} {len(row.resolves_min):>8} {row.open_at_end:>5} "
            f"{row.open_recoverable:>5} {_f(row.median_resolve_min, '17.1f')} {_f(worst, '9.1f')} "
            f"{row.resolved_during:>12d} {row.raised_after_end:>10d} "
            f"{'PASS' if lifecycle_pass(row) else 'MISS':>5}"
        )
    print(LIFECYCLE_LEGEND.format(after=AFTER_END.total_seconds() / 3600, nats=EPISODE_CAP_NATS))


def print_untouched(untouched: UntouchedTraffic) -> None:
    """The false incidents on the injected scenarios' untouched models (see
    :class:`UntouchedTraffic`), beside the clean scenarios' figure in the summary."""
    rate = untouched.per_million
    print(
        f"\nClean traffic of the models no injection touched, in the injected scenarios: "
        f"{untouched.events:,} events, {len(untouched.triggers)} false incidents "
        f"({_f(rate, '.2f')} per 1M events; goal < {GOAL_FALSE_PER_M:g}), "
        f"{untouched.pages} of them pages"
    )
    if untouched.triggers:
        print(f"  {untouched.describe()}")


def print_open_at_end(
    scores: Sequence[tuple[str, ScenarioScore, Sequence[Trigger], dict[str, Any]]],
) -> None:
    """Each injection whose incident was still open at the end, beside the recovery
    oracle: whether any test could have read its change as over in the time left."""
    rows = [
        (kind, inj, (r.get("oracle") or {}).get("recovery") or {})
        for kind, sc, _, r in scores
        for inj in sc.injections
        if inj.open_at_end
    ]
    if not rows:
        return
    print("Open at the end, beside the recovery oracle:")
    for kind, inj, rec in rows:
        where = ",".join(f"{k}={v}" for k, v in inj.injection.scope.items())
        if rec.get("events") is not None:
            verdict = "in time" if rec["recoverable"] else "not in time either"
            oracle = (
                f"oracle reads it over after {rec['events']:,.0f} observations, "
                f"{_f(rec['minutes'], '.0f')} min ({verdict}: {rec['events_after']:,} came "
                "after the end)"
            )
        elif "recoverable" in rec:
            oracle = "no measurable change: the oracle never reads it over"
        else:
            oracle = "no oracle"
        print(f"  {kind} {where}: {oracle}")


ROOM = 0.5
"""Injections the oracle catches within this share of the window's events are the ones a
detector that estimates its baseline (at up to 1/ROOM times the oracle's delay) can
catch; the recall over them is printed beside the recall over all catchable ones."""


def print_oracle(
    scores: Sequence[tuple[str, ScenarioScore, Sequence[Trigger], dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """Measured delays beside the oracle's (an exact CUSUM that knows the change, at the
    ARL0 of one test of the pipeline); recall over oracle-catchable injections. Returns
    the per-type figures for the JSON output."""
    print("Oracle (exact CUSUM knowing p0 -> p1 or the mean shift, at the same per-test ARL0):")
    header = (
        f"{'type':<{TYPE_W}} {'scope':<40} {'change':<17} {'ARL0 [events]':>13} "
        f"{'oracle [events]':>15} "
        f"{'oracle [min]':>12} {'realized [min]':>14} {'measured [min]':>14} {'ratio':>6} "
        f"{'realized ratio':>14}"
    )
    print(header)
    print("-" * len(header))
    per_type: dict[str, dict[str, Any]] = {}
    by_start: dict[bool, list[bool]] = {True: [], False: []}  # ready at start -> detected
    with_room: list[bool] = []  # detected, of those the oracle catches in half the window
    for kind, sc, _, r in scores:
        orc = r.get("oracle")
        if not orc:
            continue
        inj = sc.injections[0]
        where = ",".join(f"{k}={v}" for k, v in inj.injection.scope.items())
        if inj.injection.category:
            where += f" [{inj.injection.category}]"
        if orc.get("delay_events") is None:
            print(
                f"{kind:<{TYPE_W}} {where:<40} {'n/a':<17} {_f(orc['arl0'], '13.3g')} "
                f"(no oracle: under {MIN_BEFORE} observations before the change, "
                f"{orc['window_events']} in the window)"
            )
            continue
        row = per_type.setdefault(
            kind,
            {
                "catchable": 0,
                "detected": 0,
                "ratios": [],
                "oracle_min": [],
                "realized_catchable": 0,
                "realized_detected": 0,
                "realized_ratios": [],
            },
        )
        change = (
            f"{orc['p0']:.4f}->{orc['p1']:.4f}"
            if "p0" in orc
            else f"{orc.get('shift_sd', 0.0):.2f} sd"
        )
        ratio = None
        if orc.get("catchable"):
            by_start[r.get("at_start") == "ready"].append(inj.detected)
            if orc["delay_events"] <= ROOM * orc["window_events"]:
                with_room.append(inj.detected)
            row["catchable"] += 1
            row["oracle_min"].append(orc["delay_minutes"])
            if inj.detected and orc["delay_minutes"]:
                row["detected"] += 1
                ratio = (inj.delay_minutes or 0.0) / orc["delay_minutes"]
                row["ratios"].append(ratio)
        realized_ratio = None
        if orc.get("realized_events") is not None:
            row["realized_catchable"] += 1
            if inj.detected:
                row["realized_detected"] += 1
                if orc.get("realized_minutes"):
                    realized_ratio = (inj.delay_minutes or 0.0) / orc["realized_minutes"]
                    row["realized_ratios"].append(realized_ratio)
        print(
            f"{kind:<{TYPE_W}} {where:<40} {change:<17} {_f(orc['arl0'], '13.3g')} "
            f"{_f(orc['delay_events'], '15.0f')} "
            f"{_f(orc.get('delay_minutes'), '12.1f')} {_f(orc.get('realized_minutes'), '14.1f')} "
            f"{_f(inj.delay_minutes, '14.1f')} {_f(ratio, '6.2f')} {_f(realized_ratio, '14.2f')}"
            f"{'' if orc.get('catchable') else '  (oracle misses)'}"
        )
    print()
    header = (
        f"{'type':<{TYPE_W}} {'oracle-catchable':>16} {'recall':>6} {'goal>=0.95':>10} "
        f"{'delay/oracle median':>19} {'max':>6} {'goal<=1.3':>9} | {'realized-catchable':>18} "
        f"{'recall':>6} {'goal>=0.95':>10} {'delay/realized median':>21} {'goal<=1.3':>9}"
    )
    print(header)
    print("-" * len(header))
    total: dict[str, Any] = {key: [] if key.endswith("ratios") else 0 for key in _ORACLE_COUNTS}
    for kind, row in per_type.items():
        _print_oracle_row(kind, row)
        for key in _ORACLE_COUNTS:
            total[key] += row[key]
    print("-" * len(header))
    _print_oracle_row("all", total)
    per_type["all"] = total
    print(
        "oracle: expected delay of the CUSUM designed for the true change (measured in the\n"
        "  scope's events) at the ARL0 one test of that detector had at the scope's key when\n"
        "  the injection began (ARL0, in that test's observations); 'oracle misses' =\n"
        "  its expected delay exceeds the events of the injection's window (3 h; small: a\n"
        "  day). Minutes = event time of the window's observation at the oracle's delay\n"
        "  (its own traffic, so a daily cycle weighs both alike). ratio = measured delay /\n"
        "  oracle delay, in minutes.\n"
        "  Feedback and evaluations arrive minutes after their output: the oracle gets them\n"
        "  in that order, designed for the changed requests' rate or mean (the change column)\n"
        "  and reading the late observations of earlier requests at the old one.\n"
        "realized: the same CUSUM run on the window's own observations, in arrival order\n"
        "  from the injection's start: the delay it achieved on the data the pipeline saw\n"
        "  (n/a: it did not alarm within the window). realized-catchable = it alarmed."
    )
    for ready, label in ((True, "ready"), (False, "learning or absent")):
        found = by_start[ready]
        print(
            f"oracle-catchable, scope key's detector {label} at the start: "
            f"{sum(found)} of {len(found)} detected"
        )
    print(
        f"oracle-catchable in {ROOM:.0%} of the window's events (room for a detector that "
        f"must learn what the oracle is told): {sum(with_room)} of {len(with_room)} detected"
    )
    print()
    return per_type


_ORACLE_COUNTS: Final = (
    "catchable",
    "detected",
    "ratios",
    "realized_catchable",
    "realized_detected",
    "realized_ratios",
)
"""The per-type oracle figures that add up to the ``all`` row."""


def _print_oracle_row(kind: str, row: dict[str, Any]) -> None:
    """One type's recall and delay ratios against the expected and the realised oracle
    (adds them to ``row``)."""

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    n, n_real = row["catchable"], row["realized_catchable"]
    recall = row["detected"] / n if n else None
    real_recall = row["realized_detected"] / n_real if n_real else None
    med = statistics.median(row["ratios"]) if row["ratios"] else None
    worst = max(row["ratios"]) if row["ratios"] else None
    real_ratios = row["realized_ratios"]
    real_med = statistics.median(real_ratios) if real_ratios else None
    row |= {
        "recall": recall,
        "median_ratio": med,
        "max_ratio": worst,
        "realized_recall": real_recall,
        "median_realized_ratio": real_med,
    }
    print(
        f"{kind:<{TYPE_W}} {n:>16} {_f(recall, '6.2f')} "
        f"{verdict(recall is not None and recall >= GOAL_RECALL):>10} "
        f"{_f(med, '19.2f')} {_f(worst, '6.2f')} "
        f"{verdict(med is not None and med <= GOAL_DELAY_RATIO):>9} | {n_real:>18} "
        f"{_f(real_recall, '6.2f')} "
        f"{verdict(real_recall is not None and real_recall >= GOAL_RECALL):>10} "
        f"{_f(real_med, '21.2f')} "
        f"{verdict(real_med is not None and real_med <= GOAL_DELAY_RATIO):>9}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The run, phase by phase in the order its report prints (long on purpose: one
    straight script reads better than helpers that each print a piece)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer seeds, ~200k clean events")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out", type=Path, default=OUT, help="JSON results file")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated injection types, cause scenarios (tenant_cascade, "
        f"two_failures) or {SMALL_SEGMENT} (failures at a small tenant) to run, with the "
        "clean scenarios; default all",
    )
    parser.add_argument(
        "--per-type", type=int, default=None, help="injections per type (default 2 quick, 5 full)"
    )
    parser.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="detect on this fraction of every model's requests (detection.sample_fractions; "
        "default 1: all): what the capacity valve costs at the scenarios' traffic",
    )
    args = parser.parse_args(argv)
    only = {t for t in args.only.split(",") if t}
    if unknown := only - {*INJECTION_TYPES, *CAUSE_SCENARIOS, SMALL_SEGMENT}:
        parser.error(f"--only: unknown type(s) or scenario(s) {sorted(unknown)}")
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if not 0.0 < args.sample <= 1.0:
        parser.error("--sample must be in (0, 1]")

    all_jobs = [
        *build_jobs(args.quick, args.seed, args.per_type),
        *build_cause_jobs(args.quick, args.seed),
        *build_small_segment_jobs(args.quick, args.seed),
    ]
    jobs = select_jobs(all_jobs, only, args.sample)
    began = time.perf_counter()
    results = in_pool(
        run_job,
        jobs,
        args.jobs,
        lambda res: (
            f"{res['name']}: {res['events']:,} events, {len(res['triggers'])} triggers, "
            f"{res['seconds']:.1f} s "
            f"({res['events'] / max(res['cpu_seconds'], 1e-9):,.0f} events/CPU-s)"
        ),
    )
    order = {j.name: i for i, j in enumerate(all_jobs)}
    results.sort(key=lambda r: order[r["name"]])

    clean = [r for r in results if r["kind"] == "clean"]
    clean_events = sum(r["events"] for r in clean)
    clean_triggers = [Trigger.from_json(t) for r in clean for t in r["triggers"]]
    scored: list[tuple[str, ScenarioScore, Sequence[Trigger], dict[str, Any]]] = []
    untouched = UntouchedTraffic()
    for r in results:
        if r["kind"] == "clean":
            continue
        injections = [Injected.from_ground_truth(e) for e in r["truth"]]
        triggers = [Trigger.from_json(t) for t in r["triggers"]]
        untouched.add(injections, r["model_events"], triggers)
        resolves = [(key, _parse_time(at)) for key, at in r.get("resolves", [])]
        raises = [(key, _parse_time(at)) for key, at in r.get("raises", [])]
        sc = score_scenario(injections, triggers, GRACE, r["scope_times"], resolves, raises)
        recovery = (r.get("oracle") or {}).get("recovery") or {}
        if len(sc.injections) == 1 and "recoverable" in recovery:
            sc.injections[0].recoverable = bool(recovery["recoverable"])
        scored.append((r["row"], sc, triggers, r))
    rows = summarize([(k, s, t) for k, s, t, _ in scored], clean_triggers, clean_events)

    print()
    print_details(scored)
    print_table(rows, clean_events)
    print()
    print_paging_table(rows)
    print()
    print_lifecycle_table(rows)
    print_open_at_end(scored)
    print()
    oracle_rows = print_oracle(scored)
    unmatched = [(n, row.unmatched) for n, row in rows.items() if n != "all" and row.unmatched]
    if unmatched or clean_triggers:
        print("\nUnmatched triggers in injected scenarios (reason: incident type x count):")
        for name, counts in unmatched:
            items = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
            print(f"  {name}: {items}")
        if clean_triggers:
            where = Counter(
                f"{t.incident_type} on {t.model}/{t.version or '*'}/"
                + ",".join(f"{k}={v}" for k, v in t.segment.items())
                for t in clean_triggers
            )
            print("  clean: " + ", ".join(f"{k} x{v}" for k, v in sorted(where.items())))
    print_untouched(untouched)
    wall = time.perf_counter() - began
    print(
        f"\n{len(jobs)} scenarios, {sum(r['events'] for r in results):,} events, "
        f"{wall:.0f} s wall on {args.jobs} processes"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "goals": {
            "recall": GOAL_RECALL,
            "false_per_million_clean_events": GOAL_FALSE_PER_M,
            "median_resolve_minutes_after_end": GOAL_RESOLVE_MIN,
        },
        "config": {
            "quick": args.quick,
            "seed": args.seed,
            "sample": args.sample,
            "grace_minutes": GRACE.total_seconds() / 60,
            "after_end_hours": AFTER_END.total_seconds() / 3600,
            "injection_duration_hours": INJECTION_DURATION.total_seconds() / 3600,
            "start_range_hours": START_RANGE_H,
            "strength_range": STRENGTH_RANGE,
            "accepted_prefixes": ACCEPTED,
        },
        "clean_events": clean_events,
        "rows": {
            name: {
                "injections": row.injections,
                "detected": row.detected,
                "recall": row.recall,
                "recall_pass": row.recall_ok(),
                "triggers": row.triggers,
                "matched_triggers": row.matched,
                "precision": row.precision,
                "clean_triggers": row.clean_triggers,
                "false_per_million_clean_events": row.false_per_million,
                "false_pass": row.false_ok(),
                "median_delay_events": row.median_delay_events,
                "median_delay_minutes": row.median_delay_min,
                "triggers_per_injection": row.triggers_per_injection,
                "pages_per_injection": row.pages_per_injection,
                "incidents_per_injection": row.incidents_per_injection,
                "localization": row.localization,
                "reopened_during_injection": row.reopened_during,
                "median_resolve_minutes_after_end": row.median_resolve_min,
                "open_at_end": row.open_at_end,
                "open_at_end_recoverable": row.open_recoverable,
                "resolved_during_injection": row.resolved_during,
                "raised_after_end": row.raised_after_end,
                "lifecycle_pass": lifecycle_pass(row),
                "unmatched": dict(row.unmatched),
            }
            for name, row in rows.items()
        },
        "injections": [
            {
                "scenario": r["name"],
                "row": r["row"],
                "id": inj.injection.id,
                "type": inj.injection.type,
                "scope": dict(inj.injection.scope),
                "start": _fmt_time(inj.injection.start),
                "strength": inj.injection.strength,
                "detected": inj.detected,
                "detected_at": _fmt_time(inj.detected_at) if inj.detected_at else None,
                "first_level": inj.first_level(),
                "first_trigger": asdict(inj.first) if inj.first else None,
                "delay_minutes": inj.delay_minutes,
                "delay_events": inj.delay_events,
                "matching_triggers": inj.matching_triggers,
                "pages": inj.pages,
                "incidents": inj.incidents,
                "localized": inj.localized(),
                "reopened_during": inj.reopened_during,
                "resolved_at": _fmt_time(inj.resolved_at) if inj.resolved_at else None,
                "resolve_minutes_after_end": inj.resolve_minutes,
                "resolved_during": inj.resolved_during,
                "recoverable": inj.recoverable,
                "raised_after_end": inj.raised_after_end,
                "events": r["events"],
                "oracle": r.get("oracle"),
            }
            for _, sc, _, r in scored
            for inj in sc.injections
        ],
        "scenarios": [
            {k: v for k, v in r.items() if k not in ("scope_times", "truth")} for r in results
        ],
        "clean_triggers": [t.to_json() for t in clean_triggers],
        "untouched": {
            "events": untouched.events,
            "triggers": [t.to_json() for t in untouched.triggers],
            "pages": untouched.pages,
        },
        "oracle": oracle_rows,
        "wall_seconds": wall,
    }
    args.out.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
