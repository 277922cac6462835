"""``sentinel simulate``: realistic, reproducible traffic with injected failures and ground truth.

Requests arrive as a Poisson process whose rate follows a daily cycle; each request spreads
over several models, versions and segments (tenant, feature, locale) and yields an input
and an output event, user feedback on a fraction of outputs 1-30 minutes later, and an
evaluation on a fraction of LLM outputs. A few events are delivered late (out of
event-time order), as real pipelines do. Failures are injected at a chosen time, strength
and scope (see :data:`INJECTION_TYPES`); what was injected is written as ground truth.

Nothing reads the wall clock or global randomness: the same configuration and seed give
the same stream byte for byte. Event time is simulated, so a week takes seconds; with
``--rate`` the Kafka publisher paces itself in wall time. Generation is vectorised with
numpy one hour of event time at a time.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, TextIO

import numpy as np
import numpy.typing as npt
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from alerting.clock import parse_duration
from streams.kafka.security import KafkaSecurity, kafka_python_kwargs

InjectionType = Literal[
    "toxicity_spike",
    "downvote_spike",
    "confidence_drop",
    "input_drift",
    "prompt_injection_wave",
    "bad_deploy",
    "hallucination_wave",
    "judge_score_drop",
    "guardrail_block_spike",
    "harm_spike",
    "traffic_stop",
    "output_stop",
]
INJECTION_TYPES: Final[dict[str, str]] = {
    "toxicity_spike": "toxic-output probability x strength (default 5)",
    "downvote_spike": "negative-feedback probability x strength (default 4)",
    "confidence_drop": "confidence lowered by strength (default 0.15)",
    "input_drift": "input features shifted by strength standard deviations (default 1.5)",
    "prompt_injection_wave": "prompt-injection probability x strength (default 20)",
    "bad_deploy": "a new version takes the scope's traffic; worse on toxicity, downvotes, "
    "confidence and groundedness by strength (default 3)",
    "hallucination_wave": "groundedness (and the judge scores that follow it) lowered by "
    "strength (default 0.2)",
    "judge_score_drop": "LLM-judge scores lowered by strength (default 0.1), outputs unchanged",
    "guardrail_block_spike": "guardrail block probability x strength (default 4)",
    "harm_spike": "probability of outputs flagged in the injection's category (default "
    "self_harm) x strength (default 5)",
    "traffic_stop": "the scope sends no events at all (strength unused)",
    "output_stop": "the scope's inputs still arrive, its outputs (and their feedback and "
    "evaluations) do not (strength unused)",
}
DEFAULT_STRENGTH: Final[dict[str, float]] = {
    "toxicity_spike": 5.0,
    "downvote_spike": 4.0,
    "confidence_drop": 0.15,
    "input_drift": 1.5,
    "prompt_injection_wave": 20.0,
    "bad_deploy": 3.0,
    "hallucination_wave": 0.2,
    "judge_score_drop": 0.1,
    "guardrail_block_spike": 4.0,
    "harm_spike": 5.0,
    "traffic_stop": 1.0,
    "output_stop": 1.0,
}
SIGNALS: Final[dict[str, list[str]]] = {
    "toxicity_spike": ["toxicity_rate"],
    "downvote_spike": ["downvote_rate"],
    "confidence_drop": ["confidence"],
    "input_drift": ["input_drift"],
    "prompt_injection_wave": ["prompt_injection_rate"],
    "bad_deploy": ["toxicity_rate", "downvote_rate", "confidence", "groundedness"],
    "hallucination_wave": ["hallucination_rate", "evaluation_score", "evaluation_fail_rate"],
    "judge_score_drop": ["evaluation_score", "evaluation_fail_rate"],
    "guardrail_block_spike": ["guardrail_block_rate"],
    "harm_spike": ["toxicity_rate"],
    "traffic_stop": ["traffic_silence"],
    "output_stop": ["traffic_silence"],
}
JUDGE: Final = ("llm-judge", "groundedness")
"""The simulated LLM judge: (evaluator, metric name)."""
GUARDRAIL: Final = ("guardrail/pii", "pii_leak")
"""The simulated output guardrail: (evaluator, check name)."""
SCOPE_KEYS: Final = ("model", "version", "tenant", "feature", "locale")
GROUND_TRUTH_FORMAT: Final = "sentinel.ground-truth/1"

Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@+-]{1,64}$")]
_BLOCK_S: Final = 3600.0
_CATEGORIES: Final = ("toxicity", "hate", "harassment", "self_harm", "sexual", "violence")
HARM_CATEGORIES: Final = _CATEGORIES
"""Moderation categories the simulator scores (a harm_spike names one of them)."""
_CHANNELS: Final = ("web", "mobile", "api")
_FINISH: Final = ("stop", "length", "content_filter")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Frozen):
    name: Token
    version: Token
    share: float = Field(gt=0)
    kind: Literal["llm", "classifier"] = "llm"
    labels: list[Token] = Field(default_factory=list)
    confidence_beta: tuple[float, float] = (12.0, 3.0)


class Injection(_Frozen):
    """One injected failure. ``start`` is an offset from the simulation start."""

    type: InjectionType
    start: timedelta
    duration: timedelta
    strength: float = Field(gt=0)
    scope: dict[str, Token] = Field(default_factory=dict)
    new_version: Token | None = None
    category: Literal["toxicity", "hate", "harassment", "self_harm", "sexual", "violence"] = Field(
        default="self_harm", description="The moderation category of a harm_spike."
    )


def _default_models() -> list[ModelSpec]:
    return [
        ModelSpec(name="support-chat", version="v12", share=0.5),
        ModelSpec(name="summarizer", version="v3", share=0.25, confidence_beta=(9.0, 2.0)),
        ModelSpec(
            name="intent-classifier",
            version="v7",
            share=0.25,
            kind="classifier",
            labels=["billing", "technical", "account", "other"],
            confidence_beta=(8.0, 2.0),
        ),
    ]


class Scenario(_Frozen):
    """Everything that determines the stream. A JSON or TOML scenario file holds these keys."""

    seed: int = Field(default=0, ge=0)
    start: AwareDatetime = datetime(2025, 1, 6, tzinfo=UTC)
    duration: timedelta = timedelta(days=1)
    events_per_hour: float = Field(default=3600.0, gt=0, description="Requests per hour.")
    daily_amplitude: float = Field(default=0.6, ge=0, lt=1)
    models: list[ModelSpec] = Field(default_factory=_default_models, min_length=1)
    tenants: list[Token] = ["acme", "globex", "initech", "umbrella", "hooli"]
    features: list[Token] = ["chat", "search", "email"]
    locales: list[Token] = ["en-US", "de-DE", "fr-FR", "es-ES", "ja-JP"]
    users: int = Field(default=20_000, ge=1)
    feedback_rate: float = Field(default=0.2, ge=0, le=1)
    evaluation_rate: float = Field(default=0.1, ge=0, le=1)
    downvote_rate: float = Field(default=0.05, ge=0, le=1)
    toxicity_rate: float = Field(default=0.015, ge=0, le=1)
    prompt_injection_rate: float = Field(default=0.005, ge=0, le=1)
    late_fraction: float = Field(default=0.03, ge=0, le=1)
    embedding_dim: int = Field(default=8, ge=0, le=256)
    injections: list[Injection] = Field(default_factory=list)
    harm_rates: dict[str, float] = Field(
        default_factory=lambda: {
            "hate": 0.003,
            "harassment": 0.004,
            "self_harm": 0.004,
            "sexual": 0.005,
            "violence": 0.004,
        },
        description="Base probability that an output is flagged in each moderation category "
        "(besides toxicity_rate); flagged scores stay below the critical cutoff 0.97.",
    )
    guardrail_rate: float = Field(
        default=0.1, ge=0, le=1, description="LLM outputs checked by the output guardrail."
    )
    guardrail_block_rate: float = Field(default=0.03, ge=0, le=1)
    finish_length_rate: float = Field(default=0.01, ge=0, le=1)
    finish_filter_rate: float = Field(default=0.004, ge=0, le=1)


def _check_harm_rates(scenario: Scenario) -> None:
    for cat, rate in scenario.harm_rates.items():
        if cat not in _CATEGORIES[1:]:
            raise ValueError(f"harm_rates: unknown category {cat!r}; one of {_CATEGORIES[1:]}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"harm_rates: {cat} = {rate} is not a probability")


def parse_injection(spec: str) -> Injection:
    """``type:start:duration[:strength[:scope]]``, e.g.
    ``toxicity_spike:2d:6h:5:model=support-chat,tenant=acme``. Empty strength = default."""
    parts = spec.split(":", 4)
    if len(parts) < 3:
        raise ValueError(f"injection {spec!r}: expected type:start:duration[:strength[:scope]]")
    kind = parts[0]
    if kind not in INJECTION_TYPES:
        raise ValueError(f"unknown injection type {kind!r}; one of {', '.join(INJECTION_TYPES)}")
    strength = float(parts[3]) if len(parts) > 3 and parts[3] else DEFAULT_STRENGTH[kind]
    scope: dict[str, str] = {}
    extra: dict[str, str] = {}
    if len(parts) > 4 and parts[4]:
        for item in parts[4].split(","):
            key, sep, value = item.partition("=")
            if sep and key == "category":
                extra["category"] = value  # harm_spike's category, e.g. category=self_harm
                continue
            if not sep or key not in SCOPE_KEYS:
                raise ValueError(f"scope item {item!r}: use key=value, key in {SCOPE_KEYS}")
            scope[key] = value
    return Injection.model_validate(
        {
            "type": kind,
            "start": parse_duration(parts[1]),
            "duration": parse_duration(parts[2]),
            "strength": strength,
            "scope": scope,
            **extra,
        }
    )


def _next_version(version: str) -> str:
    m = re.fullmatch(r"(.*?)(\d+)", version)
    return f"{m.group(1)}{int(m.group(2)) + 1}" if m else f"{version}-next"


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class Simulator:
    """Generates the stream for a :class:`Scenario`. Iterate :meth:`lines` (JSONL, in
    delivery order); :meth:`ground_truth` describes what was injected."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._check()
        self.counts: dict[str, int] = {
            "requests": 0,
            "input": 0,
            "output": 0,
            "feedback": 0,
            "evaluation": 0,
            "late": 0,
        }
        self._affected = [0] * len(scenario.injections)
        self._versions: list[list[str]] = []  # per model: [base, new versions...]
        self._new_version_idx: list[int] = []
        self._scopes: list[dict[str, str]] = []
        for m in scenario.models:
            self._versions.append([m.version])
        for inj in scenario.injections:
            if inj.type == "bad_deploy":
                mi = self._model_index(inj.scope.get("model", scenario.models[0].name))
                new = inj.new_version or _next_version(scenario.models[mi].version)
                self._versions[mi].append(new)
                self._new_version_idx.append(len(self._versions[mi]) - 1)
                self._scopes.append({**inj.scope, "model": scenario.models[mi].name})
            else:
                self._new_version_idx.append(0)
                self._scopes.append(dict(inj.scope))

    def _model_index(self, name: str) -> int:
        for i, m in enumerate(self.scenario.models):
            if m.name == name:
                return i
        raise ValueError(f"unknown model {name!r} in an injection scope")

    def _check(self) -> None:
        s = self.scenario
        _check_harm_rates(s)
        values = {
            "model": {m.name for m in s.models},
            "version": {m.version for m in s.models},
            "tenant": set(s.tenants),
            "feature": set(s.features),
            "locale": set(s.locales),
        }
        for inj in s.injections:
            for key, value in inj.scope.items():
                if key not in values:
                    raise ValueError(f"scope key {key!r} not one of {SCOPE_KEYS}")
                if value not in values[key]:
                    raise ValueError(f"scope {key}={value!r} matches no simulated traffic")

    # ------------------------------------------------------------------ generation
    def lines(self) -> Iterator[str]:
        """The stream as JSON lines (no trailing newline), in delivery order."""
        s = self.scenario
        rng = np.random.default_rng(s.seed)
        total_s = s.duration.total_seconds()
        start_ms = int(s.start.timestamp() * 1000)
        pend_t: npt.NDArray[np.float64] = np.empty(0)
        pend_lines: list[str] = []
        block_start = 0.0
        while block_start < total_s:
            block_end = min(block_start + _BLOCK_S, total_s)
            new_t, new_lines = self._block(rng, block_start, block_end, start_ms)
            all_t = np.concatenate([pend_t, new_t])
            all_lines = pend_lines + new_lines
            order = np.argsort(all_t, kind="stable")
            ready = all_t[order] < block_end
            for i in order[ready]:
                yield all_lines[i]
            keep = order[~ready]
            pend_t = all_t[keep]
            pend_lines = [all_lines[i] for i in keep]
            block_start = block_end
        yield from pend_lines  # already sorted: late feedback after the end

    def _block(
        self, rng: np.random.Generator, t0: float, t1: float, start_ms: int
    ) -> tuple[npt.NDArray[np.float64], list[str]]:
        s = self.scenario
        # Arrivals: piecewise-constant Poisson rate per minute with a daily cycle.
        minutes = np.arange(t0, t1, 60.0)
        widths = np.minimum(minutes + 60.0, t1) - minutes
        hour_of_day = ((s.start.timestamp() + minutes) / 3600.0) % 24.0
        rate = (s.events_per_hour / 3600.0) * (
            1.0 + s.daily_amplitude * np.sin(2 * np.pi * (hour_of_day - 10.0) / 24.0)
        )
        counts = rng.poisson(rate * widths)
        n = int(counts.sum())
        if n == 0:
            return np.empty(0), []
        t = np.repeat(minutes, counts) + rng.random(n) * np.repeat(widths, counts)
        t.sort()
        first = self.counts["requests"]
        self.counts["requests"] += n

        shares = np.array([m.share for m in s.models])
        model = rng.choice(len(s.models), size=n, p=shares / shares.sum())
        tenant = rng.choice(len(s.tenants), size=n, p=_zipf_weights(len(s.tenants)))
        feature = rng.choice(len(s.features), size=n, p=_zipf_weights(len(s.features)))
        locale = rng.choice(len(s.locales), size=n, p=_zipf_weights(len(s.locales), 1.2))
        user = np.floor(s.users * rng.random(n) ** 2.5).astype(np.uint64)
        version = np.zeros(n, dtype=np.int64)

        p_toxic = np.full(n, s.toxicity_rate)
        neg_mult = np.ones(n)
        p_inj = np.full(n, s.prompt_injection_rate)
        conf_shift = np.zeros(n)
        drift = np.zeros(n)
        ground_shift = np.zeros(n)
        judge_shift = np.zeros(n)
        block_mult = np.ones(n)
        silent = np.zeros(n, dtype=np.int8)  # 2: no events, 1: no outputs (inputs kept)
        harm_p = {c: np.full(n, s.harm_rates.get(c, 0.0)) for c in _CATEGORIES[1:]}
        base_scope = {"model": model, "tenant": tenant, "feature": feature, "locale": locale}
        names = {
            "model": [m.name for m in s.models],
            "tenant": s.tenants,
            "feature": s.features,
            "locale": s.locales,
        }
        for k, inj in enumerate(s.injections):
            a = inj.start.total_seconds()
            b = a + inj.duration.total_seconds()
            mask = (t >= a) & (t < b)
            for key, value in self._scopes[k].items():
                if key == "version":
                    vm = np.array([m.version == value for m in s.models])
                    mask &= vm[model] & (version == 0)
                else:
                    mask &= base_scope[key] == names[key].index(value)
            self._affected[k] += int(mask.sum())
            st = inj.strength
            if inj.type == "toxicity_spike":
                p_toxic[mask] *= st
            elif inj.type == "downvote_spike":
                neg_mult[mask] *= st
            elif inj.type == "confidence_drop":
                conf_shift[mask] -= st
            elif inj.type == "input_drift":
                drift[mask] += st
            elif inj.type == "prompt_injection_wave":
                p_inj[mask] *= st
            elif inj.type == "hallucination_wave":
                ground_shift[mask] -= st
            elif inj.type == "judge_score_drop":
                judge_shift[mask] -= st
            elif inj.type == "guardrail_block_spike":
                block_mult[mask] *= st
            elif inj.type in ("traffic_stop", "output_stop"):
                silent[mask] = np.maximum(silent[mask], 2 if inj.type == "traffic_stop" else 1)
            elif inj.type == "harm_spike":
                if inj.category == "toxicity":
                    p_toxic[mask] *= st
                else:
                    harm_p[inj.category][mask] *= st
            else:  # bad_deploy
                version[mask] = self._new_version_idx[k]
                p_toxic[mask] *= st
                neg_mult[mask] *= st
                conf_shift[mask] -= 0.04 * st
                ground_shift[mask] -= 0.08 * st
        np.clip(p_toxic, 0.0, 0.95, out=p_toxic)
        np.clip(p_inj, 0.0, 0.95, out=p_inj)

        is_llm = np.array([m.kind == "llm" for m in s.models])[model]
        # Inputs.
        prompt_tokens = np.round(rng.lognormal(5.0 + 0.4 * drift, 0.6)).astype(np.int64) + 1
        retrieval = np.clip(rng.beta(6.0, 2.0, n) - 0.12 * drift, 0.0, 1.0)
        tilt = np.clip(0.15 * drift, 0.0, 0.5)
        u = rng.random(n)
        channel = np.where(u < 0.6 - tilt, 0, np.where(u < 0.9 - tilt / 2, 1, 2))
        docs = rng.integers(0, 500, size=(n, 3))
        injected = rng.random(n) < p_inj
        emb = (
            rng.normal(0.0, 1.0, size=(n, s.embedding_dim))
            + (model[:, None] * 0.3)
            + 0.5 * drift[:, None]
        )
        # Outputs.
        ab = np.array([m.confidence_beta for m in s.models])[model]
        conf = np.clip(rng.beta(ab[:, 0], ab[:, 1]) + conf_shift, 0.001, 0.999)
        toxic = rng.random(n) < p_toxic
        mod = rng.beta(1.0, 80.0, size=(n, len(_CATEGORIES)))
        mod[:, 0] = np.where(toxic, rng.beta(8.0, 2.0, n), rng.beta(1.0, 60.0, n))
        spill = toxic[:, None] & (rng.random((n, 2)) < 0.4)
        mod[:, 1:3] = np.where(spill, rng.beta(6.0, 3.0, (n, 2)), mod[:, 1:3])
        inj_score = np.where(injected, rng.beta(9.0, 1.5, n), rng.beta(1.0, 100.0, n))
        ground = np.clip(rng.beta(9.0, 1.5, n) + ground_shift - 0.3 * injected, 0.0, 1.0)
        latency_ms = rng.lognormal(np.where(is_llm, 7.0, 3.5), 0.5)
        out_tokens = np.round(rng.lognormal(5.0, 0.7, n)).astype(np.int64) + 1
        label = rng.integers(0, 1_000_000, n)
        # Feedback and evaluations.
        p_neg = np.clip(
            s.downvote_rate * neg_mult * (1 + 8 * toxic + 3 * injected + 2 * (conf < 0.4)),
            0,
            0.95,
        )
        has_fb = rng.random(n) < s.feedback_rate
        negative = rng.random(n) < p_neg
        fb_delay = rng.uniform(60.0, 1800.0, n)
        fb_is_vote = rng.random(n) < 0.85
        fb_named = rng.random(n) < 0.5
        rating = np.where(
            negative, rng.integers(1, 3, n), rng.choice([3, 4, 5], size=n, p=[0.15, 0.35, 0.5])
        )
        has_eval = is_llm & (rng.random(n) < s.evaluation_rate)
        ev_delay = rng.uniform(30.0, 600.0, n)
        judge = np.clip(ground + rng.normal(0.0, 0.05, n) + judge_shift, 0.0, 1.0)
        # Signals added later draw from their own generator, so that the draws above (and
        # every stream generated before they existed) stay the same.
        xrng = np.random.default_rng([s.seed, 17, int(t0 // _BLOCK_S)])
        for j, c in enumerate(_CATEGORIES[1:], start=1):
            flagged = xrng.random(n) < np.clip(harm_p[c], 0.0, 0.95)
            # Flagged, but below the critical single-event cutoff (0.97): rates, not pages.
            mod[:, j] = np.where(flagged, 0.5 + 0.45 * xrng.beta(4.0, 2.0, n), mod[:, j])
        u_fin = xrng.random(n)
        finish = np.where(
            u_fin < s.finish_length_rate,
            1,
            np.where(u_fin < s.finish_length_rate + s.finish_filter_rate, 2, 0),
        )
        has_guard = is_llm & (xrng.random(n) < s.guardrail_rate)
        blocked = xrng.random(n) < np.clip(s.guardrail_block_rate * block_mult, 0.0, 0.95)
        guard_score = np.where(blocked, xrng.beta(8.0, 2.0, n), xrng.beta(1.0, 12.0, n))
        t_guard = t + latency_ms / 1000.0 + xrng.uniform(0.05, 2.0, n)
        ts_guard = _iso(start_ms, t_guard[None, :])[0]
        late = rng.random((n, 4)) < s.late_fraction
        lag = rng.exponential(90.0, (n, 4)) * late
        self.counts["late"] += int(late[:, 0].sum() + late[:, 1].sum())
        self.counts["late"] += int((late[:, 2] & has_fb).sum() + (late[:, 3] & has_eval).sum())

        t_out = t + latency_ms / 1000.0
        t_fb = t_out + fb_delay
        t_ev = t_out + ev_delay
        ts = _iso(start_ms, np.stack([t, t_out, t_fb, t_ev]))
        out_t: list[float] = []
        out_lines: list[str] = []
        models = s.models
        hashes = [
            [_digest(f"{m.name}:{v}:system") for v in vs]
            for m, vs in zip(models, self._versions, strict=True)
        ]
        seg_json = {}
        for ti in range(len(s.tenants)):
            for fi in range(len(s.features)):
                for li in range(len(s.locales)):
                    seg_json[(ti, fi, li)] = (
                        f'{{"tenant":"{s.tenants[ti]}","feature":"{s.features[fi]}",'
                        f'"locale":"{s.locales[li]}"}}'
                    )
        user_hash = (user * np.uint64(0x9E3779B97F4A7C15)).tolist()
        rows = zip(
            range(n),
            model.tolist(),
            version.tolist(),
            tenant.tolist(),
            feature.tolist(),
            locale.tolist(),
            strict=True,
        )
        prefix = f"sim{s.seed}-"
        emb_l = emb.round(3).tolist() if s.embedding_dim else None
        for i, mi, vi, ti, fi, li in rows:
            if silent[i] == 2:
                continue
            m = models[mi]
            rid = f"{prefix}{first + i:09d}"
            common = (
                f'"gen_ai.response.id":"{rid}","segment":{seg_json[(ti, fi, li)]},'
                f'"user.hash":"{user_hash[i]:016x}"'
            )
            named = f'"gen_ai.request.model":"{m.name}","model_version":"{self._versions[mi][vi]}"'
            d = docs[i]
            doc_ids = (
                f'"poisoned-{d[0] % 7}","{m.name}-doc-{d[1]}"'
                if injected[i]
                else f'"{m.name}-doc-{d[0]}","{m.name}-doc-{d[1]}","{m.name}-doc-{d[2]}"'
            )
            emb_part = (
                ',"embedding":[' + ",".join(f"{x:.3f}" for x in emb_l[i]) + "]" if emb_l else ""
            )
            out_lines.append(
                f'{{"event_type":"input","schema_version":"1",{common},"timestamp":"{ts[0][i]}",'
                f'{named},"system_instructions_hash":"{hashes[mi][vi]}",'
                f'"retrieved_doc_ids":[{doc_ids}],'
                f'"numeric_features":{{"prompt_tokens":{prompt_tokens[i]},'
                f'"retrieval_top_score":{retrieval[i]:.4f}}},'
                f'"categorical_features":{{"channel":"{_CHANNELS[channel[i]]}"}}{emb_part}}}'
            )
            out_t.append(t[i] + lag[i, 0])
            if silent[i]:
                continue
            scores = ",".join(f'"{c}":{mod[i, j]:.4f}' for j, c in enumerate(_CATEGORIES))
            if m.kind == "llm":
                extra = (
                    f'"groundedness":{ground[i]:.4f},"gen_ai.usage.input_tokens":'
                    f"{prompt_tokens[i]},"
                    f'"gen_ai.usage.output_tokens":{out_tokens[i]},'
                    f'"gen_ai.response.finish_reasons":["{_FINISH[finish[i]]}"],'
                )
            else:
                extra = f'"label":"{m.labels[label[i] % len(m.labels)]}",' if m.labels else ""
            out_lines.append(
                f'{{"event_type":"output","schema_version":"1",{common},"timestamp":"{ts[1][i]}",'
                f'{named},"confidence":{conf[i]:.4f},"moderation":{{{scores}}},'
                f'"prompt_injection":{inj_score[i]:.4f},{extra}"latency_ms":{latency_ms[i]:.1f}}}'
            )
            out_t.append(t_out[i] + lag[i, 1])
            if has_fb[i]:
                what = (
                    f'"vote":"{"down" if negative[i] else "up"}"'
                    if fb_is_vote[i]
                    else f'"rating":{rating[i]}'
                )
                out_lines.append(
                    f'{{"event_type":"feedback","schema_version":"1",{common},'
                    f'"timestamp":"{ts[2][i]}",{named + "," if fb_named[i] else ""}{what}}}'
                )
                out_t.append(t_fb[i] + lag[i, 2])
            if has_eval[i]:
                out_lines.append(
                    f'{{"event_type":"evaluation","schema_version":"1",{common},'
                    f'"timestamp":"{ts[3][i]}",{named},"evaluator":"llm-judge",'
                    f'"gen_ai.evaluation.name":"groundedness",'
                    f'"gen_ai.evaluation.score.value":{judge[i]:.4f},'
                    f'"passed":{"true" if judge[i] >= 0.5 else "false"}}}'
                )
                out_t.append(t_ev[i] + lag[i, 3])
            if has_guard[i]:
                out_lines.append(
                    f'{{"event_type":"evaluation","schema_version":"1",{common},'
                    f'"timestamp":"{ts_guard[i]}",{named},"evaluator":"{GUARDRAIL[0]}",'
                    f'"gen_ai.evaluation.name":"{GUARDRAIL[1]}","kind":"guardrail",'
                    f'"gen_ai.evaluation.score.value":{guard_score[i]:.4f},'
                    f'"passed":{"false" if blocked[i] else "true"}}}'
                )
                out_t.append(t_guard[i])
        sent = silent == 0
        self.counts["input"] += int((silent < 2).sum())
        self.counts["output"] += int(sent.sum())
        self.counts["feedback"] += int((has_fb & sent).sum())
        self.counts["evaluation"] += int((has_eval & sent).sum()) + int((has_guard & sent).sum())
        return np.asarray(out_t, dtype=np.float64), out_lines

    # ------------------------------------------------------------------ ground truth
    def ground_truth(self) -> dict[str, Any]:
        """What was injected, where and when (valid after :meth:`lines` is exhausted)."""
        s = self.scenario
        out = []
        for k, inj in enumerate(s.injections):
            start = s.start + inj.start
            entry: dict[str, Any] = {
                "id": f"inj-{k + 1}",
                "type": inj.type,
                "description": INJECTION_TYPES[inj.type],
                "start": _fmt(start),
                "end": _fmt(start + inj.duration),
                "strength": inj.strength,
                "signals": SIGNALS[inj.type],
                "affected_requests": self._affected[k],
            }
            if inj.type == "harm_spike":
                entry["category"] = inj.category
            entry["scope"] = dict(self._scopes[k])
            if inj.type == "bad_deploy":
                mi = self._model_index(self._scopes[k]["model"])
                entry["old_version"] = s.models[mi].version
                entry["new_version"] = self._versions[mi][self._new_version_idx[k]]
            out.append(entry)
        return {
            "format": GROUND_TRUTH_FORMAT,
            "seed": s.seed,
            "start": _fmt(s.start),
            "end": _fmt(s.start + s.duration),
            "counts": dict(self.counts),
            "injections": out,
            "scenario": s.model_dump(mode="json"),
        }


def _zipf_weights(k: int, a: float = 1.0) -> npt.NDArray[np.float64]:
    w = 1.0 / np.arange(1, k + 1) ** a
    return np.asarray(w / w.sum(), dtype=np.float64)


def _iso(start_ms: int, seconds: npt.NDArray[np.float64]) -> list[list[str]]:
    ms = (start_ms + np.floor(seconds * 1000.0)).astype("int64").astype("datetime64[ms]")
    strings = np.char.add(np.datetime_as_string(ms, unit="ms"), "Z")
    return [list(row) for row in strings.tolist()]


def _fmt(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------- running it
def write_jsonl(sim: Simulator, out: TextIO) -> int:
    """Write the stream to ``out``; returns the number of events."""
    n = 0
    buf: list[str] = []
    for line in sim.lines():
        buf.append(line)
        if len(buf) >= 10_000:
            out.write("\n".join(buf) + "\n")
            n += len(buf)
            buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")
        n += len(buf)
    return n


def publish(
    sim: Simulator,
    bootstrap: str | Sequence[str],
    topics: Any,
    *,
    rate: float = 0.0,
    progress: TextIO | None = None,
    security: KafkaSecurity | None = None,
) -> int:
    """Publish the stream through :class:`streams.sdk.SentinelPublisher`; ``rate`` events/s
    of wall time (0 = as fast as possible). ``security`` is how the producer logs in (the
    ``kafka.security`` settings; ``None``: PLAINTEXT). Raises ``PublishError`` on delivery
    failures."""
    from streams.contract.events import parse_event
    from streams.sdk import SentinelPublisher

    n = 0
    began = time.monotonic()
    last = began
    client = kafka_python_kwargs(security) if security is not None else {}
    with SentinelPublisher(bootstrap, topics, **client) as pub:
        for line in sim.lines():
            pub.publish(parse_event(line))
            n += 1
            if rate > 0:
                ahead = n / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
            now = time.monotonic()
            if progress is not None and now - last >= 1.0:
                last = now
                progress.write(f"\rsentinel simulate: {n} events ({n / (now - began):.0f}/s)")
                progress.flush()
    if progress is not None:
        progress.write(f"\rsentinel simulate: {n} events published\n")
    return n
