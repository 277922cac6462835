"""The oracle of bench/quality.py: the delay of an exact CUSUM that knows the change.

For each injection, the benchmark records the monitored quantity of every event in the
injection's scope (a flag for rate failures, a score for shifts). The oracle is the CUSUM
that knows the true pre- and post-change values measured from those events, at the ARL0
the pipeline gave one test of that kind at the injection's key when the injection began
(the key's per-test ARL0 from the false-pages budget and its traffic, scaled for feedback
and evaluations like their detectors): by Lorden (1971) and Moustakides (1986) no detector
with that false-alarm rate has a smaller worst-case delay. Its expected delay is exact
(Markov chain, :func:`ramp_delay`): for flags, the Bernoulli CUSUM's lattice
(:func:`detectors.arl.bernoulli_lattice`); for scores, the Gaussian mean CUSUM for the
measured standardised shift on a fine lattice.

The oracle is fed the scope's observations as the pipeline gets them. An injection changes
requests from its start on, but feedback arrives 1-30 minutes after its output and
evaluations 0.5-10 minutes after (the simulator's lags): for the first half hour of a
downvote spike, part of the feedback the window holds is still about requests made before
it, at the old rate. The oracle's CUSUM is designed for the rate (or mean) of the changed
requests' observations and reads each observation at the value of its own request, in
the order they arrive. Outputs and inputs come with their request, so for those types this
is the abrupt change it always was.

An injection is *oracle-catchable* when the oracle's expected delay is shorter than the
events its window holds; the benchmark's goals are recall >= 0.95 over those and a
measured delay <= 1.3x the oracle's. The same CUSUM is also run on the window's own
observations (:func:`realized_delay`): the delay it achieved on the draw the pipeline
met, and *realised-catchable* when it alarmed inside the window; the benchmark prints
both readings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy.stats import norm

from detectors.arl import (
    bernoulli_lattice,
    bernoulli_threshold,
    lattice_arl,
    lattice_arls,
    lattice_threshold,
)
from detectors.rate import EPISODE_CAP_NATS
from streams.detection_settings import DetectionSettings

GOAL_DELAY_RATIO: Final = 1.3
MIN_BEFORE: Final = 50
"""Observations in scope before the change that the oracle needs to measure its rate or
mean; with fewer (feedback at a small tenant) it gives no delay."""

_BERNOULLI: Final = {
    "toxicity_spike",
    "harm_spike",
    "prompt_injection_wave",
    "downvote_spike",
    "hallucination_wave",
    "guardrail_block_spike",
}
_SCORES: Final = {"confidence_drop", "judge_score_drop", "input_drift"}


def rate_changed(p0: float, p1: float) -> bool:
    """Whether a measured rate change is one the oracle charts: up by more than 5 %, and
    below 1 (a rate of 1 has no Bernoulli lattice)."""
    return p0 * 1.05 < p1 < 1.0


def oracle_kinds() -> frozenset[str]:
    """Injection types the oracle can judge (bad_deploy mixes several signals: none)."""
    return frozenset(_BERNOULLI | _SCORES)


@dataclass
class Probe:
    """Collects the monitored quantity of in-scope events while a scenario is replayed.

    ``feed(line, in_scope_output)``: outputs are in scope by their labels; feedback and
    evaluations by the request id of an in-scope output (they often lack the labels). Each
    observation keeps its own event time and the time of the request it is about (an
    output's time less its latency), which decides whether an injection changed it.
    """

    kind: str
    category: str | None
    settings: DetectionSettings
    requests: dict[str, float] = field(default_factory=dict)  # response id -> request time
    times: list[float] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def feed(self, line: str, in_scope: bool) -> None:
        """One simulator line; ``in_scope``: its labels match the scope (the labels of
        feedback and evaluations are not needed: they join by request id)."""
        if self.kind not in _BERNOULLI | _SCORES:
            return
        if line.startswith('{"event_type":"output"'):
            if not in_scope:
                return
            ev = json.loads(line)
            request = _epoch(ev["timestamp"]) - float(ev.get("latency_ms", 0.0)) / 1000.0
            self.requests[ev["gen_ai.response.id"]] = request
        elif line.startswith('{"event_type":"input"'):
            if not in_scope or self.kind != "input_drift":
                return
            ev = json.loads(line)
            request = _epoch(ev["timestamp"])
        else:
            at = line.find('"gen_ai.response.id":"') + 22
            found = self.requests.get(line[at : line.index('"', at)])
            if found is None:
                return
            ev, request = json.loads(line), found
        value = self._value(ev)
        if value is not None:
            self.times.append(_epoch(ev["timestamp"]))
            self.request_times.append(request)
            self.values.append(value)

    def _value(self, ev: Mapping[str, Any]) -> Any:
        s = self.settings
        kind, etype = self.kind, ev["event_type"]
        if etype == "output":
            mod: Mapping[str, float] = ev.get("moderation", {})
            if kind == "toxicity_spike":
                return max(mod.values(), default=0.0) >= s.toxicity_cutoff
            if kind == "harm_spike":
                return mod.get(self.category or "", 0.0) >= s.toxicity_cutoff
            if kind == "prompt_injection_wave":
                return ev.get("prompt_injection", 0.0) >= s.prompt_injection_cutoff
            if kind == "hallucination_wave" and "groundedness" in ev:
                return ev["groundedness"] < s.groundedness_cutoff
            if kind == "confidence_drop" and "confidence" in ev:
                return float(ev["confidence"])
        if etype == "feedback" and kind == "downvote_spike":
            if "vote" in ev:
                return ev["vote"] == "down"
            return ev["rating"] <= s.downvote_max_rating
        if etype == "evaluation":
            if kind == "guardrail_block_spike" and ev.get("kind") == "guardrail":
                return ev.get("passed") is False
            if kind == "judge_score_drop" and ev.get("kind", "evaluation") == "evaluation":
                return ev.get("gen_ai.evaluation.score.value")
        if etype == "input" and kind == "input_drift":
            feats = ev.get("numeric_features", {})
            tokens = math.log1p(feats.get("prompt_tokens", 0))
            return [float(feats.get("retrieval_top_score", 0.0)), tokens]
        return None

    def result(self, start: float, end: float, arl0: float) -> dict[str, Any]:
        """The oracle's expected delay for a change at ``start`` lasting until ``end``:
        the CUSUM designed for the changed requests' observations, fed the window's
        observations in event-time order (module docstring)."""
        t = np.asarray(self.times)
        before = t < start
        during = (t >= start) & (t < end)
        n_during = int(during.sum())
        out: dict[str, Any] = {"arl0": arl0, "window_events": n_during}
        order = np.argsort(t[during], kind="stable")
        changed = (np.asarray(self.request_times)[during] >= start)[order]
        if not changed.any() or before.sum() < MIN_BEFORE:
            return out | {"delay_events": None}
        # Observations in the window about requests made before the change (late feedback).
        out["unchanged"] = int((~changed).sum())
        if self.kind in _BERNOULLI:
            x = np.asarray(self.values, dtype=bool)
            p0 = max(float(x[before].mean()), 1e-4)
            p1 = float(x[during][order][changed].mean())
            out |= {"p0": p0, "p1": p1}
            chart = _bernoulli_chart(p0, p1, arl0) if rate_changed(p0, p1) else None
        else:
            x = np.asarray(self.values, dtype=np.float64)
            if x.ndim == 1:
                x = x[:, None]
            mu, sd = x[before].mean(axis=0), x[before].std(axis=0, ddof=1)
            after = x[during][order][changed]
            d = float(np.max(np.abs((after.mean(axis=0) - mu) / np.maximum(sd, 1e-12))))
            out |= {"shift_sd": d}
            chart = _gaussian_chart(d, arl0) if d >= 0.05 else None
        delay = ramp_delay(*chart, changed) if chart else math.inf
        window_times = np.sort(t[during])
        out["delay_events"] = delay
        out["delay_minutes"] = _minutes_at(window_times, delay, start)
        out["catchable"] = bool(math.isfinite(delay) and delay < n_during)
        realized = None
        if chart is not None:
            if self.kind in _BERNOULLI:
                index = x[during][order].astype(np.int64) * (chart[0].size - 1)
            else:
                shifts = (after.mean(axis=0) - mu) / np.maximum(sd, 1e-12)
                j = int(np.argmax(np.abs(shifts)))
                z = np.sign(shifts[j]) * (x[during][order][:, j] - mu[j]) / max(sd[j], 1e-12)
                index = _gaussian_index(z, d)
            realized = realized_delay(index + chart[2], chart[3])
        out["realized_events"] = realized
        out["realized_minutes"] = (
            _minutes_at(window_times, float(realized), start) if realized is not None else None
        )
        out["recovery"] = self._recovery(t >= end, t, end, out)
        return out

    def _recovery(
        self, after: NDArray[np.bool_], t: NDArray[np.float64], end: float, out: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The recovery oracle: how soon after the change ended an exact test that knows
        the change can read it as over, at the evidence the pipeline's recovery tests ask
        for (:data:`detectors.rate.EPISODE_CAP_NATS`), on the scope's traffic after the
        end. Beside an incident still open when the scenario ends, it tells a slow
        recovery test from one that no test could have ended in time (a tenant of ten
        requests an hour, a rate of one in a hundred)."""
        n_after = int(after.sum())
        p1 = out.get("p1")
        if p1 is not None:
            p0 = float(out["p0"])
            expected = bernoulli_recovery_delay(p0, p1) if rate_changed(p0, p1) else math.inf
        elif out.get("shift_sd") is not None:
            expected = gaussian_recovery_delay(float(out["shift_sd"]))
        else:
            return {"events_after": n_after, "events": None, "minutes": None}
        minutes = _minutes_at(np.sort(t[after]), expected, end)
        return {
            "events_after": n_after,
            "events": expected if math.isfinite(expected) else None,
            "minutes": minutes,
            "recoverable": bool(math.isfinite(expected) and expected <= n_after),
        }


Chart = tuple[NDArray[np.float64], NDArray[np.float64], int, int]
"""A CUSUM on an integer lattice: the increments' pmf before and after the change, the
offset of the pmfs' first entry, and the threshold (see :func:`ramp_delay`)."""


def ramp_delay(
    before: NDArray[np.float64],
    after: NDArray[np.float64],
    offset: int,
    h: int,
    changed: NDArray[np.bool_],
) -> float:
    """Expected observations up to and including the alarm of ``S = max(0, S + Z)`` from
    ``S = 0`` (alarm at ``S >= h``), when observation ``i``'s increment has the pmf
    ``after`` if ``changed[i]`` and ``before`` if not, and ``after`` once ``changed`` ends.

    Exact: the distribution of ``S`` is carried through ``changed`` one observation at a
    time; what survives it still needs the chart's ARL from its state
    (:func:`detectors.arl.lattice_arls`). ``pmf[j]`` is ``P(Z = offset + j)``, ``offset
    <= 0``. With every observation changed this is the zero-state ARL at ``after``.
    """
    v = np.zeros(h)
    v[0] = 1.0
    expected = 0.0
    down = -offset  # an index of the convolution at or below this is S <= 0
    for i, is_changed in enumerate(changed):
        pmf = after if is_changed else before
        full = np.convolve(v, pmf)  # index m is S = m + offset
        expected += (i + 1) * float(full[h + down :].sum())
        v = np.zeros(h)
        v[0] = full[: down + 1].sum()
        v[1:] = full[down + 1 : down + h]
        if v.sum() < 1e-12:
            return expected
    return expected + changed.size * float(v.sum()) + float(v @ lattice_arls(after, offset, h))


def realized_delay(steps: NDArray[np.int64], h: int) -> int | None:
    """Observations up to and including the alarm of ``S = max(0, S + step)`` from ``S =
    0`` (alarm at ``S >= h``) on the realised increments ``steps``; None if it does not
    alarm on them. The oracle's delay on the data the pipeline saw: the expected delay
    averages over the luck of the draw, this shares it with the measured delay (a rare
    flag's realised rate in a 3-hour window often sits well off its mean)."""
    s = 0
    for i, step in enumerate(steps.tolist(), start=1):
        s = max(0, s + step)
        if s >= h:
            return i
    return None


def _bernoulli_chart(p0: float, p1: float, arl0: float) -> Chart:
    """The exact Bernoulli CUSUM for ``p0 -> p1`` at ``arl0`` as a lattice :data:`Chart`
    (the chart whose zero-state ARL is :func:`detectors.arl.bernoulli_cusum_delay`)."""
    lat = bernoulli_lattice(p0, p1)
    h = bernoulli_threshold(p0, p1, arl0)

    def pmf(p: float) -> NDArray[np.float64]:
        steps = np.zeros(lat.up + lat.down + 1)
        steps[0], steps[-1] = 1.0 - p, p
        return steps

    return pmf(p0), pmf(p1), -lat.down, h


def bernoulli_recovery_delay(p0: float, p1: float, nats: float = EPISODE_CAP_NATS) -> float:
    """Expected observations at the baseline ``p0`` until the exact CUSUM for the change
    back from ``p1`` reaches ``nats`` of evidence (from zero: the change had held it
    there). The mirror of the detection lattice: an observation without the flag steps
    up ``down`` units, a flag steps down ``up``."""
    lat = bernoulli_lattice(p0, p1)
    pmf = np.zeros(lat.up + lat.down + 1)
    pmf[0], pmf[-1] = p0, 1.0 - p0
    return lattice_arl(pmf, -lat.up, max(1, math.ceil(nats / lat.unit)))


def gaussian_recovery_delay(d: float, nats: float = EPISODE_CAP_NATS) -> float:
    """Expected observations at the old mean until the exact CUSUM for a score's return
    from a shift of ``d`` standard deviations reaches ``nats`` of evidence. By the
    Gaussian's symmetry its increments at the old mean are the detection chart's at the
    shifted one; a lattice step is worth ``d x spacing`` nats."""
    if d < 0.05:
        return math.inf
    res, _ = _gaussian_grid(d)
    _, after, offset = _gaussian_increments(d)
    return lattice_arl(after, offset, max(1, math.ceil(nats / (d * res))))


def _minutes_at(times: np.ndarray, delay: float, start: float) -> float | None:
    """Event-time minutes from ``start`` to the oracle's ``delay``-th observation among
    ``times`` (the window's observations, sorted; interpolated between neighbours).

    The measured delay is the event time of the pipeline's first trigger, so the oracle's
    delay is read off the same traffic. Converting it at the window's average rate instead
    overstated every ratio of an injection that began on the daily cycle's rising flank
    (the benchmark's injections start between 06:00 and 12:00, when traffic rises toward
    its 16:00 peak). Beyond the window it is extrapolated at the window's average rate.
    """
    if not math.isfinite(delay) or times.size == 0:
        return None
    last = times.size - 1
    if delay - 1 <= last:
        at = float(np.interp(max(delay - 1.0, 0.0), np.arange(times.size), times))
        return (at - start) / 60.0
    span = float(times[last]) - start
    return (span + (delay - 1 - last) * span / times.size) / 60.0


def gaussian_cusum_delay(d: float, arl0: float) -> float:
    """Expected delay (in observations) of the one-sided mean CUSUM for a shift of ``d``
    standard deviations of a Gaussian score, threshold set for ARL0 >= ``arl0``; exact for
    the chart on a lattice of ``d / 20`` (at least 0.025) standard deviations."""
    if d < 0.05:
        return math.inf
    _, after, offset, h = _gaussian_chart(d, arl0)
    return lattice_arl(after, offset, h)


def _gaussian_grid(d: float) -> tuple[float, NDArray[np.float64]]:
    """The spacing and the standardised scores :func:`_gaussian_chart` bins to (``d / 20``,
    at least 0.025, apart, out to ``8 + d``)."""
    res = max(d / 20.0, 0.025)
    span = 8.0 + d
    return res, np.arange(-span, span + res, res)


def _gaussian_index(z: NDArray[np.float64], d: float) -> NDArray[np.int64]:
    """The pmf index of :func:`_gaussian_chart` that each standardised score ``z`` falls
    in (its nearest grid point; the outer bins reach to infinity)."""
    res, grid = _gaussian_grid(d)
    index = np.rint((z - grid[0]) / res).astype(np.int64)
    return np.asarray(np.clip(index, 0, grid.size - 1), dtype=np.int64)


def _gaussian_increments(d: float) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """The increments ``z - d / 2`` of the mean CUSUM for a shift of ``d`` on the lattice
    of :func:`_gaussian_grid`: their pmfs at the old mean and at the shifted one, and the
    offset of the pmfs' first entry."""
    res, grid = _gaussian_grid(d)
    lo = round((grid[0] - d / 2.0) / res)

    def pmf(mean: float) -> NDArray[np.float64]:
        edges = np.concatenate([[-np.inf], grid[:-1] + res / 2, [np.inf]])
        p = np.diff(norm.cdf(edges, loc=mean))
        return np.asarray(p / p.sum(), dtype=np.float64)

    return pmf(0.0), pmf(d), lo


def _gaussian_chart(d: float, arl0: float) -> Chart:
    """The chart of :func:`gaussian_cusum_delay` (``d >= 0.05``) as a lattice :data:`Chart`."""
    res, _ = _gaussian_grid(d)
    k = d / 2.0
    before, after, lo = _gaussian_increments(d)
    guess = max(1, int(math.log(2 * k * k * arl0 + 1) / (2 * k) / res))
    h = lattice_threshold(before, lo, arl0, guess)
    return before, after, lo, h


LLR_RESOLUTION: Final = 0.02
"""Lattice step (nats) of :func:`location_llr_delay`'s CUSUM."""


def location_llr_delay(
    dist: Any, d: float, arl0: float, resolution: float = LLR_RESOLUTION
) -> float:
    """Expected delay (observations) of the exact likelihood-ratio CUSUM for a drop of
    ``d`` standard deviations of the continuous distribution ``dist`` (a frozen
    ``scipy.stats`` distribution): the detector Lorden's and Moustakides' optimality is
    about, for scores that are not Gaussian.

    :func:`gaussian_cusum_delay` is that CUSUM only for Gaussian scores. The simulator's
    scores are skewed (confidence is a Beta(12, 3) and others), so this is the check of
    whether the Gaussian oracle still says what the best detector achieves on them
    (bench/delay_parts.py prints both). The increment of an observation ``y`` is
    ``log f(y + delta) - log f(y)``, on a lattice of ``resolution`` nats, capped at
    ``log(arl0) + 10`` either way (beyond the threshold a larger step alarms or resets
    all the same); its pmf before and after the change is read off a fine grid of ``y``,
    and the threshold is exact for the pre-change pmf (:func:`lattice_threshold`)."""
    delta = d * float(dist.std())
    lo_x, hi_x = (float(v) for v in dist.ppf([1e-12, 1.0 - 1e-12]))
    edges = np.linspace(lo_x - delta, hi_x, 400_001)
    mids = (edges[:-1] + edges[1:]) / 2.0
    p_pre = np.diff(dist.cdf(edges))
    p_post = np.diff(dist.cdf(edges + delta))  # y = x - delta with x from dist
    cap = math.log(arl0) + 10.0
    with np.errstate(divide="ignore"):
        llr = dist.logpdf(mids + delta) - dist.logpdf(mids)
    llr = np.clip(np.nan_to_num(llr, nan=0.0, posinf=cap, neginf=-cap), -cap, cap)
    steps = np.round(llr / resolution).astype(np.int64)
    offset = int(steps.min())
    size = int(steps.max()) - offset + 1
    before = np.bincount(steps - offset, weights=p_pre, minlength=size)
    after = np.bincount(steps - offset, weights=p_post, minlength=size)
    before, after = before / before.sum(), after / after.sum()
    guess = max(1, int(math.log(arl0) / resolution))
    h = lattice_threshold(before, offset, arl0, guess)
    return lattice_arl(after, offset, h)


def oracle_arl0(kind: str, settings: DetectionSettings, per_test: float) -> float:
    """The ARL0 of one test of the detector that watches this injection type, in its own
    observations (feedback and evaluations see a fraction of the events)."""
    if kind == "downvote_spike":
        return per_test * settings.feedback_fraction
    if kind in ("judge_score_drop", "guardrail_block_spike"):
        return per_test * settings.evaluation_fraction
    return per_test


def _epoch(text: str) -> float:
    return float(np.datetime64(text.rstrip("Z"), "ms").astype(np.int64)) / 1000.0
