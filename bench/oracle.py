"""The oracle of bench/quality.py: the delay of an exact CUSUM that knows the change.

For each injection, the benchmark records the monitored quantity of every event in the
injection's scope (a flag for rate failures, a score for shifts). The oracle is the CUSUM
that knows the true pre- and post-change values measured from those events, at the ARL0
the pipeline gave one test of that kind at the injection's key when the injection began
(the key's per-test ARL0 from the false-pages budget and its traffic, scaled for feedback
and evaluations like their detectors): by Lorden (1971) and Moustakides (1986) no detector
with that false-alarm rate has a smaller worst-case delay. Its expected delay is exact
(Markov chain): :func:`detectors.arl.bernoulli_cusum_delay` for flags; for scores, the
Gaussian mean CUSUM for the measured standardised shift on a fine lattice
(:func:`detectors.arl.lattice_arl`).

An injection is *oracle-catchable* when the oracle's expected delay is shorter than the
events its window holds; the benchmark's goals are recall >= 0.95 over those and a
measured delay <= 1.3x the oracle's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from scipy.stats import norm

from detectors.arl import bernoulli_cusum_delay, lattice_arl, lattice_threshold
from streams.detection_settings import DetectionSettings

GOAL_DELAY_RATIO: Final = 1.3

_BERNOULLI: Final = {
    "toxicity_spike",
    "harm_spike",
    "prompt_injection_wave",
    "downvote_spike",
    "hallucination_wave",
    "guardrail_block_spike",
}
_SCORES: Final = {"confidence_drop", "judge_score_drop", "input_drift"}


def oracle_kinds() -> frozenset[str]:
    """Injection types the oracle can judge (bad_deploy mixes several signals: none)."""
    return frozenset(_BERNOULLI | _SCORES)


@dataclass
class Probe:
    """Collects the monitored quantity of in-scope events while a scenario is replayed.

    ``feed(line, in_scope_output)``: outputs are in scope by their labels; feedback and
    evaluations by the request id of an in-scope output (they often lack the labels).
    """

    kind: str
    category: str | None
    settings: DetectionSettings
    requests: set[str] = field(default_factory=set)
    times: list[float] = field(default_factory=list)
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
            self.requests.add(ev["gen_ai.response.id"])
        elif line.startswith('{"event_type":"input"'):
            if not in_scope or self.kind != "input_drift":
                return
            ev = json.loads(line)
        else:
            at = line.find('"gen_ai.response.id":"') + 22
            if line[at : line.index('"', at)] not in self.requests:
                return
            ev = json.loads(line)
        value = self._value(ev)
        if value is not None:
            self.times.append(_epoch(ev["timestamp"]))
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
        """The oracle's expected delay for a change at ``start`` lasting until ``end``."""
        t = np.asarray(self.times)
        before = t < start
        during = (t >= start) & (t < end)
        n_during = int(during.sum())
        out: dict[str, Any] = {"arl0": arl0, "window_events": n_during}
        if n_during == 0 or before.sum() < 50:
            return out | {"delay_events": None}
        if self.kind in _BERNOULLI:
            x = np.asarray(self.values, dtype=bool)
            p0, p1 = float(x[before].mean()), float(x[during].mean())
            p0 = max(p0, 1e-4)
            out |= {"p0": p0, "p1": p1}
            delay = bernoulli_cusum_delay(p0, p1, arl0) if p1 > p0 * 1.05 and p1 < 1 else math.inf
        else:
            x = np.asarray(self.values, dtype=np.float64)
            if x.ndim == 1:
                x = x[:, None]
            mu, sd = x[before].mean(axis=0), x[before].std(axis=0, ddof=1)
            d_all = (x[during].mean(axis=0) - mu) / np.maximum(sd, 1e-12)
            d = float(np.max(np.abs(d_all)))
            out |= {"shift_sd": d}
            delay = gaussian_cusum_delay(d, arl0)
        out["delay_events"] = delay
        out["delay_minutes"] = _minutes_at(np.sort(t[during]), delay, start)
        out["catchable"] = bool(math.isfinite(delay) and delay < n_during)
        return out


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
    res = max(d / 20.0, 0.025)
    k = d / 2.0
    span = 8.0 + d
    grid = np.arange(-span, span + res, res)
    lo = round((grid[0] - k) / res)

    def pmf(mean: float) -> np.ndarray:
        edges = np.concatenate([[-np.inf], grid[:-1] + res / 2, [np.inf]])
        p = np.diff(norm.cdf(edges, loc=mean))
        return np.asarray(p / p.sum(), dtype=np.float64)

    guess = max(1, int(math.log(2 * k * k * arl0 + 1) / (2 * k) / res))
    h = lattice_threshold(pmf(0.0), lo, arl0, guess)
    return lattice_arl(pmf(d), lo, h)


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
