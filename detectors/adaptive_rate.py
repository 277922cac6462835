"""Rate-increase detection robust to an unknown shift size: parallel Bernoulli CUSUMs.

A :class:`~detectors.rate.BernoulliCusum` is optimal for one design shift. When the size
of a change is unknown (a downvote rise of 50 % or a prompt-injection wave 20x the
baseline), :class:`AdaptiveBernoulliCusum` runs one CUSUM per design shift and splits the
false-alarm budget between them. It is a composition of BernoulliCusums, with nothing of
its own to calibrate, so it lives beside them rather than in :mod:`detectors.rate`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

from detectors.base import (
    DEFAULT_ARL0,
    Detector,
    Direction,
    Excess,
    JsonState,
    Quantity,
    Signal,
    SignalKind,
)
from detectors.kernels import as_flags
from detectors.rate import BASELINE_CONFIDENCE, BernoulliCusum
from detectors.recovery import RateRecovery
from detectors.warmup import ScanFinding, WarmupScan

__all__ = ["AdaptiveBernoulliCusum", "AdaptiveDownvoteSpike", "AdaptivePromptInjectionRate"]


class AdaptiveBernoulliCusum(Detector[bool]):
    """Robust to an unknown shift size: parallel CUSUMs for several ``relative_shifts``.

    A single CUSUM is optimal for its design ``p1`` and loses some speed when the true
    shift is much smaller or larger. Running one CUSUM per design shift, each at
    ``arl0 * len(relative_shifts)`` (false-alarm rates add, so the whole detector keeps
    ARL0 >= ``arl0``), costs about ``ln(m) / KL`` extra events at the best-matching shift
    and gains where one design would be badly mis-tuned. The parts do not reset each
    other; if several alarm on one event, the one furthest over its threshold is
    returned. Other parameters and the Signal are those of :class:`BernoulliCusum`
    (``details["p1"]`` names the design that fired, ``details["calibration_rate"]`` the
    rate at which its threshold holds ARL0, what its recovery test is judged back to).

    While the parts learn a baseline (no ``p0``, no parent's prior), a
    :class:`~detectors.warmup.WarmupScan` at ``arl0`` watches for a change without one,
    and it goes on for ``warmup`` observations after the warm-up ends: a change that
    begins shortly before the end completes the warm-up's ``min_events`` with its own
    events, faster than any test can tell it from the rate before. Its alarm
    re-estimates the baseline from the observations before the window that alarmed (the
    change's start to within the window's power-of-two length; the parts'
    :meth:`~detectors.rate.BernoulliCusum.relearn`), so the change is paged instead of
    learned as the normal rate, and the charts then judge it as after any alarm. The
    scan's false alarms add at most ``warmup / arl0`` to a key's expected count while the
    charts run beside it (none while they learn: they cannot alarm). Its Signal has
    ``details["warmup_scan"]`` = 1 and the window's p-value, events and length;
    ``baseline`` is the rate the charts start from.
    """

    kind: ClassVar[SignalKind] = SignalKind.DOWNVOTE_RATE
    quantity: ClassVar[Quantity] = Quantity.RATE

    def __init__(
        self,
        p0: float | None = None,
        relative_shifts: tuple[float, ...] = (0.5, 1.0, 3.0),
        arl0: float = DEFAULT_ARL0,
        warmup: int = 1000,
        max_reference: int = 50_000,
        min_rate: float = 1e-3,
        baseline_confidence: float = BASELINE_CONFIDENCE,
        merge_at_rest: bool = True,
    ) -> None:
        self.p0 = p0
        self.relative_shifts = relative_shifts
        self.arl0 = arl0
        self.warmup = warmup
        self.max_reference = max_reference
        self.min_rate = min_rate
        self.baseline_confidence = baseline_confidence
        self.merge_at_rest = merge_at_rest
        if not relative_shifts:
            raise ValueError("need at least one relative shift")
        self._reset()

    def _reset(self) -> None:
        self._last_alarm: int | None = None  # index of the observation of the last alarm
        self._recovery = RateRecovery()  # has the change of the last alarm ended?
        # Non-events taken while every part rests, not yet applied to the parts (see
        # ``update``), and how many more may be taken that way.
        self._idle = 0
        self._room = 0
        # A parent's rate that ``adopt_prior`` has found to change nothing: every part's
        # prior holds (BernoulliCusum.prior_holds) or no longer floors its baseline. It
        # stays so until a prior changes or a part re-learns (updates only make more
        # priors hold and fewer floor), so a repeat costs one comparison.
        self._held: float | None = None
        self._scan = WarmupScan(self.arl0) if self.p0 is None else None
        self._parts = [
            BernoulliCusum(
                p0=self.p0,
                relative_shift=shift,
                arl0=self.arl0 * len(self.relative_shifts),
                warmup=self.warmup,
                max_reference=self.max_reference,
                min_rate=self.min_rate,
                baseline_confidence=self.baseline_confidence,
                merge_at_rest=self.merge_at_rest,
            )
            for shift in self.relative_shifts
        ]
        self._settle()

    def _wake(self) -> None:
        """Apply the non-events taken while resting to every part (O(1) each)."""
        if self._idle:
            for d in self._parts:
                d.rest(self._idle)
            self._recovery.rest(self._idle)
            self._idle = 0

    def _settle(self) -> None:
        """After the parts changed: how many non-events may be taken as a count, and
        whether the parts are learning or ready (read for every observation by the
        pipeline, and unchanged by the non-events counted)."""
        self._room = min(self._recovery.room(), *(d.zero_room() for d in self._parts))
        calibrated = [d.calibrated for d in self._parts]
        self._learning = not all(calibrated)
        self._ready = any(calibrated)
        self._rate = next((d.baseline for d in self._parts if d.calibrated), None)
        scan = self._scan
        if scan is not None and self._ready and scan.until is None:
            scan.until = self.seen + self.warmup
        self._drop_spent_scan()

    def _drop_spent_scan(self) -> None:
        """Drop the scan once past its last observation: the charts judge alone."""
        if self._scan is not None and not self._scan.active(self.seen):
            self._scan = None

    def set_arl0(self, arl0: float) -> None:
        """Retarget every part to ``arl0 * len(relative_shifts)``, keeping its evidence
        (a threshold plays no part in a non-event: no need to wake the parts)."""
        self.arl0 = arl0
        for d in self._parts:
            d.set_arl0(arl0 * len(self.relative_shifts))
        if self._scan is not None:
            self._scan.set_arl0(arl0)

    @property
    def learning(self) -> bool:
        return self._learning

    @property
    def alarm_ready(self) -> bool:
        return self._ready

    def awaiting(self) -> str:
        """Its parts' warm-up (they learn from the same observations)."""
        if self._ready:
            return ""
        self._wake()
        return self._parts[0].awaiting()

    @property
    def warmup_progress(self) -> float:
        """Its parts' :attr:`BernoulliCusum.warmup_progress` (1 once one can alarm)."""
        if self._ready:
            return 1.0
        self._wake()
        return self._parts[0].warmup_progress

    def adopt_prior(self, parent: AdaptiveBernoulliCusum, strength: float) -> bool:
        """Each part starts from (or, while floored, follows) the parent's baseline (see
        :meth:`BernoulliCusum.adopt_prior`); the parent's first calibrated part gives it."""
        rate = parent._rate
        if rate is None or rate == self._held:
            return False
        if all(d.prior_holds(rate) for d in self._parts):
            self._held = rate
            return False
        self._wake()
        adopted = any([d.adopt_prior(rate, strength) for d in self._parts])
        self._held = None if adopted else rate
        if adopted:
            self._scan = None  # the charts start from the parent's baseline, not their own
        self._settle()
        return adopted

    @property
    def seen(self) -> int:
        """Observations taken since the last reset (the index of the next one)."""
        return self._parts[0].seen + self._idle

    @property
    def statistic(self) -> float:
        """Largest ratio statistic / threshold over the parts (alarm at 1)."""
        self._wake()
        return max(d.statistic / d.threshold for d in self._parts)

    @property
    def threshold(self) -> float:
        return 1.0

    def get_state(self) -> JsonState:
        self._wake()
        self._drop_spent_scan()  # (passed among counted non-events: as update_many does)
        return {
            "parts": [d.get_state() for d in self._parts],
            "last_alarm": self._last_alarm,
            "recovery": self._recovery.get_state(),
            "scan": self._scan.get_state() if self._scan is not None else None,
        }

    def set_state(self, state: JsonState) -> None:
        for d, st in zip(self._parts, state["parts"], strict=True):
            d.set_state(st)
        # Both absent in state of older releases: recovery is then judged by the episode.
        self._last_alarm = state.get("last_alarm")
        self._recovery.set_state(state.get("recovery"))
        self._idle = 0
        self._held = None
        scan = state.get("scan")
        if scan is not None:
            self._scan = WarmupScan.from_state(scan, self.arl0)
        elif "scan" not in state and not all(d.calibrated for d in self._parts):
            # Saved learning, before the scan existed: the warm-up so far enters it as
            # counts (every observation of it is in the parts' reference).
            ref_n, ref_k = self._parts[0].reference
            self._scan = WarmupScan(self.arl0, self.seen, ref_n, ref_k)
        else:
            self._scan = None
        self._settle()

    def excess(
        self, feature: str | None = None, direction: Direction = Direction.UP
    ) -> Excess | None:
        """The episode of the part designed for the smallest shift (its episode lasts
        longest), alarmed while any part's episode is, or while that episode holds the
        detector's last alarm; ``recovered`` once the recovery test armed by the last
        alarm has read that change as over (:mod:`detectors.recovery`).

        The second rule keeps a change alarmed after a part designed for a larger shift
        fired first: a 16x design that caught the start of a 5x wave drifts back to zero
        during the wave while the smaller designs have not alarmed yet, but the smallest
        design's episode, which began before that alarm, is still up."""
        self._wake()
        first = self._parts[0].excess()
        if first is None:
            return None
        alarmed = any(d.episode_alarmed for d in self._parts)
        if not alarmed and self._last_alarm is not None and first.n > 0:
            alarmed = self.seen - first.n <= self._last_alarm
        rec = self._recovery
        return first.model_copy(
            update={"alarmed": alarmed, "recovered": rec.recovered, "quiet_for": rec.quiet_for}
        )

    def update(self, x: bool) -> Signal | None:
        """One observation. A non-event that brings no part's CUSUM or episode back to
        zero and is due no re-estimate (:meth:`BernoulliCusum.zero_room`) changes nothing
        but counters and heights, so it is only counted, and applied to the parts when
        anything reads them or an event comes: most observations of a rare rate cost one
        comparison instead of an update per design."""
        if not x and self._room:
            self._idle += 1
            self._room -= 1
            return None
        self._wake()
        scan = self._scan
        if x and scan is not None and scan.active(self.seen):
            found = scan.event(self.seen)
            if found is not None:
                return self._scan_alarm(found, scan.threshold)
        fired = [s for d in self._parts if (s := d.update(x)) is not None]
        if not fired:
            self._recovery.step(x)
            self._settle()
            return None
        self._last_alarm = self.seen - 1
        signal = self._merge(fired)
        self._arm(signal)
        self._settle()
        return signal

    def _scan_alarm(self, found: ScanFinding, threshold: float) -> Signal:
        """The scan found a change ending at this event: the parts re-estimate their
        baseline from the observations before the window, this event is the charts'
        first observation, and the scan's finding is the signal; the scan ends."""
        m = found.last_index - found.first_index + 1
        self._held = None  # a part may be floored by its prior again
        for d in self._parts:
            d.relearn(found.reference_n, found.reference_k)
            d.update(True)  # the charts' first step; the scan's alarm speaks for it
        observed = found.events / m
        baseline = self._parts[0].baseline
        calibrated_at = self._parts[0].calibration_rate
        found_signal = Signal(
            detector=type(self).__name__,
            kind=self.kind,
            statistic=-found.log_p,
            threshold=threshold,
            baseline=baseline,
            observed=observed,
            effect_size=observed / baseline - 1.0,
            direction=Direction.UP,
            first_index=found.first_index,
            last_index=found.last_index,
            n_observations=m,
            p_value=math.exp(found.log_p),
            details={
                "warmup_scan": 1.0,
                "arl0": float(self.arl0),
                "events": float(found.events),
                "calibration_rate": calibrated_at,
            },
        )
        signal = self._merge([found_signal])  # as the parts' signals (a subclass names it)
        self._last_alarm = found.last_index
        self._arm(signal)
        self._scan = None
        self._settle()
        return signal

    def update_many(self, xs: Iterable[bool]) -> list[Signal]:
        arr = as_flags(xs)
        if self._scan is not None:
            # While scanning, one observation at a time (non-events are only counted);
            # the rest in columns.
            signals: list[Signal] = []
            for i in range(arr.size):
                self._drop_spent_scan()
                if self._scan is None:
                    return signals + self.update_many(arr[i:])
                if (s := self.update(bool(arr[i]))) is not None:
                    signals.append(s)
            return signals
        self._wake()
        n0 = self.seen
        by_index: dict[int, list[Signal]] = {}
        for d in self._parts:
            for s in d.update_many(arr):
                by_index.setdefault(s.last_index, []).append(s)
        signals = [self._merge(by_index[i]) for i in sorted(by_index)]
        if signals:
            # The last alarm re-arms the recovery test: only what follows it moves it.
            self._last_alarm = signals[-1].last_index
            self._arm(signals[-1])
            self._recovery.walk(arr[self._last_alarm + 1 - n0 :])
        else:
            self._recovery.walk(arr)
        self._settle()
        return signals

    def _arm(self, signal: Signal) -> None:
        """(Re-)arm the recovery test for the change ``signal`` reports, judged back to the
        rate at which the alarming chart holds its budget (its ``calibration_rate``): a
        baseline estimated from a few dozen events is uncertain by that much, and a rate
        the chart would not alarm on is not a change still going on."""
        back_to = max(signal.baseline, signal.details.get("calibration_rate", 0.0))
        self._recovery.arm(back_to, signal.observed, min(self.relative_shifts))

    def _merge(self, fired: list[Signal]) -> Signal:
        top = max(fired, key=lambda s: s.statistic / s.threshold)
        return top.model_copy(update={"detector": type(self).__name__, "kind": self.kind})

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        return [{"warmup": 100, "arl0": 200.0, "max_reference": 800}]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        return BernoulliCusum._conformance_stream(seed, n)


class AdaptiveDownvoteSpike(AdaptiveBernoulliCusum):
    """Downvote-rate increases of unknown size (parallel CUSUMs, see the base class)."""

    kind: ClassVar[SignalKind] = SignalKind.DOWNVOTE_RATE


class AdaptivePromptInjectionRate(AdaptiveBernoulliCusum):
    """Prompt-injection waves: the rate often jumps 10-20x, far beyond a doubling."""

    kind: ClassVar[SignalKind] = SignalKind.PROMPT_INJECTION_RATE
