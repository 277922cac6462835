"""The alerting policy: severity rules, lifecycle timings, deploy warm-up, silences.

Loaded from TOML (``config/alerting.toml``), validated by pydantic with unknown keys
rejected, and frozen. Severity is computed by :func:`score_severity` as a sum of points
from effect size, statistical confidence and blast radius, mapped to SEV1..SEV4 by
thresholds, then raised to a per-category floor (self-harm, data exposure and prompt
injection rank higher). Every contribution is recorded as a human-readable reason, so an
incident says why it got its severity.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from alerting.cause import GroupingPolicy
from alerting.model import (
    BlastRadius,
    Labels,
    Severity,
    UtcDatetime,
    category_of,
    effect_text,
)
from detectors.base import Signal

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Step(BaseModel):
    """``points`` are awarded when the measured value is at least ``at_least``."""

    model_config = _FROZEN

    at_least: float = Field(ge=0.0)
    points: int = Field(ge=0)


def _steps_ascending(steps: tuple[Step, ...], name: str) -> None:
    values = [s.at_least for s in steps]
    if values != sorted(values) or len(set(values)) != len(values):
        raise ValueError(f"{name}: steps must have strictly ascending 'at_least'")


def _points(steps: tuple[Step, ...], value: float) -> Step | None:
    hit = None
    for step in steps:
        if value >= step.at_least:
            hit = step
    return hit


class SeverityPolicy(BaseModel):
    """Points per factor; total points -> severity; category floors."""

    model_config = _FROZEN

    effect_size: tuple[Step, ...] = (
        Step(at_least=0.25, points=1),
        Step(at_least=0.5, points=2),
        Step(at_least=1.0, points=3),
    )
    # Confidence from the p-value, as -log10(p): 3 means p <= 0.001.
    neg_log10_p: tuple[Step, ...] = (Step(at_least=3, points=1), Step(at_least=6, points=2))
    # Confidence without a p-value: how far the statistic overshot its threshold.
    statistic_ratio: tuple[Step, ...] = (
        Step(at_least=1.5, points=1),
        Step(at_least=3.0, points=2),
    )
    traffic_share: tuple[Step, ...] = (
        Step(at_least=0.05, points=1),
        Step(at_least=0.25, points=2),
        Step(at_least=0.5, points=3),
    )
    distinct_users: tuple[Step, ...] = (
        Step(at_least=100, points=1),
        Step(at_least=1000, points=2),
        Step(at_least=10000, points=3),
    )
    # Minimum total points for SEV1, SEV2, SEV3 (below the last: SEV4).
    sev1_points: int = 7
    sev2_points: int = 5
    sev3_points: int = 3
    category_floor: dict[str, Severity] = Field(
        default_factory=lambda: {
            "self_harm": Severity.SEV1,
            "data_exposure": Severity.SEV1,
            "prompt_injection": Severity.SEV2,
        }
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in ("effect_size", "neg_log10_p", "statistic_ratio"):
            _steps_ascending(getattr(self, name), name)
        _steps_ascending(self.traffic_share, "traffic_share")
        _steps_ascending(self.distinct_users, "distinct_users")
        if not self.sev1_points > self.sev2_points > self.sev3_points >= 0:
            raise ValueError("need sev1_points > sev2_points > sev3_points >= 0")
        return self


def score_severity(
    policy: SeverityPolicy,
    signal: Signal,
    blast: BlastRadius | None,
    floor: Severity | None = None,
) -> tuple[Severity, tuple[str, ...]]:
    """Severity of a detection and the reasons for it, one reason per contribution."""
    reasons: list[str] = []
    total = 0
    step = _points(policy.effect_size, abs(signal.effect_size))
    if step and step.points:
        total += step.points
        reasons.append(
            f"effect size {effect_text(signal)} (|effect| >= {step.at_least:g}, +{step.points})"
        )
    if signal.p_value is not None:
        nlp = math.inf if signal.p_value == 0 else -math.log10(signal.p_value)
        step = _points(policy.neg_log10_p, nlp)
        if step and step.points:
            total += step.points
            reasons.append(f"p-value {signal.p_value:.3g} <= 1e-{step.at_least:g} (+{step.points})")
    elif signal.threshold > 0:
        ratio = signal.statistic / signal.threshold
        step = _points(policy.statistic_ratio, ratio)
        if step and step.points:
            total += step.points
            reasons.append(
                f"statistic {ratio:.3g}x its threshold >= {step.at_least:g}x (+{step.points})"
            )
    if blast is not None:
        best: tuple[int, str] = (0, "")
        if blast.traffic_share is not None:
            step = _points(policy.traffic_share, blast.traffic_share)
            if step and step.points > best[0]:
                best = (
                    step.points,
                    f"traffic share {blast.traffic_share:.1%} >= {step.at_least:.0%}",
                )
        if blast.distinct_users is not None:
            step = _points(policy.distinct_users, blast.distinct_users)
            if step and step.points > best[0]:
                best = (step.points, f"{blast.distinct_users} users >= {step.at_least:g}")
        if best[0]:
            total += best[0]
            reasons.append(f"blast radius: {best[1]} (+{best[0]})")
    if total >= policy.sev1_points:
        severity = Severity.SEV1
    elif total >= policy.sev2_points:
        severity = Severity.SEV2
    elif total >= policy.sev3_points:
        severity = Severity.SEV3
    else:
        severity = Severity.SEV4
    reasons.append(f"{total} points -> {severity.value}")
    category = category_of(signal)
    if category is not None and category in policy.category_floor:
        cat_floor = policy.category_floor[category]
        if cat_floor.rank < severity.rank:
            severity = cat_floor
            reasons.append(f"category {category} ranks at least {cat_floor.value}")
    if floor is not None and floor.rank < severity.rank:
        severity = floor
        reasons.append(f"playbook floor {floor.value}")
    return severity, tuple(reasons)


class LifecyclePolicy(BaseModel):
    """Timings of the incident lifecycle (after Alertmanager's named defaults)."""

    model_config = _FROZEN

    hysteresis_minutes: float = Field(default=45, gt=0)
    """Detector must stay quiet this long before the incident resolves."""
    reopen_window_minutes: float = Field(default=60, ge=0)
    """A re-trigger this soon after resolving reopens the incident (counts a flap)."""
    flap_hysteresis_factor: float = Field(default=2.0, ge=1.0)
    """Each flap multiplies the required quiet period by this factor..."""
    max_hysteresis_minutes: float = Field(default=240, gt=0)
    """...up to this cap."""
    update_interval_minutes: float = Field(default=60, ge=0)
    """Re-scored detections without a severity change are re-sent at most this often."""
    default_deadline_minutes: float = Field(default=60, gt=0)
    """Escalate an unresolved incident after this long when its playbook names none."""
    recurrence_window_hours: float = Field(default=24, ge=0)
    """A new incident's trigger counts the incidents of its type and scope opened this
    recently, itself included, and from the second names the operator re-learn for a
    level that may be the new normal (0: off)."""


class WarmupPolicy(BaseModel):
    """Deploy awareness: a fresh version's alarms need enough data to count."""

    model_config = _FROZEN

    warmup_minutes: float = Field(default=30, ge=0)
    min_observations: int = Field(default=50, ge=1)
    bad_deploy_window_minutes: float = Field(default=120, ge=0)
    """Incidents on a version deployed this recently use the ``bad_deploy`` playbook."""


class Silence(BaseModel):
    """Mute matching incidents between ``starts_at`` and ``ends_at`` (a maintenance window).

    Matching: same model; ``version`` if set; every ``segment`` item present in the
    incident's segment; ``incident_type`` if set (a prefix match on ``kind``, so
    ``toxicity_rate`` also silences ``toxicity_rate:self_harm``).
    """

    model_config = _FROZEN

    id: str = Field(min_length=1)
    model: str = Field(min_length=1)
    version: str | None = None
    segment: dict[str, str] = Field(default_factory=dict)
    incident_type: str | None = None
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    created_by: str = "config"
    comment: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.ends_at <= self.starts_at:
            raise ValueError("silence ends_at must be after starts_at")
        return self

    def matches(self, labels: Labels, incident_type: str) -> bool:
        scope = Labels(model=self.model, version=self.version, segment=self.segment)
        if not scope.covers(labels):
            return False
        if self.incident_type is None:
            return True
        return incident_type == self.incident_type or incident_type.startswith(
            self.incident_type + ":"
        )


class AlertingPolicy(BaseModel):
    model_config = _FROZEN

    grouping: GroupingPolicy = GroupingPolicy()
    severity: SeverityPolicy = SeverityPolicy()
    lifecycle: LifecyclePolicy = LifecyclePolicy()
    warmup: WarmupPolicy = WarmupPolicy()
    silences: tuple[Silence, ...] = ()


class ConfigError(ValueError):
    """A configuration, policy or playbook file (or override) is invalid; the message
    names the file and the keys."""


def error_text(e: ErrorDetails) -> str:
    """One pydantic error as ``where: what`` (an unknown key says so): names keys and
    messages only, never input values (which may be secrets)."""
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
    # a validator's own ValueError reads as its message, without pydantic's prefix
    return f"{loc}: {msg.removeprefix('Value error, ')}"


def format_validation_error(path: Path | str, err: ValidationError) -> str:
    """A file's validation errors, one :func:`error_text` per line under its name."""
    return "\n".join(
        [f"{path}: invalid configuration", *(f"  {error_text(e)}" for e in err.errors())]
    )


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; a file that cannot be read or parsed is a
    :class:`ConfigError` naming it (not valid UTF-8, not TOML, a directory)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start]:#04x})"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc


def load_policy(path: Path | str) -> AlertingPolicy:
    """Read and validate an alerting policy TOML file."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"alerting policy file not found: {p}")
    try:
        return AlertingPolicy.model_validate(read_toml(p))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(p, exc)) from exc
