"""The detector contract shared by every online detector.

After river's drift detectors: the constructor stores hyper-parameters under their own
names and nothing else; state is created in ``_reset()``; ``update(x)`` advances the state
by one observation. Scoring and deciding are separate: a detector exposes its current
``statistic`` and ``threshold``, and ``update`` returns a :class:`Signal` (the decision,
with its evidence) only on the step where the statistic crosses the threshold.

State is a plain JSON-compatible mapping (numbers, strings, lists, dicts) so that the
streaming layer can keep it in a changelog-backed table and restore it after a restart.
"""

from __future__ import annotations

import abc
import copy
import enum
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

X = TypeVar("X")

JsonState = dict[str, Any]

GROWTH_CHUNK: Final = 64
"""Observations per block of a learned reference that keeps growing after its fit (the
score charts' kept values, the rate charts' merge points): a score chart's full block
never changes, so the detector store writes it once (:class:`Frozen`); a rate chart
merges only where a block ends, so a batch and one-at-a-time updates merge alike."""

AT_REST: Final = 0.5
"""A learned reference grows only at a point where every statistic is below this share of
its threshold (and no alarm's change lasts), so what it takes in is not the start of a
change that a chart already leans towards."""

RECENT_BLOCKS: Final = 2
"""The newest blocks of what a chart has charted wait for a later merge: a change that
began among them has not had the observations to lift a statistic to :data:`AT_REST`."""


class Frozen(tuple[Any, ...]):
    """A state value that never changes once built: a fitted reference (sorted values per
    feature, a parent's quantiles). A detector's ``get_state`` returns it as it is, not a
    copy, and the detector store writes it once per key rather than at every flush
    (:mod:`streams.pipeline.frozen`): it is most of a mature key's bytes. JSON encodes it
    as an array, so a reader sees a list; :func:`frozen` turns that back."""

    __slots__ = ()


def frozen(values: Any) -> Frozen:
    """``values`` as a :class:`Frozen`, its items that are lists as tuples (one level: a
    column per feature); a :class:`Frozen` as it is."""
    if isinstance(values, Frozen):
        return values
    return Frozen(tuple(v) if isinstance(v, list) else v for v in values)


DEFAULT_ARL0 = 1e5
"""Default expected number of events between false alarms, per detector and key.

1e5 sits in the middle of the DESIGN.md table: a key with 10k events a day sees one false
alarm per ten days per detector, and doubling ARL0 only adds ``ln 2 / KL`` events of
delay. The service should derive the per-key figure from its false-pages-per-day budget
across all keys and detectors; this is the fallback for a single detector.
"""


class SignalKind(enum.StrEnum):
    """What a signal is about; the alerting layer maps kinds to incident types."""

    DOWNVOTE_RATE = "downvote_rate"
    TOXICITY_RATE = "toxicity_rate"
    CRITICAL_EVENT = "critical_event"
    CONFIDENCE_SHIFT = "confidence_shift"
    INPUT_DRIFT = "input_drift"
    OUTPUT_DRIFT = "output_drift"
    PROMPT_INJECTION_RATE = "prompt_injection_rate"
    HALLUCINATION_RATE = "hallucination_rate"
    EVALUATION_SCORE = "evaluation_score"
    EVALUATION_FAIL_RATE = "evaluation_fail_rate"
    GUARDRAIL_BLOCK_RATE = "guardrail_block_rate"
    FINISH_REASON_RATE = "finish_reason_rate"
    LATENCY_SHIFT = "latency_shift"
    TOKEN_SHIFT = "token_shift"
    TRAFFIC_SILENCE = "traffic_silence"


class Quantity(enum.StrEnum):
    """What a detector's :attr:`Signal.baseline` and :attr:`Signal.observed` measure, so
    that they are printed with their unit (:func:`alerting.model.values_text`)."""

    RATE = "rate"
    """A proportion of the observations (0..1): flagged outputs, downvotes, blocks."""
    MEAN = "mean"
    """The mean of the monitored score on its own scale (confidence)."""
    NORMAL_SCORE = "normal_score"
    """The mean normal score: standard deviations of the reference distribution."""
    STATISTIC = "statistic"
    """A test statistic or a single event's score (drift tests, critical events)."""


class Direction(enum.StrEnum):
    """Direction of the detected change relative to the baseline."""

    UP = "up"
    DOWN = "down"
    BOTH = "both"


class Signal(BaseModel):
    """A detected change, with the evidence an incident needs.

    ``first_index`` and ``last_index`` are positions in the detector's own stream of
    observations (0-based count of ``update`` calls since the last reset); the streaming
    layer maps them to Kafka coordinates.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: str = Field(description="Detector class name, e.g. 'BernoulliCusum'.")
    kind: SignalKind
    statistic: float = Field(description="Value of the detection statistic at the alarm.")
    threshold: float = Field(description="Decision threshold the statistic crossed.")
    baseline: float = Field(description="Baseline value of the monitored quantity.")
    observed: float = Field(description="Observed value of the monitored quantity.")
    effect_size: float = Field(
        description="Standardised size of the change (e.g. relative rate increase, "
        "Cohen's d, or a distance between distributions)."
    )
    direction: Direction
    first_index: int = Field(ge=0, description="First observation of the evidence window.")
    last_index: int = Field(ge=0, description="Observation at which the alarm fired.")
    n_observations: int = Field(ge=1, description="Observations in the evidence window.")
    p_value: float | None = Field(default=None, ge=0.0, le=1.0)
    feature: str | None = Field(default=None, description="Feature or category, if any.")
    details: dict[str, float] = Field(default_factory=dict)


class Excess(BaseModel):
    """How far the quantity a signal flagged sits from its baseline, over the detector's
    current *episode*: the observations since its evidence statistic last stood at zero.

    Read-only evidence for root-cause localization and for judging recovery: comparing the
    excess of the same detector across keys (tenant, locale, version cuts) says which cut
    explains a change (Adtributor's explanatory power); ``surprise`` says how unlikely the
    cut's own data are under its baseline. Unlike the alarm statistic, the episode does not
    restart at an alarm, so it spans the whole change while it lasts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=0, description="Observations in the episode.")
    baseline: float = Field(description="Baseline value of the quantity (rate or mean).")
    observed: float = Field(description="Value of the quantity over the episode.")
    excess: float = Field(
        description="n x (observed - baseline) in the flagged direction (e.g. extra toxic "
        "outputs); negative when the episode leans the other way."
    )
    surprise: float = Field(
        ge=0.0, description="Log-likelihood ratio (nats) of the episode: shifted vs baseline."
    )
    alarmed: bool = Field(
        description="The detector alarmed during the episode and the episode's statistic "
        "has not returned to zero since: the change persists."
    )
    recovered: bool = Field(
        default=False,
        description="A recovery test matched to the size of the detector's last alarm "
        "has read that change as over since (rate detectors, "
        ":mod:`detectors.recovery`): the cause has ended although the episode, which "
        "waits for the baseline against the smallest design shift, may still be open.",
    )
    quiet_for: int | None = Field(
        default=None,
        ge=0,
        description="Observations since the recovery test last read the change at full "
        "strength (its cap): once ``recovered`` or the episode has closed, its estimate "
        "of how long ago the change ended. None without a recovery test armed.",
    )
    scale: float | None = Field(
        default=None,
        gt=0.0,
        description="The unit of a relative shift (the lift that localization compares "
        "across cuts): the baseline's size when None (rates), the reference standard "
        "deviation for mean shifts (a standardised score's baseline sits near zero).",
    )


class Detector(abc.ABC, Generic[X]):
    """Base class for online detectors.

    Subclasses define ``kind`` and implement ``_reset``, ``update``, ``get_state`` and
    ``set_state``. The constructor of a subclass must only store its hyper-parameters
    (under the same names as the arguments) and then call ``self._reset()``.
    """

    kind: ClassVar[SignalKind]
    quantity: ClassVar[Quantity] = Quantity.STATISTIC

    @abc.abstractmethod
    def _reset(self) -> None:
        """Create fresh state (called by the constructor and by ``reset``)."""

    def reset(self) -> None:
        """Forget everything learned; equivalent to a newly constructed detector."""
        self._reset()

    @abc.abstractmethod
    def update(self, x: X) -> Signal | None:
        """Advance the state by one observation; return a Signal on an alarm."""

    @property
    @abc.abstractmethod
    def statistic(self) -> float:
        """Current value of the detection statistic (the score)."""

    @property
    @abc.abstractmethod
    def threshold(self) -> float:
        """Current decision threshold for ``statistic``."""

    @property
    def learning(self) -> bool:
        """True while the detector is still learning its baseline/reference (no alarms).

        The pipeline uses it to keep a sparse key from learning its baseline while a more
        general key of the same model is alarming: a reference learned during an incident
        makes the return to normal look like a change.
        """
        return False

    @property
    def learns(self) -> bool:
        """True while values may still join its baseline: :attr:`learning`, or a fitted
        reference that keeps learning (:class:`detectors.confidence.ConfidenceShift`). The
        pipeline holds such a detector while a more general key alarms."""
        return self.learning

    def excess(
        self, feature: str | None = None, direction: Direction = Direction.UP
    ) -> Excess | None:
        """The current episode's excess of the quantity a signal flagged (its ``feature``,
        e.g. a category, and its ``direction``), or ``None`` when the detector has no such
        notion (window tests) or is still learning. Read-only: never changes the state."""
        return None

    def update_settled(self, x: X) -> Signal | None:
        """One observation for the parts that have learned their baseline only; the parts
        still learning skip it (a detector of one part skips it whole while it learns).

        The pipeline feeds a detector this way while a more general key of its model is
        alarming and the detector is :attr:`learning` but :attr:`alarm_ready`: a baseline
        learned from an incident's traffic is wrong, yet a category that has its baseline
        must keep judging (and reading its recovery), or a key with one rare category
        still warming up would stop watching all of them for as long as the incident.
        """
        return None if self.learning else self.update(x)

    @property
    def alarm_ready(self) -> bool:
        """True once an alarm is possible: for a detector made of parts (one per category
        or per shift), as soon as one part has learned its baseline.

        ``learning`` of such a detector stays true while any part learns (the pipeline
        holds baselines on it); investigation plots use this property instead, so points
        after a category alarmed are not shown as "learning".
        """
        return not self.learning

    def heat(self) -> float | None:
        """How close it is to alarm, ``statistic / threshold`` (1 = alarm), for the
        console's heat map and the worker's gauges; None while it cannot alarm (a
        detector of several tests can once one of them has its baseline, though it is
        :attr:`learning` while another learns) or when the ratio is not finite."""
        if not self.alarm_ready:
            return None
        try:
            ratio = self.statistic / self.threshold
        except (ZeroDivisionError, ValueError):
            return None
        return ratio if math.isfinite(ratio) else None

    def awaiting(self) -> str:
        """What it still needs before it can alarm, in words with their units, for an
        operator (the console's Models page): a failure mode whose detector is learning is
        not watched yet, and a sparse stream can take hours to give a rare rate its
        baseline. Empty once :attr:`alarm_ready`. Changes nothing the detector will do."""
        return "" if self.alarm_ready else "more observations"

    @abc.abstractmethod
    def get_state(self) -> JsonState:
        """Return the state as a JSON-compatible mapping (a copy, safe to store)."""

    @abc.abstractmethod
    def set_state(self, state: JsonState) -> None:
        """Restore a state previously returned by ``get_state``."""

    def update_many(self, xs: Iterable[X]) -> list[Signal]:
        """Update with each observation in turn and return the signals raised, in order.

        Subclasses override this with a vectorised version where that helps; it must give
        the same signals and the same final state as calling ``update`` on each element.
        """
        signals: list[Signal] = []
        for x in xs:
            signal = self.update(x)
            if signal is not None:
                signals.append(signal)
        return signals

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        """Hyper-parameter sets the conformance suite builds this detector with.

        After river's ``_unit_test_params``: small settings that make every code path
        (warm-up, calibration, alarms) happen within a short stream.
        """
        return [{}]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        """A seeded stream of ``n`` valid inputs (with a change half-way) for the suite."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The hyper-parameters, as passed to the constructor."""
        return {k: copy.deepcopy(v) for k, v in vars(self).items() if not k.startswith("_")}

    def clone(self) -> Detector[X]:
        """A fresh detector with the same hyper-parameters."""
        return type(self)(**self.params())


def merge_categories(
    detector: str,
    kind: SignalKind,
    fired: list[tuple[str, Signal]],
    rank: Callable[[tuple[str, Signal]], Any],
) -> Signal:
    """One signal for the parts of a multi-category detector that alarmed on the same
    observation: the highest by ``rank`` (its category becomes the signal's ``feature``),
    the others listed in ``details`` as ``also:<category>`` with their effect sizes."""
    ranked = sorted(fired, key=rank, reverse=True)
    category, top = ranked[0]
    details = dict(top.details)
    for other, signal in ranked[1:]:
        details["also:" + other] = signal.effect_size
    return top.model_copy(
        update={"detector": detector, "kind": kind, "feature": category, "details": details}
    )
