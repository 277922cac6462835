"""Wire and domain models of the alerting layer: detections in, incident events out.

A :class:`Detection` is what the streaming pipeline hands to the incident engine: a
detector's :class:`~detectors.base.Signal` with the labels of the key it was computed for,
its event time and references to the Kafka records behind it. An :class:`IncidentEvent` is
what the engine emits onto the alerts topic (keyed by ``dedup_key``); every sink and the
containment consumer read only that model.

All datetimes are timezone-aware UTC; naive datetimes are rejected at the edge, because a
naive timestamp silently compared with an aware one is how hysteresis bugs start.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from detectors.base import Quantity, Signal, SignalKind

SCHEMA_VERSION = 1


def _aware_utc(value: datetime) -> datetime:
    """Reject naive datetimes and normalise aware ones to UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware (UTC); got a naive datetime")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_aware_utc)]
"""A datetime that must carry a timezone; stored as UTC."""


def require_utc(value: datetime) -> datetime:
    """The same check for plain function arguments (e.g. ``now`` passed to ``tick``)."""
    return _aware_utc(value)


def iso_utc(value: datetime) -> str:
    """RFC 3339 / ISO 8601 with a ``Z`` suffix, the form PagerDuty and Alertmanager use."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def time_text(value: datetime) -> str:
    """:func:`iso_utc` to the second, for tables people read (machine output keeps the
    full precision)."""
    return iso_utc(value.replace(microsecond=0))


def effect_text(signal: Signal) -> str:
    """The one rendering of a signal's effect size (:attr:`Signal.effect_size`, defined
    per detector: relative rate change, standardised shift or distance), signed, used by
    the severity reasons, payloads, investigation and post-mortem alike."""
    return f"{signal.effect_size:+.2f}"


def minutes_text(span: timedelta) -> str:
    """The one rendering of a duration in user-facing text: minutes, with the unit."""
    return f"{span.total_seconds() / 60:g} min"


@functools.cache
def _quantities() -> dict[str, Quantity]:
    from detectors.registry import OPTIONAL, REGISTRY

    return {cls.__name__: cls.quantity for cls in (*REGISTRY.values(), *OPTIONAL.values())}


def values_text(signal: Signal) -> str:
    """The one rendering of a signal's baseline and observed value, with their unit (the
    detector's :class:`detectors.base.Quantity`), used by summaries, investigation and
    post-mortem alike."""
    b, o = signal.baseline, signal.observed
    if signal.kind is SignalKind.TRAFFIC_SILENCE:
        return f"{b:.1f} events/min -> none for {signal.statistic:.1f} min"
    quantity = _quantities().get(signal.detector, Quantity.STATISTIC)
    if quantity is Quantity.RATE:
        return f"rate {b:.2%} -> {o:.2%}"
    if quantity is Quantity.MEAN:
        return f"mean {b:.3f} -> {o:.3f}"
    if quantity is Quantity.NORMAL_SCORE:
        return f"mean normal score {b:+.2f} -> {o:+.2f} sd of the reference"
    return f"baseline {b:.4g} -> observed {o:.4g}"


def stable_hash(*parts: object, length: int = 32) -> str:
    """A short SHA-256 hex digest of canonical JSON: same inputs, same id, any process."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


class Severity(enum.StrEnum):
    """SEV1 (worst) .. SEV4; ``rank`` 1..4 so that ``min`` of ranks is the worse one."""

    SEV1 = "SEV1"
    SEV2 = "SEV2"
    SEV3 = "SEV3"
    SEV4 = "SEV4"

    @property
    def rank(self) -> int:
        return int(self.value[-1])

    @classmethod
    def from_rank(cls, rank: int) -> Severity:
        return cls(f"SEV{min(4, max(1, rank))}")

    def worse_of(self, other: Severity) -> Severity:
        return self if self.rank <= other.rank else other

    @property
    def pagerduty(self) -> Literal["critical", "error", "warning", "info"]:
        """PagerDuty Events v2 ``payload.severity``."""
        mapping: dict[Severity, Literal["critical", "error", "warning", "info"]] = {
            Severity.SEV1: "critical",
            Severity.SEV2: "error",
            Severity.SEV3: "warning",
            Severity.SEV4: "info",
        }
        return mapping[self]


class IncidentAction(enum.StrEnum):
    TRIGGER = "trigger"
    UPDATE = "update"
    RESOLVE = "resolve"


class IncidentStatus(enum.StrEnum):
    FIRING = "firing"
    ESCALATED = "escalated"
    RESOLVED = "resolved"


class Labels(BaseModel):
    """The identity of what an incident is about.

    ``version=None`` means model-wide (all versions); an empty ``segment`` means all
    segments. A label set is more general than another when it constrains a subset of the
    same things; inhibition uses that order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    version: str | None = None
    segment: dict[str, str] = Field(default_factory=dict)

    @property
    def is_model_wide(self) -> bool:
        return self.version is None and not self.segment

    def covers(self, other: Labels) -> bool:
        """True when ``self`` is the same or a more general key than ``other``."""
        if self.model != other.model:
            return False
        if self.version is not None and self.version != other.version:
            return False
        return all(other.segment.get(k) == v for k, v in self.segment.items())

    def canonical(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "segment": dict(sorted(self.segment.items())),
        }

    def flat(self) -> dict[str, str]:
        """Flat string labels (Alertmanager style); segment keys prefixed ``segment_``."""
        out = {"model": self.model}
        if self.version is not None:
            out["version"] = self.version
        out.update({f"segment_{k}": v for k, v in sorted(self.segment.items())})
        return out

    def describe(self) -> str:
        parts = [self.model]
        parts.append(f"version={self.version}" if self.version else "all versions")
        if self.segment:
            parts.append(",".join(f"{k}={v}" for k, v in sorted(self.segment.items())))
        return " ".join(parts)


def key_id(labels: Labels) -> str:
    """A stable string for a detector key, ``model|version|label=value`` (``*``: all
    versions; the segment part empty for a model or version key): the pipeline's detector
    table keys and the keys of an incident's probes."""
    seg = ",".join(f"{k}={v}" for k, v in sorted(labels.segment.items()))
    return f"{labels.model}|{labels.version or '*'}|{seg}"


def labels_of_key(kid: str) -> Labels:
    """The labels of a :func:`key_id`. A detector key carries at most one segment label,
    so its value is everything after the first ``=`` (it may hold ``,`` or ``=``)."""
    model, _, rest = kid.partition("|")
    version, _, segment = rest.partition("|")
    label, _, value = segment.partition("=")
    return Labels(
        model=model,
        version=None if version in ("", "*") else version,
        segment={label: value} if segment else {},
    )


# Kinds whose Signal.feature names a harm category that is part of the incident identity
# (toxicity:self_harm and toxicity:harassment are different incidents with different
# severities); for drift the feature is evidence, not identity.
CATEGORY_KINDS = frozenset({SignalKind.TOXICITY_RATE, SignalKind.CRITICAL_EVENT})
# Kinds whose Signal.feature names what is measured and is part of the identity too, but
# is no harm category: an (evaluator, metric) or a finish reason. A failing PII guardrail
# and a failing relevance judge are two incidents.
METRIC_KINDS = frozenset(
    {
        SignalKind.EVALUATION_SCORE,
        SignalKind.EVALUATION_FAIL_RATE,
        SignalKind.GUARDRAIL_BLOCK_RATE,
        SignalKind.FINISH_REASON_RATE,
    }
)


def incident_type_of(signal: Signal) -> str:
    """``kind`` or ``kind:category`` (e.g. ``critical_event:self_harm``), or
    ``kind:<evaluator>/<metric>`` and ``kind:<finish reason>`` for the metric kinds."""
    if signal.kind in CATEGORY_KINDS | METRIC_KINDS and signal.feature:
        return f"{signal.kind.value}:{signal.feature}"
    return signal.kind.value


def category_of(signal: Signal) -> str | None:
    """The harm category used by the severity policy, if the signal has one."""
    if signal.kind == SignalKind.PROMPT_INJECTION_RATE:
        return "prompt_injection"
    if signal.kind in CATEGORY_KINDS:
        return signal.feature
    return None


def dedup_key_of(labels: Labels, incident_type: str) -> str:
    """Stable key of an incident's identity; also the alerts-topic key and PD dedup_key."""
    return "sentinel-" + stable_hash(labels.canonical(), incident_type)


class EventRange(BaseModel):
    """A contiguous offset range of one partition that holds evidence for a detection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field(min_length=1)
    partition: int = Field(ge=0)
    first_offset: int = Field(ge=0)
    last_offset: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> EventRange:
        if self.last_offset < self.first_offset:
            raise ValueError("last_offset must be >= first_offset")
        return self


class BlastRadius(BaseModel):
    """How much of the model's traffic is affected, for the severity policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    traffic_share: float | None = Field(default=None, ge=0.0, le=1.0)
    distinct_users: int | None = Field(default=None, ge=0)


MAX_SAMPLE_REQUEST_IDS = 10
MAX_CUTS = 16
MAX_RELATED = 24


class Cut(BaseModel):
    """One candidate scope of a change (a key: model, version or one segment label) with
    the excess of the flagged quantity it carries, for root-cause localization."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: Labels
    dimension: str = Field(description="'model', 'version' or the segment label name.")
    n: int = Field(ge=0, description="Observations in the cut's current episode.")
    baseline: float
    observed: float
    excess: float = Field(description="Observed minus expected, in the flagged direction.")
    surprise: float = Field(ge=0.0, description="Log-likelihood ratio of the episode, nats.")
    explanatory_power: float = Field(
        ge=0.0, le=1.0, description="Share of its dimension's excess this cut carries."
    )
    traffic_share: float | None = Field(default=None, ge=0.0, le=1.0)
    alarmed: bool = False


class Localization(BaseModel):
    """Where a change lives: the cut that explains it, and how much every cut explains."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: Labels
    dimension: str
    explanatory_power: float = Field(ge=0.0, le=1.0)
    reason: str
    cuts: tuple[Cut, ...] = Field(default=(), max_length=MAX_CUTS)


class Probe(BaseModel):
    """Which detector judges whether an incident's cause persists: the detector ``name``
    in the key ``key`` (a pipeline key id) and the signal's category and direction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    detector: str
    feature: str | None = None
    direction: str = "up"

    @property
    def id(self) -> str:
        return f"{self.key}#{self.detector}#{self.feature or ''}#{self.direction}"

    def describe(self) -> str:
        """What an on-call engineer reads: the detector's kind, its category or metric, and
        the key (a :func:`key_id`) in the words of :meth:`Labels.describe`."""
        # the detector's kind names it with its feature (``guardrail:<evaluator>,<metric>``)
        kind = self.detector.partition(":")[0]
        what = f"{kind} {self.feature}" if self.feature else self.detector
        return f"{what} on {labels_of_key(self.key).describe()}"


class RelatedSignal(BaseModel):
    """A detection folded into an incident as evidence of the same cause."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: Labels
    incident_type: str
    at: UtcDatetime
    count: int = Field(ge=1, description="Detections of this key and type folded in.")
    baseline: float
    observed: float
    effect_size: float
    statistic: float
    threshold: float
    n_observations: int = Field(ge=1)


class Detection(BaseModel):
    """One detector alarm for one key, as the pipeline hands it to the engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: Labels
    signal: Signal
    at: UtcDatetime = Field(description="Event time of the observation that fired.")
    served_at: UtcDatetime | None = Field(
        default=None,
        description="For a detection that fired on feedback or an evaluation: when the "
        "output it rates was served (None: at ``at``). Such events trail their output by "
        "minutes to hours; this says when what they report on happened.",
    )
    window_start: UtcDatetime | None = Field(
        default=None, description="Event time of the first observation of the evidence."
    )
    ranges: tuple[EventRange, ...] = ()
    sample_request_ids: tuple[str, ...] = Field(default=(), max_length=MAX_SAMPLE_REQUEST_IDS)
    blast_radius: BlastRadius | None = None
    replay: bool = Field(default=False, description="From an analyst's replay: never pages.")
    localization: Localization | None = Field(
        default=None, description="The cut that explains the change (None: the key's own)."
    )
    probes: tuple[Probe, ...] = Field(
        default=(),
        description="The detector that says whether the cause persists: the one that "
        "fired, read in the localized scope's key.",
    )

    @property
    def scope(self) -> Labels:
        """The labels of the cause: the localized scope, else the key's own labels."""
        return self.localization.scope if self.localization is not None else self.labels

    @property
    def served(self) -> datetime:
        """When what the detection reports on was served (:attr:`served_at`, else
        :attr:`at`)."""
        return self.at if self.served_at is None else min(self.served_at, self.at)

    @property
    def reports_from(self) -> datetime:
        """Where the evidence of the detection begins: its change-point estimate
        (:attr:`window_start`), or when the output it reports on was served if earlier."""
        return min(self.window_start or self.at, self.served)

    @property
    def incident_type(self) -> str:
        return incident_type_of(self.signal)

    @property
    def dedup_key(self) -> str:
        return dedup_key_of(self.labels, self.incident_type)

    def fingerprint(self) -> str:
        """Identity of this detection, so a reprocessed duplicate is recognised."""
        return stable_hash(self.dedup_key, self.model_dump(mode="json"), length=24)


class Evidence(BaseModel):
    """What the detector saw, and where the events behind it live."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal: Signal
    ranges: tuple[EventRange, ...] = ()
    sample_request_ids: tuple[str, ...] = ()
    window_start: UtcDatetime | None = None
    window_end: UtcDatetime
    blast_radius: BlastRadius | None = None
    localization: Localization | None = None
    related: tuple[RelatedSignal, ...] = Field(default=(), max_length=MAX_RELATED)


class PlaybookRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    path: str


class DeployRef(BaseModel):
    """A recent deploy the incident's version belongs to (deploy awareness)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    version: str
    previous_version: str | None = None
    deployed_at: UtcDatetime


class IncidentEvent(BaseModel):
    """One lifecycle step of an incident, as published on the alerts topic.

    ``event_id`` is derived from ``incident_id`` and ``sequence``, so re-emitting the same
    step after a crash yields the same id and consumers can drop the duplicate.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str
    incident_id: str
    dedup_key: str
    sequence: int = Field(ge=1)
    action: IncidentAction
    status: IncidentStatus
    severity: Severity
    severity_reasons: tuple[str, ...]
    labels: Labels
    incident_type: str
    summary: str
    evidence: Evidence
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    emitted_at: UtcDatetime
    playbook: PlaybookRef | None = None
    deploy: DeployRef | None = None
    note: str = Field(default="", description="Why this step happened (e.g. quiet for 15m).")
    flap_count: int = Field(default=0, ge=0)
    replay: bool = False

    @property
    def is_paging(self) -> bool:
        return not self.replay

    def key(self) -> bytes:
        """Kafka message key on the alerts topic."""
        return self.dedup_key.encode()

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def event_id_of(incident_id: str, sequence: int) -> str:
    return stable_hash(incident_id, sequence, length=32)
