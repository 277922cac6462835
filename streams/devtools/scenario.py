"""What a simulation is: the scenario (traffic shape, models, segments, base rates) and
the failures injected into it.

This is the configuration side of ``sentinel simulate``, kept apart from the generator in
:mod:`streams.devtools.simulate` so that scenario files, the CLI, tests and benchmarks can
build, validate and describe scenarios (and parse ``--inject`` specs) without the numpy
generation code. Every model here is frozen and rejects unknown keys.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from alerting.clock import parse_duration
from alerting.model import minutes_text

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
SCOPE_KEYS: Final = ("model", "version", "tenant", "feature", "locale")

Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@+-]{1,64}$")]
HARM_CATEGORIES: Final = ("toxicity", "hate", "harassment", "self_harm", "sexual", "violence")
"""Moderation categories the simulator scores (a harm_spike names one of them)."""


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
    strength: float = Field(gt=0, le=1e6, allow_inf_nan=False)
    scope: dict[str, Token] = Field(default_factory=dict)
    new_version: Token | None = None
    category: (
        Literal["toxicity", "hate", "harassment", "self_harm", "sexual", "violence"] | None
    ) = Field(default=None, description="The moderation category of a harm_spike (self_harm).")

    @model_validator(mode="after")
    def _category_of_a_harm_spike(self) -> Self:
        """A category on another type would be ignored: say so instead."""
        if self.category is not None and self.type != "harm_spike":
            raise ValueError(f"category applies to harm_spike only, not to {self.type}")
        return self

    @property
    def harm_category(self) -> str:
        """The category a harm_spike raises (self_harm unless given)."""
        return self.category or "self_harm"


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
    events_per_hour: float = Field(
        default=3600.0, gt=0, le=1e8, allow_inf_nan=False, description="Requests per hour."
    )
    daily_amplitude: float = Field(default=0.6, ge=0, lt=1)
    models: list[ModelSpec] = Field(default_factory=_default_models, min_length=1)
    tenants: list[Token] = Field(
        default=["acme", "globex", "initech", "umbrella", "hooli"], min_length=1
    )
    features: list[Token] = Field(default=["chat", "search", "email"], min_length=1)
    locales: list[Token] = Field(
        default=["en-US", "de-DE", "fr-FR", "es-ES", "ja-JP"], min_length=1
    )
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


def check_scenario(scenario: Scenario) -> None:
    """Reject what the models alone cannot: an unknown harm category or a rate outside
    [0, 1] in ``harm_rates``, and an injection scope that matches no simulated traffic
    (a typo there would silently inject nothing), or one that starts after the end.
    Raises ``ValueError``."""
    for cat, rate in scenario.harm_rates.items():
        if cat not in HARM_CATEGORIES[1:]:
            raise ValueError(f"harm_rates: unknown category {cat!r}; one of {HARM_CATEGORIES[1:]}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"harm_rates: {cat} = {rate} is not a probability")
    values = {
        "model": {m.name for m in scenario.models},
        "version": {m.version for m in scenario.models},
        "tenant": set(scenario.tenants),
        "feature": set(scenario.features),
        "locale": set(scenario.locales),
    }
    for inj in scenario.injections:
        if inj.start >= scenario.duration:
            raise ValueError(
                f"injection {inj.type} starts at {minutes_text(inj.start)}, after the "
                f"simulated {minutes_text(scenario.duration)}: it would inject nothing"
            )
        for key, value in inj.scope.items():
            if key not in values:
                raise ValueError(f"scope key {key!r} not one of {SCOPE_KEYS}")
            if value not in values[key]:
                raise ValueError(f"scope {key}={value!r} matches no simulated traffic")


def parse_injection(spec: str) -> Injection:
    """``type:start:duration[:strength[:scope]]``, e.g.
    ``toxicity_spike:2d:6h:5:model=support-chat,tenant=acme``. Empty strength = default."""
    parts = spec.split(":", 4)
    if len(parts) < 3:
        raise ValueError(f"injection {spec!r}: expected type:start:duration[:strength[:scope]]")
    kind = parts[0]
    if kind not in INJECTION_TYPES:
        raise ValueError(f"unknown injection type {kind!r}; one of {', '.join(INJECTION_TYPES)}")
    try:
        strength = float(parts[3]) if len(parts) > 3 and parts[3] else DEFAULT_STRENGTH[kind]
    except ValueError:
        raise ValueError(f"injection {spec!r}: strength {parts[3]!r} is not a number") from None
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
