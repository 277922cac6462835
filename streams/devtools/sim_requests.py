"""One block of simulated requests as numpy arrays: when they arrive, where they go, what
the active injections do to them, and every random draw their events are made from.

The simulator (:mod:`streams.devtools.simulate`) generates one hour of event time at a
time; this module holds the per-block, vectorised steps, apart from the iteration and
the ground-truth bookkeeping (there) and from the JSON rendering of the events
(:mod:`streams.devtools.sim_events`). The order of the draws from a generator is part of
the output (the same seed gives the same stream byte for byte): never reorder them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streams.devtools.scenario import HARM_CATEGORIES, Injection, Scenario

FEEDBACK_DELAY_S: Final = (60.0, 1800.0)
"""Feedback follows its output by a uniform delay in this range (seconds)."""
EVALUATION_DELAY_S: Final = (30.0, 600.0)
"""An evaluation follows its output by a uniform delay in this range (seconds)."""
TRAIL_S: Final = max(FEEDBACK_DELAY_S[1], EVALUATION_DELAY_S[1])
"""How far the last feedback or evaluation can fall after the simulated period ends."""

Array = npt.NDArray[Any]


@dataclass
class Traffic:
    """A block's requests: arrival time (seconds from the simulation start, sorted), and
    the index of each one's model, tenant, feature, locale, user and model version (0 =
    the model's base version, higher = a bad deploy's new version)."""

    t: Array
    model: Array
    tenant: Array
    feature: Array
    locale: Array
    user: Array
    version: Array


@dataclass
class Effects:
    """What the active injections do to each request: probabilities (toxic output,
    prompt injection, each harm category), multipliers (negative feedback, guardrail
    blocks), shifts (confidence, input drift, groundedness, judge score) and ``silent``
    (2: no events at all, 1: inputs only)."""

    p_toxic: Array
    neg_mult: Array
    p_inj: Array
    conf_shift: Array
    drift: Array
    ground_shift: Array
    judge_shift: Array
    block_mult: Array
    silent: Array
    harm_p: dict[str, Array]


@dataclass
class Draws:
    """The draws from the scenario's main generator: input features, output scores,
    feedback and LLM-judge evaluations, per request."""

    prompt_tokens: Array
    retrieval: Array
    channel: Array
    docs: Array
    injected: Array
    emb: Array
    conf: Array
    mod: Array
    inj_score: Array
    ground: Array
    latency_ms: Array
    out_tokens: Array
    label: Array
    has_fb: Array
    negative: Array
    fb_delay: Array
    fb_is_vote: Array
    fb_named: Array
    rating: Array
    has_eval: Array
    ev_delay: Array
    judge: Array


@dataclass
class LaterDraws:
    """The draws of signals added after the first streams were fixed (finish reasons and
    the output guardrail; harm-category flags are written into ``Draws.mod``)."""

    finish: Array
    has_guard: Array
    blocked: Array
    guard_score: Array
    t_guard: Array


def zipf_weights(k: int, a: float = 1.0) -> npt.NDArray[np.float64]:
    """Probabilities proportional to 1/rank**a: a few big tenants, locales..., many small."""
    w = 1.0 / np.arange(1, k + 1) ** a
    return np.asarray(w / w.sum(), dtype=np.float64)


def arrivals(s: Scenario, rng: np.random.Generator, t0: float, t1: float) -> Array:
    """Request times in ``[t0, t1)``, sorted: a Poisson process whose rate is constant
    within each minute and follows the daily cycle (peak at 16:00 UTC)."""
    minutes = np.arange(t0, t1, 60.0)
    widths = np.minimum(minutes + 60.0, t1) - minutes
    hour_of_day = ((s.start.timestamp() + minutes) / 3600.0) % 24.0
    rate = (s.events_per_hour / 3600.0) * (
        1.0 + s.daily_amplitude * np.sin(2 * np.pi * (hour_of_day - 10.0) / 24.0)
    )
    counts = rng.poisson(rate * widths)
    n = int(counts.sum())
    if n == 0:
        return np.empty(0)
    t: Array = np.repeat(minutes, counts) + rng.random(n) * np.repeat(widths, counts)
    t.sort()
    return t


def route(s: Scenario, rng: np.random.Generator, t: Array) -> Traffic:
    """Spread the requests over models (by share), segments (Zipf) and users (skewed)."""
    n = len(t)
    shares = np.array([m.share for m in s.models])
    model = rng.choice(len(s.models), size=n, p=shares / shares.sum())
    tenant = rng.choice(len(s.tenants), size=n, p=zipf_weights(len(s.tenants)))
    feature = rng.choice(len(s.features), size=n, p=zipf_weights(len(s.features)))
    locale = rng.choice(len(s.locales), size=n, p=zipf_weights(len(s.locales), 1.2))
    user = np.floor(s.users * rng.random(n) ** 2.5).astype(np.uint64)
    version = np.zeros(n, dtype=np.int64)
    return Traffic(t, model, tenant, feature, locale, user, version)


def apply_injection(
    inj: Injection, mask: Array, eff: Effects, traffic: Traffic, new_version: int
) -> None:
    """Apply one injection to the requests in ``mask`` (see ``INJECTION_TYPES``);
    ``new_version`` is the version index a bad deploy moves them to."""
    st = inj.strength
    if inj.type == "toxicity_spike":
        eff.p_toxic[mask] *= st
    elif inj.type == "downvote_spike":
        eff.neg_mult[mask] *= st
    elif inj.type == "confidence_drop":
        eff.conf_shift[mask] -= st
    elif inj.type == "input_drift":
        eff.drift[mask] += st
    elif inj.type == "prompt_injection_wave":
        eff.p_inj[mask] *= st
    elif inj.type == "hallucination_wave":
        eff.ground_shift[mask] -= st
    elif inj.type == "judge_score_drop":
        eff.judge_shift[mask] -= st
    elif inj.type == "guardrail_block_spike":
        eff.block_mult[mask] *= st
    elif inj.type in ("traffic_stop", "output_stop"):
        level = 2 if inj.type == "traffic_stop" else 1
        eff.silent[mask] = np.maximum(eff.silent[mask], level)
    elif inj.type == "harm_spike":
        if inj.harm_category == "toxicity":
            eff.p_toxic[mask] *= st
        else:
            eff.harm_p[inj.harm_category][mask] *= st
    else:  # bad_deploy
        traffic.version[mask] = new_version
        eff.p_toxic[mask] *= st
        eff.neg_mult[mask] *= st
        eff.conf_shift[mask] -= 0.04 * st
        eff.ground_shift[mask] -= 0.08 * st


def draw(s: Scenario, rng: np.random.Generator, traffic: Traffic, eff: Effects) -> Draws:
    """Inputs, outputs, feedback and judge evaluations, from the main generator, in one
    vectorised pass (every draw in its historical order)."""
    n = len(traffic.t)
    model, drift = traffic.model, eff.drift
    is_llm = np.array([m.kind == "llm" for m in s.models])[model]
    # Inputs.
    prompt_tokens = np.round(rng.lognormal(5.0 + 0.4 * drift, 0.6)).astype(np.int64) + 1
    retrieval = np.clip(rng.beta(6.0, 2.0, n) - 0.12 * drift, 0.0, 1.0)
    tilt = np.clip(0.15 * drift, 0.0, 0.5)
    u = rng.random(n)
    channel = np.where(u < 0.6 - tilt, 0, np.where(u < 0.9 - tilt / 2, 1, 2))
    docs = rng.integers(0, 500, size=(n, 3))
    injected = rng.random(n) < eff.p_inj
    emb = (
        rng.normal(0.0, 1.0, size=(n, s.embedding_dim))
        + (model[:, None] * 0.3)
        + 0.5 * drift[:, None]
    )
    # Outputs.
    ab = np.array([m.confidence_beta for m in s.models])[model]
    conf = np.clip(rng.beta(ab[:, 0], ab[:, 1]) + eff.conf_shift, 0.001, 0.999)
    toxic = rng.random(n) < eff.p_toxic
    mod = rng.beta(1.0, 80.0, size=(n, len(HARM_CATEGORIES)))
    mod[:, 0] = np.where(toxic, rng.beta(8.0, 2.0, n), rng.beta(1.0, 60.0, n))
    spill = toxic[:, None] & (rng.random((n, 2)) < 0.4)
    mod[:, 1:3] = np.where(spill, rng.beta(6.0, 3.0, (n, 2)), mod[:, 1:3])
    inj_score = np.where(injected, rng.beta(9.0, 1.5, n), rng.beta(1.0, 100.0, n))
    ground = np.clip(rng.beta(9.0, 1.5, n) + eff.ground_shift - 0.3 * injected, 0.0, 1.0)
    latency_ms = rng.lognormal(np.where(is_llm, 7.0, 3.5), 0.5)
    out_tokens = np.round(rng.lognormal(5.0, 0.7, n)).astype(np.int64) + 1
    label = rng.integers(0, 1_000_000, n)
    # Feedback and evaluations.
    p_neg = np.clip(
        s.downvote_rate * eff.neg_mult * (1 + 8 * toxic + 3 * injected + 2 * (conf < 0.4)),
        0,
        0.95,
    )
    has_fb = rng.random(n) < s.feedback_rate
    negative = rng.random(n) < p_neg
    fb_delay = rng.uniform(*FEEDBACK_DELAY_S, n)
    fb_is_vote = rng.random(n) < 0.85
    fb_named = rng.random(n) < 0.5
    rating = np.where(
        negative, rng.integers(1, 3, n), rng.choice([3, 4, 5], size=n, p=[0.15, 0.35, 0.5])
    )
    has_eval = is_llm & (rng.random(n) < s.evaluation_rate)
    ev_delay = rng.uniform(*EVALUATION_DELAY_S, n)
    judge = np.clip(ground + rng.normal(0.0, 0.05, n) + eff.judge_shift, 0.0, 1.0)
    return Draws(
        prompt_tokens, retrieval, channel, docs, injected, emb, conf, mod, inj_score,
        ground, latency_ms, out_tokens, label, has_fb, negative, fb_delay, fb_is_vote,
        fb_named, rating, has_eval, ev_delay, judge,
    )  # fmt: skip


def draw_later(
    s: Scenario, xrng: np.random.Generator, traffic: Traffic, eff: Effects, draws: Draws
) -> LaterDraws:
    """Harm-category flags (into ``draws.mod``), finish reasons and the output guardrail,
    from the block's own second generator ``xrng``."""
    n = len(traffic.t)
    mod = draws.mod
    for j, c in enumerate(HARM_CATEGORIES[1:], start=1):
        flagged = xrng.random(n) < np.clip(eff.harm_p[c], 0.0, 0.95)
        # Flagged, but below the critical single-event cutoff (0.97): rates, not pages.
        mod[:, j] = np.where(flagged, 0.5 + 0.45 * xrng.beta(4.0, 2.0, n), mod[:, j])
    u_fin = xrng.random(n)
    finish = np.where(
        u_fin < s.finish_length_rate,
        1,
        np.where(u_fin < s.finish_length_rate + s.finish_filter_rate, 2, 0),
    )
    is_llm = np.array([m.kind == "llm" for m in s.models])[traffic.model]
    has_guard = is_llm & (xrng.random(n) < s.guardrail_rate)
    blocked = xrng.random(n) < np.clip(s.guardrail_block_rate * eff.block_mult, 0.0, 0.95)
    guard_score = np.where(blocked, xrng.beta(8.0, 2.0, n), xrng.beta(1.0, 12.0, n))
    t_guard = traffic.t + draws.latency_ms / 1000.0 + xrng.uniform(0.05, 2.0, n)
    return LaterDraws(finish, has_guard, blocked, guard_score, t_guard)
