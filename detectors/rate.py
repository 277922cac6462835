"""Bernoulli rate-increase detectors: downvotes, toxic outputs, prompt-injection flags.

For a rate change ``p0 -> p1`` the CUSUM of log-likelihood ratios has the smallest
worst-case detection delay of all detectors with the same ARL0 (Lorden 1971; Moustakides
1986). :class:`BernoulliCusum` is that CUSUM, on an integer lattice so that its threshold
is set from the target ARL0 by an exact Markov-chain computation (:mod:`detectors.arl`)
instead of an approximation or a hand-picked number.

The baseline ``p0`` is given, or learned from the first ``warmup`` events of the stream
(no alarms during warm-up), then re-estimated from what the chart clears (and, while the
reference is young, from what it charts at rest) until ``max_reference``, and then frozen,
so that a slow drift cannot teach the detector that a bad rate is normal.
``p1 = p0 * (1 + relative_shift)`` is the smallest increase worth catching: the CUSUM is
optimal for it and still detects larger shifts quickly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
from scipy.stats import norm

from detectors.arl import (
    RATE_GRID_STEPS,
    SolveRequest,
    answers,
    bernoulli_kl,
    bernoulli_lattice,
    bernoulli_threshold_now,
    calibration_rate,
    grid_rate,
    solved,
    zero_drift_rate,
)
from detectors.base import (
    AT_REST,
    DEFAULT_ARL0,
    GROWTH_CHUNK,
    RECENT_BLOCKS,
    Detector,
    Direction,
    Excess,
    JsonState,
    Quantity,
    Signal,
    SignalKind,
)
from detectors.kernels import as_flags, bounded_path, capped_walk, reflected_walk

__all__ = ["BASELINE_CONFIDENCE", "BernoulliCusum", "DownvoteSpike", "PromptInjectionRate"]

BASELINE_CONFIDENCE = 0.95
"""Default ``baseline_confidence`` of the learned-rate CUSUMs: thresholds hold ARL0 even if
the true rate is at the 95 % upper bound of the estimate. At 0.8, bench/calibration.py
measured downvotes at a 3 % rate and the pooled harm test (~1.5 %) at 2.4x and 4.3x their
nominal false-alarm rate over millions of events with a new baseline per key (issue #19):
the false alarms of many keys are dominated by the few whose estimate fell low."""

DESIGN_Z = 2.326
"""Standard errors above a learned rate that its chart's design must still drift down at
(the one-sided 99 % bound; the threshold uses ``baseline_confidence``): the design, not
only the threshold, allows for an estimate that fell low (:meth:`BernoulliCusum._design_base`;
measurements in docs/validation.md, issue 19)."""

REESTIMATE_GROWTH = 4.0
"""A learned baseline is re-estimated each time its reference grows by this factor; each
re-estimate costs one threshold lookup or solve. (Doubling was measured against it:
docs/validation.md, "Stop 26" and "Stop 34".)"""

MATURE_WARMUPS = 4
"""A learned reference is young until it holds this many warm-ups' worth of observations
(and ``min_events`` events, for a prior's floor): until then a parent's prior floors its
baseline (:attr:`BernoulliCusum.prior_floored`), and without a prior it grows from what
its chart sees at rest (:attr:`BernoulliCusum.growing_at_rest`)."""

YOUNG_GROWTH = 2.0
"""A young reference growing at rest is re-estimated each time it doubles: its first
estimate is checked within two warm-ups' worth of charting, while a chart that a low
estimate keeps climbing is still below :data:`~detectors.base.AT_REST`."""

PRIOR_FOLLOW_TOLERANCE = 0.1
"""A floored key's prior follows its parent's baseline once it has moved by more than this
fraction (:meth:`BernoulliCusum.adopt_prior`); smaller moves would only cost re-estimates."""

_CHUNK = 8192
REST_UNBOUNDED = 1 << 62
""":meth:`BernoulliCusum.zero_room` of a chart whose baseline is frozen or given (and the
room of any test that a non-event cannot change)."""
EPISODE_CAP_NATS = 5.0
"""The episode statistic is capped at this log-likelihood ratio (nats): while a change
lasts it stays near the cap; after the change ends it returns to zero (the change is over)
after about ``EPISODE_CAP_NATS / KL(p0 || p1)`` baseline events, e.g. ~1000 events for a
1.5 % rate designed against a doubling: recovery is judged at roughly e^-5 odds of being
premature, less strictly than an alarm, because a quiet period follows it."""


def episode_cap(unit: float) -> int:
    """:data:`EPISODE_CAP_NATS` in lattice steps of ``unit`` nats (at least one)."""
    return max(1, math.ceil(EPISODE_CAP_NATS / unit))


class BernoulliCusum(Detector[bool]):
    """One-sided CUSUM for an increase of a Bernoulli rate, calibrated to a target ARL0.

    Parameters
    ----------
    p0
        Baseline rate; ``None`` to learn it online (see below).
    relative_shift
        Smallest relative increase worth catching: the design alternative is
        ``p1 = p0 * (1 + relative_shift)`` (1.0 = doubling).
    arl0
        Target expected number of events between false alarms.
    warmup
        Events used for the first estimate of ``p0`` when it is not given; no alarms
        before then.
    max_reference
        A learned baseline keeps growing from the observations its CUSUM clears (those
        before a return to zero: the excursion that led to an alarm is left out) and is
        re-estimated, with a new threshold, each time that reference quadruples
        (:data:`REESTIMATE_GROWTH`), until it holds ``max_reference`` observations.
        Then it is frozen, so a slow drift cannot teach the detector that a bad rate
        is normal. While young and without a prior, it also grows at rest
        (``merge_at_rest``, :attr:`growing_at_rest`); what was merged at rest stays
        merged if its excursion alarms later.
    min_rate
        Floor for ``p0``: very rare events need many lattice states and carry little
        information per event; below the floor the detector is conservative.
    baseline_confidence
        With a learned ``p0``, the threshold is set so that ARL0 >= ``arl0`` even if the
        true baseline is at the upper ``baseline_confidence`` bound of the estimate
        (normal approximation). An underestimated baseline is what makes false alarms
        come early; this guards against it while the reference is small, at a small
        cost in delay ("guaranteed conditional performance", Gandy & Kvaloy 2013).
        0.5 disables it.
    min_events
        Warm-up also waits for this many events (positives) in the reference: a 0.5 %
        rate learned from 1000 observations rests on ~5 events, and an estimate off by
        2x is exactly the shift the CUSUM is built to report (measured: such keys
        alarmed falsely after ~11k clean observations in bench/quality.py).
    merge_at_rest
        Whether a young reference without a prior grows from what the chart sees at
        rest (:attr:`growing_at_rest`). ``False`` is the rule before stop 69 (cleared
        observations only), kept for benchmarks to compare against
        (bench/rate_growth.py).

    ``update(x)`` takes a truthy/falsy outcome (e.g. ``True`` = downvote). On an alarm the
    Signal carries: ``statistic``/``threshold`` in nats of log-likelihood ratio, ``baseline``
    = p0, ``observed`` = rate since the change-point estimate (the CUSUM's last zero),
    ``effect_size`` = observed / baseline - 1, and ``first_index`` = that change point.
    After an alarm the statistic restarts from zero, so a persisting shift alarms again.

    >>> det = BernoulliCusum(p0=0.05, arl0=1e4)
    >>> round(det.threshold, 2)  # nats, exact for ARL0 >= 1e4
    4.86
    >>> signal = det.update_many([False] * 1000 + [True, False, False] * 30)[0]
    >>> signal.first_index, signal.last_index, round(signal.observed, 2)
    (1000, 1024, 0.36)
    """

    kind: ClassVar[SignalKind] = SignalKind.DOWNVOTE_RATE
    quantity: ClassVar[Quantity] = Quantity.RATE

    def __init__(
        self,
        p0: float | None = None,
        relative_shift: float = 1.0,
        arl0: float = DEFAULT_ARL0,
        warmup: int = 1000,
        max_reference: int = 50_000,
        min_rate: float = 1e-3,
        baseline_confidence: float = BASELINE_CONFIDENCE,
        min_events: int = 20,
        merge_at_rest: bool = True,
    ) -> None:
        self.p0 = p0
        self.relative_shift = relative_shift
        self.arl0 = arl0
        self.warmup = warmup
        self.max_reference = max_reference
        self.min_rate = min_rate
        self.baseline_confidence = baseline_confidence
        self.min_events = min_events
        self.merge_at_rest = merge_at_rest
        if not 0.5 <= baseline_confidence < 1.0:
            raise ValueError("baseline_confidence must be in [0.5, 1)")
        if relative_shift <= 0:
            raise ValueError("relative_shift must be > 0")
        if p0 is not None and not 0.0 < p0 < 1.0:
            raise ValueError("p0 must be in (0, 1)")
        if p0 is None and warmup < 1:
            raise ValueError("warmup must be >= 1 when p0 is not given")
        self._reset()

    # -- state -----------------------------------------------------------------------

    def _reset(self) -> None:
        self._n = 0  # observations seen
        self._ref_n = 0  # cleared and merged observations (the learned baseline's sample)
        self._ref_k = 0  # events among them
        self._next_cp = 0  # re-estimate the baseline when _ref_n reaches this (0: never)
        self._baseline = 0.0  # the estimated (or given) rate: what reports compare with
        self._design = 0.0  # the rate the lattice is designed at (>= the baseline)
        self._p1 = 0.0
        self._up = 0
        self._down = 0
        self._unit = 0.0
        self._h = 0  # lattice threshold; 0 while warming up
        self._h_bound = False  # _h is drift_bound's stand-in until the solve comes back
        self._pending: SolveRequest | None = None  # that solve (not state: asked again)
        self._asked = -1  # detectors.arl.answers() at the last poll (not state)
        self._cal_rate: float | None = None  # rate the threshold was calibrated at (None: p0)
        self._s = 0  # CUSUM statistic in lattice units
        self._start = 0  # first observation after the CUSUM's last zero
        self._k = 0  # events since ``_start``
        # The excursion's observations before ``_mt`` are in the reference already (merged
        # at rest, see ``_merge_due``), with ``_mk`` events; ``_recent``: the indices of the
        # events among the newest RECENT_BLOCKS blocks (maybe older ones: trimmed at events).
        self._mt = 0
        self._mk = 0
        self._recent: list[int] = []
        # Episode (see ``excess``): a shadow CUSUM that does not restart at an alarm and is
        # capped at EPISODE_CAP_NATS, so it stays up while a change lasts and returns to
        # zero after about that much baseline evidence; alarmed once the CUSUM alarms in it.
        self._e = 0
        self._ep_start = 0
        self._ep_k = 0
        self._ep_alarmed = False
        # Shrinkage prior (see ``adopt_prior``): pseudo-observations and pseudo-events.
        self._prior_n = 0.0
        self._prior_k = 0.0
        if self.p0 is not None:
            self._calibrate(self.p0)

    def _design_p1(self, design: float) -> float:
        return min(design * (1.0 + self.relative_shift), (1.0 + design) / 2.0)

    def _ceiling(self, design: float) -> float:
        """The highest true rate a chart designed at ``design`` is calibrated for: 0.8 of
        the way to the rate at which its CUSUM stops drifting down."""
        return design + 0.8 * (zero_drift_rate(design, self._design_p1(design)) - design)

    def _design_base(self, p0: float, upper: float) -> float:
        """The rate the chart is designed at: ``p0``, or the lowest grid rate above it
        whose chart is still calibrated for ``upper`` (the estimate's :data:`DESIGN_Z`
        bound).

        A chart for a small shift (1.5x) stops drifting down about 23 % above its
        design rate; a rate estimated from a few dozen events can be that far low. A
        threshold alone cannot make up for it (past the zero-drift rate the CUSUM climbs
        whatever its threshold, and a learned baseline that never clears never learns
        again), so the design itself moves up, just enough that the bound lies inside
        what it is calibrated for. Estimates from enough events keep ``p0``.
        """
        design = p0
        for _ in range(64):
            ceiling = self._ceiling(design)
            if upper <= ceiling or design >= 0.5:
                return design
            step = grid_rate(design * upper / ceiling)
            design = step if step > design else design * 2.0 ** (1.0 / RATE_GRID_STEPS)
        return design

    def _calibrate(self, p0: float, n_estimate: int = 0, keep: bool = False) -> None:
        """Design and calibrate the chart for baseline ``p0`` (estimated from
        ``n_estimate`` observations; 0: given). The evidence restarts, or with ``keep``
        the statistics keep their height in nats (a merge at rest, :meth:`_merge_excursion`)."""
        p0 = grid_rate(max(p0, self.min_rate))
        design = p0
        rate = None
        if n_estimate:
            se = math.sqrt(p0 * (1.0 - p0) / n_estimate)
            upper = p0 + float(norm.ppf(self.baseline_confidence)) * se
            design = self._design_base(p0, p0 + DESIGN_Z * se)
            # Stay clear of the rate at which the CUSUM stops drifting down.
            rate = calibration_rate(
                min(upper, self._ceiling(design)), design, self._design_p1(design)
            )
        p1 = self._design_p1(design)
        lat = bernoulli_lattice(design, p1)
        self._baseline, self._design, self._p1 = p0, design, p1
        self._up, self._down = lat.up, lat.down
        self._cal_rate = rate
        old_unit, self._unit = self._unit, lat.unit
        self._threshold()
        if keep:
            self._s = self._rescaled(self._s, old_unit, self._h - 1)
            self._e = self._rescaled(self._e, old_unit, episode_cap(self._unit))
            return
        self._s, self._start, self._k, self._mt, self._mk = 0, self._n, 0, self._n, 0
        self._recent = []  # a merge reads only events after the excursion's start
        self._e, self._ep_start, self._ep_k, self._ep_alarmed = 0, self._n, 0, False

    def _rescaled(self, value: int, old_unit: float, cap: int) -> int:
        """A statistic of ``value`` steps of ``old_unit`` nats in steps of the current unit:
        rounded down (never towards an alarm), but kept above zero if it was (a height is
        not a return to zero) and at most ``cap``."""
        if value <= 0:
            return 0
        return max(1, min(cap, math.floor(value * old_unit / self._unit)))

    def _warm(self) -> bool:
        """Warm-up ends after ``warmup`` observations holding at least ``min_events``
        events (a rare rate estimated from a handful of events is off by a factor that a
        CUSUM designed for a doubling mistakes for a change), or at ``max_reference``."""
        return self._ref_n >= self.max_reference or (
            self._ref_n >= self.warmup and self._ref_k >= self.min_events
        )

    def _learn(self, keep: bool = False) -> None:
        """(Re-)estimate the baseline from the reference and the prior's pseudo-events (if
        any): at S = 0, or at a merge (``keep``: the statistics keep their height)."""
        n, k = self._ref_n + self._prior_n, self._ref_k + self._prior_k
        rate = (k + 0.5) / (n + 1.0)
        if self.prior_floored:
            rate = max(rate, self._prior_k / self._prior_n)
        self._calibrate(rate, round(n), keep)
        # Without a prior this runs at >= warmup cleared events, so the next re-estimate
        # is at the growth factor x; with one, the detector's own warm-up length is the
        # first checkpoint.
        growth = YOUNG_GROWTH if self._young_without_prior() else REESTIMATE_GROWTH
        due = max(math.ceil(growth * self._ref_n), self.warmup)
        self._next_cp = due if self._ref_n < self.max_reference else 0

    def _merge_point(self, n: int) -> int:
        """The first observation a merge at observation count ``n`` would leave out of the
        reference: the newest :data:`RECENT_BLOCKS` blocks."""
        return n - RECENT_BLOCKS * GROWTH_CHUNK

    @property
    def growing_at_rest(self) -> bool:
        """Whether the reference also grows from what the chart sees at rest: while a
        learned baseline that is not frozen yet (``max_reference``) is young (under
        :data:`MATURE_WARMUPS` warm-ups of observations) and has no prior.

        A first estimate rests on a warm-up's few dozen events, and one that came out low
        is not corrected from cleared observations alone: a chart designed below its true
        rate rarely returns to zero, so what it clears is the quiet stretches, and the
        re-estimate that would lift it may not come before it climbs to a false alarm
        (a model's downvotes in the clean week: docs/validation.md, "Stop 69"). So while
        young, where a block of :data:`GROWTH_CHUNK` observations ends, with the CUSUM up
        but below :data:`AT_REST` of its exact threshold (not a deferred solve's stand-in)
        and no alarmed episode lasting, the excursion's observations older than the newest
        :data:`RECENT_BLOCKS` blocks join the reference once that makes a re-estimate due
        (:data:`YOUNG_GROWTH`). Only the height at the block's end is read: an excursion
        that came near the threshold and fell back is merged like any other.

        The statistic keeps its height in nats on the new design. That is an
        approximation (the evidence was weighed against the old baseline), and the new
        threshold may be lower in nats (measured down to 0.65x), so a merged chart can
        stand nearer its threshold than before, though under it.

        A change that begins within the first warm-ups after the warm-up is partly learned
        this way; from a key's own data it cannot be told from a warm-up that came out low.
        Once mature, what is merged would only add that risk, so a reference grows from
        cleared observations alone. A key with a prior is floored by its parent's rate
        instead (:attr:`prior_floored`): a segment's own change must stay out of it. A rate
        whose warm-up ran past the young length to gather ``min_events`` events (under
        about 1.7 % with 300 observations and 20 events) is mature from its first
        estimate, so it does not grow at rest."""
        return bool(self._next_cp) and self._young_without_prior()

    def _young_without_prior(self) -> bool:
        """:attr:`growing_at_rest` but for the baseline being learned and not frozen (read
        by :meth:`_learn` before it sets the next re-estimate)."""
        return (
            self.merge_at_rest and not self._prior_n and self._ref_n < MATURE_WARMUPS * self.warmup
        )

    def _follow_due(self) -> bool:
        """Whether a floor that moved with its parent's baseline waits to be applied
        (:meth:`adopt_prior`). It is applied at the next return to zero, or where a block
        ends at rest (:meth:`_merge_due`): the parent's rate is not the key's own evidence,
        and a floor the key's chart sits above does not bring it back to zero (in the clean
        week a feature's downvotes kept a parent's first estimate, 3.33 % against 5.8 %,
        for days after the parent had re-estimated, and paged)."""
        return self.prior_floored and 0 < self._next_cp <= self._ref_n

    def _merge_due(self) -> bool:
        """Whether the excursion's older observations join the reference (while it grows
        at rest), or a moved floor is applied (:meth:`_follow_due`), now."""
        if self._ep_alarmed or self._h_bound or not 0 < self._s < AT_REST * self._h:
            return False
        if self._follow_due():
            return True
        if not self.growing_at_rest:
            return False
        cut = self._merge_point(self._n)
        return cut > self._mt and self._ref_n + cut - self._mt >= self._next_cp

    def _merge_excursion(self) -> None:
        """Apply a moved floor (:meth:`_follow_due`), or join the excursion's observations
        before :meth:`_merge_point` to the reference; and re-estimate, the statistics
        keeping their height in nats (:meth:`_calibrate`). The change-point estimate
        (``_start``), and the events and rate a signal would report since it, stay."""
        if self._follow_due():
            self._learn(keep=True)  # nothing of its own: the floor moves
            return
        cut = self._merge_point(self._n)
        newest = sum(1 for i in self._recent if i >= cut)
        k = self._k - self._mk - newest
        self._ref_n += cut - self._mt
        self._ref_k += k
        self._mt, self._mk = cut, self._mk + k
        self._learn(keep=True)

    def _clear(self, n: int) -> None:
        """The CUSUM returned to zero at observation ``n``: the excursion's observations not
        merged yet join the reference, and the next one starts after ``n``."""
        self._ref_n += n + 1 - self._mt
        self._ref_k += self._k - self._mk
        self._s, self._start, self._k, self._mt, self._mk = 0, n + 1, 0, n + 1, 0

    def relearn(self, ref_n: int, ref_k: int) -> None:
        """Take the first ``ref_n`` observations since the reset (holding ``ref_k`` events)
        as the reference: a test found the ones after them unlike them
        (:mod:`detectors.warmup`), so they stay out of the baseline, whether the chart was
        still learning or had calibrated on them. It is calibrated as :meth:`_learn`
        calibrates any estimate (for the upper bound at ``ref_n`` observations, with the
        prior's if it has one), even on fewer than ``min_events`` events: the bound and
        the design's margin (:meth:`_design_base`) widen for a small sample. It starts
        afresh, evidence and episode, at the next observation."""
        if not 0 <= ref_k <= ref_n <= self._n:
            raise ValueError(f"relearn needs 0 <= events <= observations <= {self._n}")
        self._ref_n, self._ref_k = ref_n, ref_k
        self._learn()

    @property
    def prior_floored(self) -> bool:
        """Whether a parent's prior still floors the baseline: until its own sample is 4x
        the warm-up and holds ``min_events`` events, a sparse key's baseline does not go
        below its parent's. A rate estimated from a few hundred observations or a handful
        of events is often far low, and a chart designed below the true rate rarely
        clears, so it learns only from the stretches that happened to be quiet and stays
        low until it pages."""
        return bool(self._prior_n) and (
            self._ref_n < MATURE_WARMUPS * self.warmup or self._ref_k < self.min_events
        )

    def adopt_prior(self, rate: float, strength: float) -> bool:
        """Start from a parent key's baseline: a Beta prior worth ``strength`` observations
        at ``rate`` (shrinkage). While warming up without a prior, adopt it; while the
        prior floors the baseline (:attr:`prior_floored`), follow the parent's current
        ``rate``. Returns whether the prior was adopted or moved.

        The detector calibrates at once on the posterior mean of the prior and the
        events it has seen, with the threshold set for the upper ``baseline_confidence``
        bound at the posterior's effective sample size (``strength`` + own observations):
        a weak prior gives a conservative threshold, not false alarms. Its own events
        take over as they come: the baseline is re-estimated at ``warmup`` cleared
        observations and then each time they quadruple, as a mature learned baseline is.

        Following matters because a parent's baseline is young too when a segment adopts
        it: a model's first estimate from 20 events is often 1.5x off, and a floor held at
        that snapshot keeps the segment's chart designed above its true rate (and its
        lift understated) for hours. A move of more than :data:`PRIOR_FOLLOW_TOLERANCE`
        re-estimates at the CUSUM's next return to zero, or where a block ends with the
        chart at rest (:meth:`_follow_due`), its statistic keeping its height.
        """
        if strength <= 0 or not 0.0 < rate < 1.0 or self.prior_holds(rate):
            return False
        if self._prior_n:
            if not self.prior_floored:
                return False
            self._prior_k = float(rate) * self._prior_n
            if self._next_cp:  # a frozen baseline (max_reference) stays frozen
                self._next_cp = self._ref_n
            return True
        self._prior_n, self._prior_k = float(strength), float(rate) * strength
        self._learn()
        return True

    def prior_holds(self, rate: float) -> bool:
        """Whether ``adopt_prior(rate, ...)`` would leave this chart as it is whatever its
        own counts: it has a prior within :data:`PRIOR_FOLLOW_TOLERANCE` of ``rate``, or
        it calibrated without one. (Otherwise it may still not move: that depends on
        :attr:`prior_floored`.)"""
        if self._prior_n:
            old = self._prior_k / self._prior_n
            return abs(rate - old) <= PRIOR_FOLLOW_TOLERANCE * old
        return bool(self._h)

    _STATE_KEYS: ClassVar[tuple[str, ...]] = (
        "n",
        "ref_n",
        "ref_k",
        "next_cp",
        "baseline",
        "p1",
        "up",
        "down",
        "unit",
        "h",
        "s",
        "start",
        "k",
        "e",
        "ep_start",
        "ep_k",
        "ep_alarmed",
        "prior_n",
        "prior_k",
        "cal_rate",
        "design",
        "h_bound",
        "mt",
        "mk",
        "recent",
    )
    _OPTIONAL_KEYS: ClassVar[frozenset[str]] = frozenset(_STATE_KEYS[_STATE_KEYS.index("e") :])
    """Keys that state saved by an older release may lack (they keep their reset value):
    those from ``e`` on, added after the first release (new keys go at the end)."""

    def get_state(self) -> JsonState:
        state = {key: getattr(self, "_" + key) for key in self._STATE_KEYS}
        # A copy (the detector appends to its own), and only while a merge may read it.
        state["recent"] = list(self._recent) if self.growing_at_rest else []
        return state

    def set_state(self, state: JsonState) -> None:
        for key in self._STATE_KEYS:
            if key in self._OPTIONAL_KEYS and key not in state:
                continue  # state saved before episodes existed: the episode starts now
            setattr(self, "_" + key, state[key])
        if "ep_start" not in state:
            self._e, self._ep_start, self._ep_k, self._ep_alarmed = 0, self._n, 0, False
        if "design" not in state:
            self._design = self._baseline  # saved before designs could move up
        if "mt" not in state:
            # Saved before merges at rest: nothing of the excursion is merged, and the
            # newest events are not known (the first merge counts them as older ones).
            self._mt, self._mk, self._recent = self._start, 0, []
        else:
            self._recent = list(self._recent)  # not the caller's list: it is appended to
        self._pending = None
        if self._h_bound:
            self._threshold()  # saved on a stand-in: look for (or ask for) the exact one

    def set_arl0(self, arl0: float) -> None:
        """Retarget to a new ARL0 keeping the evidence: only the threshold changes.

        The statistic, the baseline and its reference sample stay as they are, so a key
        whose traffic changes (and with it its run length in events, see
        :mod:`streams.pipeline.budget`) does not forget what it has seen. The threshold
        comes from the same cache as every calibration (no solve for a known target).
        """
        if arl0 < 1.0:
            raise ValueError("arl0 must be >= 1")
        self.arl0 = arl0
        if self._h:
            self._threshold()

    def _threshold(self) -> None:
        """Set the threshold for the current design, ARL0 and calibration rate: exact, or
        a conservative stand-in while a deferred solve runs (:func:`detectors.arl.
        defer_solves`), replaced by the next update that finds the answer."""
        self._h, self._pending = bernoulli_threshold_now(
            self._design, self._p1, self.arl0, self._cal_rate
        )
        self._h_bound = self._pending is not None

    def _poll(self) -> None:
        """Take the exact threshold if the deferred solve has come back."""
        self._asked = answers()
        if self._pending is None:
            self._threshold()  # restored on a stand-in: the request was not kept
            return
        h = solved(self._pending)
        if h is not None:
            self._h, self._h_bound, self._pending = h, False, None

    # -- reading -----------------------------------------------------------------------

    @property
    def reference(self) -> tuple[int, int]:
        """Observations and events of its own in the reference: every observation while
        it learns, then the cleared ones and, while it grows at rest, the merged ones."""
        return self._ref_n, self._ref_k

    @property
    def calibrated(self) -> bool:
        """Whether the baseline is known (warm-up over) and alarms are possible."""
        return self._h > 0

    @property
    def learning(self) -> bool:
        return not self.calibrated

    def awaiting(self) -> str:
        """The warm-up's missing observations and events (:meth:`_warm`), e.g. ``"14 of
        20 flagged (or 1,441 of 50,000 observations)"``: it also ends at
        ``max_reference`` observations, whatever the events."""
        if self.calibrated:
            return ""
        n, k = self._ref_n, self._ref_k
        if n < self.warmup:
            seen = f"{n:,} of {self.warmup:,} observations"
            if k >= self.min_events:
                return seen
            return f"{seen}, {k} of {self.min_events} flagged"
        return f"{k} of {self.min_events} flagged (or {n:,} of {self.max_reference:,} observations)"

    @property
    def warmup_progress(self) -> float:
        """How far the warm-up is, 0 to 1 (1: calibrated): the nearer of its two ends
        (:meth:`_warm`). A detector of several rates names the one nearest its baseline."""
        if self.calibrated:
            return 1.0
        both = min(self._ref_n / self.warmup, self._ref_k / self.min_events)
        return min(1.0, max(both, self._ref_n / self.max_reference))

    @property
    def baseline(self) -> float:
        """The baseline rate p0 in use (0.0 during warm-up)."""
        return self._baseline

    @property
    def calibration_rate(self) -> float:
        """The rate at which the threshold holds ARL0: for an estimated baseline its upper
        confidence bound (rounded up onto the rate grid), else the baseline itself. Rates
        up to it are ones the chart is calibrated not to alarm on."""
        return self._baseline if self._cal_rate is None else max(self._baseline, self._cal_rate)

    @property
    def statistic(self) -> float:
        return self._s * self._unit

    @property
    def threshold(self) -> float:
        return self._h * self._unit if self._h else math.inf

    # -- updating ----------------------------------------------------------------------

    @property
    def seen(self) -> int:
        """Observations taken since the last reset: the index the next ``update`` gets."""
        return self._n

    def update(self, x: bool) -> Signal | None:
        if self._h_bound and self._asked != answers():
            self._poll()
        n = self._n
        self._n = n + 1
        if not self._h:
            self._ref_n += 1
            if x:
                self._ref_k += 1
            if self._warm():
                self._learn()
            return None
        self._episode(x, n)
        if x:
            if self._ref_n < MATURE_WARMUPS * self.warmup and self.growing_at_rest:
                self._note_event(n)  # (the first test: most charts are mature, cheaply)
            s = self._s + self._up
            self._k += 1
            if s >= self._h:
                signal = self._signal(n, s, self._start, self._k)
                self._s, self._start, self._k, self._mt, self._mk = 0, n + 1, 0, n + 1, 0
                self._ep_alarmed = True
                return signal
            self._s = s
        else:
            s = self._s - self._down
            if s <= 0:
                self._clear(n)
                if self._next_cp and self._ref_n >= self._next_cp:
                    self._learn()
                return None
            self._s = s
        if not self._n % GROWTH_CHUNK and self._merge_due():
            self._merge_excursion()
        return None

    def _note_event(self, n: int) -> None:
        """Observation ``n`` is an event: keep the indices of the newest blocks' events
        (while the reference grows at rest: only a merge reads them, and a reference that
        came of age grows at rest again only after a full re-estimate, which clears them;
        a batch that came of age in its course may note a few more, never read or saved)."""
        recent = self._recent
        recent.append(n)
        old = n + 1 - RECENT_BLOCKS * GROWTH_CHUNK
        if recent[0] < old:
            del recent[: next(j for j, i in enumerate(recent) if i >= old)]

    def zero_room(self) -> int:
        """How many non-events :meth:`rest` may take now. Inside that room a non-event
        changes only counters and the statistics' heights: what :meth:`update` would do is
        known without running it.

        - While warming up, a non-event only joins the reference until the warm-up can end.
        - Calibrated, each of the CUSUM and the episode's shadow CUSUM is either at rest
          (at zero: a non-event clears itself, joins the reference and restarts it) or up,
          and then a non-event moves it down by one step: the room ends on the non-event
          that would bring either back to zero (that one returns the excursion to the
          reference and may re-estimate the baseline, so it takes the full path), or at
          the next baseline re-estimate, or before the end of a block where a merge could
          be due (:meth:`_merge_due`)."""
        if not self._h:
            can_end = self._ref_k >= self.min_events
            end = min(self.warmup, self.max_reference) if can_end else self.max_reference
            return max(0, end - self._ref_n - 1)
        down = self._down
        if self._s:
            room = (self._s - 1) // down  # s - m * down stays > 0
            if self.growing_at_rest or self._follow_due():
                room = min(room, self._merge_room())
        elif self._k or self._start != self._n:
            return 0
        elif self._next_cp:
            room = max(0, self._next_cp - self._ref_n - 1)
        else:
            room = REST_UNBOUNDED
        if self._e:
            return min(room, (self._e - 1) // down)
        if self._ep_k or self._ep_alarmed or self._ep_start != self._n:
            return 0
        return room

    def _merge_room(self) -> int:
        """Observations before the first block end at which a merge could be due (from its
        counts alone: the statistic's height is not looked at)."""
        first = self._n + 1
        if not self._follow_due():
            first = max(
                first, self._next_cp - self._ref_n + self._mt + RECENT_BLOCKS * GROWTH_CHUNK
            )
        first = -(-first // GROWTH_CHUNK) * GROWTH_CHUNK
        return first - self._n - 1

    def rest(self, m: int) -> None:
        """``m`` non-events at once: exactly the state ``m`` calls of ``update(False)``
        leave, in O(1). Warming up, each joins the reference. Calibrated, a CUSUM that is
        up moves down by ``m`` steps; one at rest stays there, each non-event joining the
        reference and restarting its change-point estimate; the episode likewise. The
        caller keeps ``m`` within the :meth:`zero_room` it read when the chart last
        changed (the adaptive chart counts it down); it is not checked again here, on
        every wake of the hot path."""
        if m <= 0:
            return
        self._n += m
        if not self._h:
            self._ref_n += m
            return
        if self._s:
            self._s -= m * self._down
        else:
            self._ref_n += m
            self._start = self._mt = self._n
        if self._e:
            self._e -= m * self._down
        else:
            self._ep_start = self._n

    def _episode(self, x: bool, n: int) -> None:
        """Advance the episode's shadow CUSUM by observation ``n`` (calibrated only)."""
        e = self._e + (self._up if x else -self._down)
        if e <= 0:
            self._e, self._ep_start, self._ep_k, self._ep_alarmed = 0, n + 1, 0, False
            return
        self._e = min(e, episode_cap(self._unit))
        if x:
            self._ep_k += 1

    def _episodes(self, flags: np.ndarray[Any, np.dtype[np.bool_]], n0: int) -> None:
        """:meth:`_episode` over observations ``n0, n0 + 1, ...`` (vectorised, exact)."""
        cap = episode_cap(self._unit)
        walk = capped_walk(self._e, flags, self._up, self._down, cap)
        self._e = walk.value
        if walk.last_zero >= 0:
            self._ep_start, self._ep_k = n0 + walk.last_zero + 1, walk.hits
            self._ep_alarmed = False
        else:
            self._ep_k += walk.hits

    def excess(
        self, feature: str | None = None, direction: Direction = Direction.UP
    ) -> Excess | None:
        """Excess events over the baseline rate in the current episode (one rate, upward:
        the arguments are not used). ``surprise`` = m x KL(observed rate || baseline), in nats."""
        if not self._h:
            return None
        m = self._n - self._ep_start
        p0 = self._baseline
        observed = self._ep_k / m if m else p0
        return Excess(
            n=m,
            baseline=p0,
            observed=observed,
            excess=self._ep_k - p0 * m,
            surprise=m * bernoulli_kl(observed, p0) if observed > p0 else 0.0,
            alarmed=self._ep_alarmed,
        )

    @property
    def episode_alarmed(self) -> bool:
        """Whether the current episode has raised an alarm (:attr:`Excess.alarmed`)."""
        return self._ep_alarmed

    def update_many(self, xs: Iterable[bool]) -> list[Signal]:
        """Vectorised updates: the reflected walk is ``W - min(0, running min of W)``.

        Gives exactly the signals and final state of sequential ``update`` calls: each
        chunk is processed up to its first alarm, baseline re-estimate or merge, then
        resumed.
        """
        arr = as_flags(xs)
        signals: list[Signal] = []
        i, total = 0, arr.size
        if self._h_bound and self._asked != answers():
            self._poll()
        while i < total:
            if not self._h:
                take = self._warmup_take(arr[i:])
                self._ref_k += int(np.count_nonzero(arr[i : i + take]))
                self._ref_n += take
                self._n += take
                i += take
                if self._warm():
                    self._learn()
                continue
            seg = arr[i : i + _CHUNK]
            n0, start0, k0 = self._n, self._start, self._k
            stat = reflected_walk(self._s, np.where(seg, self._up, -self._down))
            pos = np.cumsum(seg)
            # An alarm comes on an event: a threshold lowered under the statistic (set_arl0,
            # an exact threshold replacing its stand-in) waits for one, as in ``update``.
            hits = np.flatnonzero((stat >= self._h) & seg)
            alarm = int(hits[0]) if hits.size else -1
            end = alarm if hits.size else seg.size - 1
            zeros = np.flatnonzero(stat[: end + 1] == 0)
            relearn = False
            if self._next_cp and zeros.size:
                # Reference after a zero at t: ref_n + (n0 + t + 1 - mt), mt the first
                # observation of the excursion not merged yet.
                due = zeros[zeros >= self._next_cp - self._ref_n - n0 - 1 + self._mt]
                if due.size:
                    end, relearn = int(due[0]), True
                    zeros = zeros[zeros <= end]
            noting = self.growing_at_rest
            growing = (noting or self._follow_due()) and not self._h_bound
            merge = self._first_merge(seg, stat, zeros, end) if growing else -1
            if merge >= 0:
                end, relearn = merge, False
                zeros = zeros[zeros <= end]
            if zeros.size:
                z = int(zeros[-1])
                self._ref_n += n0 + z + 1 - self._mt
                self._ref_k += k0 - self._mk + int(pos[z])
                start, k = n0 + z + 1, int(pos[end] - pos[z])
                self._mt, self._mk = start, 0
            else:
                start, k = start0, k0 + int(pos[end])
            last = n0 + end
            self._episodes(seg[: end + 1], n0)
            if noting:
                self._note_events(seg[: end + 1], n0)
            self._n = last + 1
            i += end + 1
            if relearn:
                self._s, self._start, self._k = 0, start, 0
                self._learn()
            elif end == alarm:
                signals.append(self._signal(last, int(stat[end]), start, k))
                self._s, self._start, self._k, self._mt, self._mk = 0, last + 1, 0, last + 1, 0
                self._ep_alarmed = True
            else:
                self._s, self._start, self._k = int(stat[end]), start, k
                if merge >= 0:
                    self._merge_excursion()
        return signals

    def _first_merge(
        self,
        seg: np.ndarray[Any, np.dtype[np.bool_]],
        stat: np.ndarray[Any, np.dtype[np.int64]],
        zeros: np.ndarray[Any, np.dtype[np.intp]],
        end: int,
    ) -> int:
        """The batch position of the first merge (:meth:`_merge_due`) at or before ``end``,
        or -1. A return to zero moves observations from the excursion to the reference, so
        the reference and the excursion's merged start differ by the same count all batch
        long; the start itself is that of the last zero before the block's end, and with
        it the reference, which may come of age (:attr:`growing_at_rest`) in the batch."""
        n0, width = self._n, RECENT_BLOCKS * GROWTH_CHUNK
        ends = np.arange((-(n0 + 1)) % GROWTH_CHUNK, end + 1, GROWTH_CHUNK)
        if not ends.size:
            return -1
        height = stat[ends]
        cut = n0 + ends + 1 - width
        ok = (height > 0) & (height < AT_REST * self._h)
        if not self._follow_due():  # (a follow's first zero ends the batch: no zero before)
            ok &= self._ref_n - self._mt + cut >= self._next_cp
            merged_to = np.full(ends.size, self._mt)
            if zeros.size:
                last_zero = np.searchsorted(zeros, ends, side="right") - 1
                merged_to = np.where(last_zero >= 0, n0 + zeros[last_zero] + 1, self._mt)
            ok &= cut > merged_to
            ok &= self._ref_n - self._mt + merged_to < MATURE_WARMUPS * self.warmup
        if self._ep_alarmed and ok.any():
            steps = np.where(seg[: end + 1], self._up, -self._down).astype(np.int64)
            ep_zeros = np.flatnonzero(bounded_path(self._e, steps, episode_cap(self._unit)) == 0)
            ok &= ends >= (ep_zeros[0] if ep_zeros.size else end + 1)
        hit = np.flatnonzero(ok)
        return int(ends[hit[0]]) if hit.size else -1

    def _note_events(self, flags: np.ndarray[Any, np.dtype[np.bool_]], n0: int) -> None:
        """:meth:`_note_event` for the events among observations ``n0, n0 + 1, ...``."""
        events = np.flatnonzero(flags)
        if not events.size:
            return
        last = n0 + int(events[-1])
        old = last + 1 - RECENT_BLOCKS * GROWTH_CHUNK
        tail = [int(j) + n0 for j in events[n0 + events >= old]]
        self._recent = [i for i in self._recent if i >= old] + tail

    def _warmup_take(self, rest: np.ndarray[Any, np.dtype[np.bool_]]) -> int:
        """Observations of ``rest`` that warm-up takes before :meth:`_warm` turns true (or
        all of them): up to the warm-up length, then up to ``min_events`` events or
        ``max_reference`` observations, whichever comes first."""
        if self._ref_n < self.warmup:
            return min(rest.size, self.warmup - self._ref_n)
        take = rest.size
        need = self.min_events - self._ref_k
        if need > 0:
            events = np.flatnonzero(rest)
            if events.size >= need:
                take = int(events[need - 1]) + 1
        else:
            take = 1
        return max(1, min(take, self.max_reference - self._ref_n))

    def _signal(self, last: int, s: int, start: int, k: int) -> Signal:
        m = last - start + 1
        observed = k / m
        return Signal(
            detector=type(self).__name__,
            kind=self.kind,
            statistic=s * self._unit,
            threshold=self._h * self._unit,
            baseline=self._baseline,
            observed=observed,
            effect_size=observed / self._baseline - 1.0,
            direction=Direction.UP,
            first_index=start,
            last_index=last,
            n_observations=m,
            details={
                "p1": self._p1,
                "arl0": float(self.arl0),
                "events": float(k),
                "calibration_rate": self.calibration_rate,
            },
        )

    # -- conformance -------------------------------------------------------------------

    @classmethod
    def _conformance_params(cls) -> list[dict[str, Any]]:
        return [
            {"warmup": 100, "arl0": 200.0, "max_reference": 800},
            {"p0": 0.1, "relative_shift": 0.5, "arl0": 500.0},
        ]

    @classmethod
    def _conformance_stream(cls, seed: int, n: int) -> list[Any]:
        rng = np.random.default_rng(seed)
        rate = np.where(np.arange(n) < n // 2, 0.1, 0.3)
        return [bool(v) for v in rng.random(n) < rate]


class DownvoteSpike(BernoulliCusum):
    """Downvote-rate increase: ``update(True)`` for a downvote, ``False`` for an upvote."""

    kind: ClassVar[SignalKind] = SignalKind.DOWNVOTE_RATE


class PromptInjectionRate(BernoulliCusum):
    """Rate increase of prompt-injection flags on inputs."""

    kind: ClassVar[SignalKind] = SignalKind.PROMPT_INJECTION_RATE
