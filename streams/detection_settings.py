"""The ``[detection]`` section of the service settings: what the pipeline detects.

Key levels, the false-alarm budget, warm-ups, cutoffs (what counts as toxic, critical,
injected, a downvote, a hallucination), drift windows and the bounds on pipeline state.
Most of the pure pipeline (:mod:`streams.pipeline`: rules, keys, join, the detector set)
and the tools that judge detection (audit, the console's detector views, bench) need this
section and nothing else of the settings, so it lives apart from the service's other
sections and from loading (:mod:`streams.settings`, whose ``Settings.detection`` it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DetectionSettings(BaseModel):
    """What the pipeline detects, at which levels, and with which false-alarm budget.

    Thresholds are not set here: each detector derives its own from a target ARL0
    (expected observations between false alarms), and the pipeline derives that ARL0 from
    ``false_pages_per_week``, a budget for the whole service shared evenly by its live keys
    and their tests, turned into events by each key's own traffic rate (see
    :mod:`streams.pipeline.budget`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    false_pages_per_week: float = Field(
        default=1.0,
        gt=0,
        le=10_000,
        description="False pages per week for the whole service (all keys and detectors): "
        "one a week keeps a page worth answering while spending little delay (ARL0 only "
        "adds ln(ARL0) events of delay). Each key's run length in events follows its traffic.",
    )
    false_alarms_per_million_events: float = Field(
        default=0.0,
        ge=0,
        le=1e6,
        description="Optional second budget in events (0 = unset; a number, not None, keeps "
        "settings_env() round trips exact); when set, each key runs at the longer of the two "
        "run lengths, so both hold (the stricter wins).",
    )
    segment_labels: tuple[str, ...] = Field(
        default=("tenant", "feature", "locale"),
        description="Segment labels cut one at a time (model x label=value keys).",
    )
    drift_levels: tuple[Literal["model", "version", "segment"], ...] = ("model", "version")
    segment_drift_min_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Segment keys with at least this share of their model's recent traffic "
        "also run the drift detectors (at most 1/share values per label; 0: off). The "
        "false-alarm budget already counts these tests; bench/throughput.py prints the cost.",
    )
    segment_drift_min_events_per_hour: float = Field(
        default=0.0,
        ge=0,
        description="And at least this much traffic (events of all kinds per hour, decayed "
        "over an hour); 0: no floor beyond the share.",
    )
    segment_prior_events: float = Field(
        default=100.0,
        ge=0,
        description="A segment key's rate detectors start from their parent key's baseline "
        "(version, else model) as a prior worth this many observations until they have "
        "their own; its score charts chart on the parent's reference shape from this many "
        "values of their own (see streams.pipeline.priors); 0: off, each segment warms up "
        "alone.",
    )
    warmup_events: int = Field(default=1000, ge=50, description="Baseline learning, per key.")
    feedback_fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Expected feedback events per event; scales the downvote detectors' ARL0 "
        "so that the false-alarm budget is shared per event, not per observation.",
    )
    feedback_warmup_events: int = Field(
        default=300, ge=50, description="Baseline learning of downvote rates (feedback is sparse)."
    )
    relative_shift: float = Field(
        default=1.0, gt=0, description="Smallest rate increase worth catching (1.0 = doubling)."
    )
    toxicity_excluded: tuple[str, ...] = Field(
        default=(),
        description="Moderation categories NOT watched for a rate increase. Every other "
        "category a producer sends is watched automatically (per category and pooled).",
    )
    max_harm_categories: int = Field(
        default=12,
        ge=1,
        le=64,
        description="Moderation categories watched per key (first seen first); each is a "
        "test that shares the false-alarm budget, so the bound is what the budget counts.",
    )
    toxicity_cutoff: float = Field(default=0.5, gt=0, le=1)
    critical_categories: tuple[str, ...] = ("self_harm", "data_exposure")
    critical_cutoff: float = Field(default=0.97, gt=0, le=1)
    prompt_injection_cutoff: float = Field(default=0.5, gt=0, le=1)
    downvote_max_rating: int = Field(
        default=2, ge=1, le=4, description="A rating at or below this counts as a downvote."
    )
    confidence_shift_sd: float = Field(
        default=0.5,
        gt=0,
        description="Smallest mean shift worth catching, in reference standard deviations, "
        "of a score (confidence, groundedness, judge scores, latency, tokens) or a numeric "
        "input feature; their mean charts also run designs for 2x and 4x it.",
    )
    score_reference_growth: int = Field(
        default=4,
        ge=1,
        le=64,
        description="A score chart's reference (confidence, groundedness, judge scores, "
        "latency, tokens) keeps learning at rest until it stands for this many times its "
        "warm-up's values, so that a warm-up unlike the traffic after it (the night's "
        "requests) does not alarm again after every resolve; 1: fixed once learned.",
    )
    groundedness_cutoff: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="An output whose groundedness is below this counts as a hallucination.",
    )
    evaluation_fraction: float = Field(
        default=0.1,
        gt=0,
        le=100,
        description="Expected evaluation events (judge scores and guardrail verdicts, all "
        "metrics together) per event; scales their detectors' ARL0 as feedback_fraction does.",
    )
    evaluation_warmup_events: int = Field(
        default=300, ge=50, description="Baseline learning of one (evaluator, metric) per key."
    )
    max_evaluation_metrics: int = Field(
        default=16, ge=1, le=256, description="(evaluator, metric) pairs watched per key."
    )
    finish_reason_flags: tuple[str, ...] = Field(
        default=("content_filter", "length", "refusal"),
        max_length=16,
        description="Finish reasons whose rate is watched (on outputs that report any).",
    )
    learning_pause_minutes: float = Field(
        default=120.0,
        ge=0,
        description="After a model/version-level alarm, the model's version and segment "
        "keys stop learning baselines for this long (a baseline learned during an incident "
        "is wrong); tests that have their baseline keep judging. An input-drift alarm also "
        "holds its own key's input-drift tests still learning their reference.",
    )
    drift_reference_size: int = Field(default=1000, ge=100)
    drift_window: int = Field(default=200, ge=20)
    max_features: int = Field(default=32, ge=1)
    state_flush_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How often a key's detector state is written to its changelog "
        "(0: every batch); changed state is also written at each model's wall-clock tick "
        "and before a rebalance or a stop. Evidence since the last write is missing after "
        "a crash.",
    )
    max_label_values: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Distinct values of one segment label kept per model; further values "
        "fold into the 'other' key (counted, warned once, see streams.pipeline.cardinality).",
    )
    max_versions: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Distinct versions per model with their own detector key; further "
        "versions fold into 'other'.",
    )
    max_live_keys: int = Field(
        default=4096,
        ge=1,
        description="Detector-set keys kept deserialized in memory (least recently used "
        "first out, written back before they go); the others live only in the store.",
    )
    silence_minutes: float = Field(
        default=10.0,
        gt=0,
        description="A model whose traffic (or outputs, while inputs continue) stops for "
        "at least this long, and for longer than its learned rate makes likely, is a "
        "traffic_silence incident (see streams.pipeline.silence).",
    )
    idle_key_hours: float = Field(
        default=72.0,
        gt=0,
        description="A detector key that saw no event for this long (event time) is dropped "
        "from memory and deleted from its changelog (a tombstone); it relearns if it returns.",
    )
    max_past_hours: float = Field(
        default=168.0,
        gt=0,
        description="Events older than this (behind the ingress clock) are dead-lettered "
        "as past_timestamp.",
    )
    max_future_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Events later than this (ahead of the ingress clock) are dead-lettered "
        "as future_timestamp.",
    )
    join_ttl_minutes: float = Field(default=1440.0, gt=0)
    join_max_entries: int = Field(default=200_000, ge=100, description="Per partition.")
    sample_fractions: dict[str, float] = Field(
        default_factory=dict,
        description="Model name -> the fraction (0, 1] of its requests that detection sees, "
        "chosen by request id (all events of a request together); the others are joined and "
        "dropped, except critical outputs, which the critical-event test still judges. A "
        "capacity valve for a model busier than one worker can detect on (a model's "
        "detection runs on one worker): detection delays in events stay, in minutes they "
        "grow by 1 / fraction, and sparse segments get that fraction of their few events "
        "(streams/pipeline/sampling.py, docs/operations.md). Empty: every request.",
    )

    @model_validator(mode="after")
    def _fractions(self) -> DetectionSettings:
        for model, fraction in self.sample_fractions.items():
            if not model:
                raise ValueError("detection.sample_fractions: a model name must not be empty")
            if not 0.0 < fraction <= 1.0:
                raise ValueError(
                    f"detection.sample_fractions[{model!r}] = {fraction}: a fraction of "
                    "requests must be in (0, 1] (1 = every request)"
                )
        return self

    @model_validator(mode="after")
    def _segment_labels(self) -> DetectionSettings:
        """A segment label named as a key level would be cut with that level: the culprit
        search counts a dimension by its name (``alerting.cause.dimension_of``), so a
        ``version`` label's values were weighed against the versions and the versions were
        no longer named; a ``model`` label replaced the model-wide cut."""
        taken = sorted(set(self.segment_labels) & {"model", "version"})
        if taken:
            raise ValueError(
                f"detection.segment_labels: {', '.join(map(repr, taken))} names a key level, "
                "not a segment label; rename it where it is produced (e.g. 'app_version')"
            )
        if len(set(self.segment_labels)) < len(self.segment_labels):
            raise ValueError("detection.segment_labels: a label is listed twice")
        return self

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "toxicity_categories" in data:
            raise ValueError(
                "detection.toxicity_categories was replaced by detection.toxicity_excluded: "
                "every moderation category is now watched except the excluded ones"
            )
        return data

    alerting_policy: Path = Field(
        default=Path("alerting.toml"),
        description="Alerting policy file. Relative paths: see load_settings.",
    )
    playbooks_dir: Path = Field(
        default=Path("playbooks"),
        description="Playbook directory. Relative paths: see load_settings.",
    )
