"""Builders shared by the alerting tests (plain functions, no fixtures magic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerting.model import BlastRadius, Detection, EventRange, Labels
from alerting.playbooks import PlaybookSet, load_playbooks
from alerting.policy import AlertingPolicy
from detectors.base import Direction, Signal, SignalKind

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK_DIR = REPO / "config" / "playbooks"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class ManualClock:
    """A clock the test moves: :meth:`now` is ``t``, which starts at ``start`` (T0)."""

    def __init__(self, start: datetime = T0) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t


def minutes(m: float) -> timedelta:
    return timedelta(minutes=m)


def playbooks() -> PlaybookSet:
    return load_playbooks(PLAYBOOK_DIR)


def policy(*, grouping: bool = False, **lifecycle: float) -> AlertingPolicy:
    """The default policy with a 15-minute quiet period (the figures the lifecycle tests
    are written in), overridable per test. Grouping by cause is off unless asked for: these
    tests pin the per-key mechanics (dedup, inhibition, silences, warm-up) that grouping
    builds on; tests/unit/alerting/test_cause.py covers grouping."""
    base = AlertingPolicy()
    return AlertingPolicy.model_validate(
        {
            **base.model_dump(),
            "grouping": {**base.grouping.model_dump(), "enabled": grouping},
            "lifecycle": {**base.lifecycle.model_dump(), "hysteresis_minutes": 15, **lifecycle},
        }
    )


def signal(
    kind: SignalKind = SignalKind.DOWNVOTE_RATE,
    *,
    effect: float = 0.3,
    statistic: float = 6.0,
    threshold: float = 5.0,
    n: int = 400,
    p_value: float | None = None,
    feature: str | None = None,
    last_index: int = 1000,
) -> Signal:
    return Signal(
        detector="BernoulliCusum",
        kind=kind,
        statistic=statistic,
        threshold=threshold,
        baseline=0.05,
        observed=0.05 * (1 + effect),
        effect_size=effect,
        direction=Direction.UP,
        first_index=max(0, last_index - n + 1),
        last_index=last_index,
        n_observations=n,
        p_value=p_value,
        feature=feature,
    )


def detection(
    at: datetime = T0,
    *,
    model: str = "support-bot",
    version: str | None = None,
    segment: dict[str, str] | None = None,
    sig: Signal | None = None,
    blast: BlastRadius | None = None,
    replay: bool = False,
) -> Detection:
    sig = sig or signal()
    return Detection(
        labels=Labels(model=model, version=version, segment=segment or {}),
        signal=sig,
        at=at,
        window_start=at - minutes(10),
        ranges=(
            EventRange(
                topic="feedback",
                partition=0,
                first_offset=sig.first_index,
                last_offset=sig.last_index,
            ),
        ),
        sample_request_ids=("req-1", "req-2"),
        blast_radius=blast,
        replay=replay,
    )
