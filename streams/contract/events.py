"""The event contract with producers: typed, validated wire models and their JSON Schema.

Four kinds of event travel on Kafka (one topic per kind by default, but any topic may carry
any kind, since every record names its ``event_type``):

* :class:`InferenceInput`  what went into a model (features, prompt hash, retrieved docs);
* :class:`InferenceOutput` what came out (confidence, moderation scores, tokens);
* :class:`Feedback`        a user's vote or rating on an output, minutes later;
* :class:`Evaluation`      an evaluator's or guardrail's verdict, arriving later still.

They are correlated by ``request_id`` (JSON ``gen_ai.response.id``). JSON field names are the
OpenTelemetry GenAI attribute names where one exists (``gen_ai.request.model``,
``gen_ai.usage.output_tokens``, ...) and plain snake_case otherwise; Python attributes are
always snake_case. Either spelling is accepted on input; the alias is always written. See
``docs/events.md`` for the field table.

Unknown fields are ignored (not rejected): producers upgrade at their own pace, and a newer
producer adding a field must not send all of its traffic to the dead-letter topic. Known
fields are validated strictly: no string-to-number or number-to-bool coercion, scores
finite and in range, timestamps timezone-aware (converted to UTC).
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeAlias, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    model_validator,
)
from pydantic_core import PydanticCustomError

SCHEMA_VERSION: Final = "1"
"""The ``schema_version`` every event of this contract carries."""

# Limits: generous for real producers, small enough that one record cannot exhaust memory.
MAX_TEXT_CHARS: Final = 100_000
MAX_SEGMENT_LABELS: Final = 32
MAX_FEATURES: Final = 512
MAX_EMBEDDING_DIM: Final = 4096
MAX_DOC_IDS: Final = 256

ModerationCategory: TypeAlias = Literal[
    "toxicity",
    "severe_toxicity",
    "hate",
    "harassment",
    "self_harm",
    "sexual",
    "violence",
    "data_exposure",
]
"""Moderation categories with a shared meaning across producers (others are allowed)."""
MODERATION_CATEGORIES: Final[tuple[str, ...]] = get_args(ModerationCategory)

EventType: TypeAlias = Literal["input", "output", "feedback", "evaluation"]
_NAME_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.:/@+-]*$"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


_NUMERIC_RE: Final = re.compile(r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*$")


def _epoch_seconds(value: Any) -> Any:
    """The one rule for numeric timestamps: a JSON number (or a string holding only a
    number) is **seconds** since the Unix epoch, UTC, always; there is no guessing of
    milliseconds by magnitude (pydantic's default read 1e11 as milliseconds). A value in
    milliseconds therefore lands tens of thousands of years ahead and is rejected. Booleans
    are not numbers here. Everything else (ISO 8601 text) goes to pydantic unchanged."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, str) and _NUMERIC_RE.match(value):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        # (pydantic's own error type for it: the dead letter's reason is non_finite)
        raise PydanticCustomError("finite_number", "a timestamp must be a finite number")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(
                f"numeric timestamp {value!r} is read as seconds since the Unix epoch and is "
                "out of range (milliseconds? divide by 1000)"
            ) from exc
    return value


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_epoch_seconds), AfterValidator(_to_utc)]
"""An aware timestamp, normalised to UTC. Naive timestamps are rejected; numbers are seconds
since the Unix epoch (:func:`_epoch_seconds`)."""
UnitScore = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
"""A probability-like score in [0, 1]; NaN and infinities are rejected."""
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""Any finite number (an integer is accepted); strings are rejected, not coerced."""
Count = Annotated[int, Field(strict=True, ge=0)]
Rating = Annotated[int, Field(strict=True, ge=1, le=5)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=_NAME_RE)]
"""A model name, version or evaluator name: no spaces, no control characters."""
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256)]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
LabelValue = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ShortText = Annotated[str, StringConstraints(max_length=4000)]
LongText = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
Hash = Annotated[
    str, StringConstraints(pattern=r"^(?:[a-z0-9-]{1,16}:)?[0-9a-f]{16,128}$", max_length=146)
]
"""A hex digest, optionally prefixed by its algorithm (``sha256:9f86d0...``)."""

_CONFIG = ConfigDict(
    extra="ignore",
    frozen=True,
    validate_by_name=True,
    validate_by_alias=True,
    serialize_by_alias=True,
    str_strip_whitespace=False,
)


@functools.cache
def _aliased(cls: type[BaseModel]) -> tuple[tuple[str, str], ...]:
    """(name, alias) of the fields of ``cls`` that have two spellings."""
    return tuple((n, f.alias) for n, f in cls.model_fields.items() if f.alias and f.alias != n)


class _EventBase(BaseModel):
    """Fields every event carries."""

    model_config = _CONFIG

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        """A field given under both its names (``request_id`` and ``gen_ai.response.id``)
        with different values is an error: one of them was dropped without a word (the
        OpenTelemetry name won), and a join or a model key went astray."""
        if isinstance(data, dict):
            for name, alias in _aliased(cls):
                if name in data and alias in data and data[name] != data[alias]:
                    raise ValueError(
                        f"{name!r} and {alias!r} name one field and disagree "
                        f"({data[name]!r} and {data[alias]!r}): give one of them"
                    )
        return data

    event_type: EventType = Field(description="input, output, feedback or evaluation.")
    schema_version: Literal["1"] = Field(
        default=SCHEMA_VERSION, description="Version of this contract."
    )
    request_id: Identifier = Field(
        alias="gen_ai.response.id",
        description="Correlates the input, output, feedback and evaluations of one request.",
    )
    timestamp: UtcDatetime = Field(
        description="When it happened (event time), ISO 8601 with an offset; stored as UTC."
    )
    segment: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=MAX_SEGMENT_LABELS,
        description="Segment labels such as tenant, feature, locale; detectors key by them.",
    )
    user_hash: Identifier | None = Field(
        default=None,
        alias="user.hash",
        description="A stable, anonymised user id, for counting distinct users affected.",
    )
    conversation_id: Identifier | None = Field(
        default=None, alias="gen_ai.conversation.id", description="Session or thread id."
    )


class _ModelRequired(_EventBase):
    model: Name = Field(alias="gen_ai.request.model", description="The model's name.")
    model_version: Name = Field(description="The deployed version of the model.")


class InferenceInput(_ModelRequired):
    """What a model was asked: published by the serving code before or with the call."""

    event_type: Literal["input"] = "input"
    operation: Name | None = Field(
        default=None, alias="gen_ai.operation.name", description="chat, embeddings, ..."
    )
    prompt: LongText | None = Field(
        default=None, description="Raw prompt text. Sensitive: optional, often omitted."
    )
    system_instructions_hash: Hash | None = Field(
        default=None, description="Digest of the system instructions (prompt template)."
    )
    retrieved_doc_ids: list[Identifier] = Field(
        default_factory=list,
        max_length=MAX_DOC_IDS,
        description="Ids of documents retrieved into the context (RAG), in rank order.",
    )
    data_source_id: Identifier | None = Field(
        default=None, alias="gen_ai.data_source.id", description="The retrieval data source."
    )
    numeric_features: dict[LabelKey, FiniteFloat] = Field(
        default_factory=dict, max_length=MAX_FEATURES, description="Numeric input features."
    )
    categorical_features: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_FEATURES, description="Categorical input features."
    )
    embedding: list[FiniteFloat] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_EMBEDDING_DIM,
        description="An input embedding (or a low-dimensional projection of one).",
    )


class InferenceOutput(_ModelRequired):
    """What a model answered, with its confidence and any moderation/evaluator scores."""

    event_type: Literal["output"] = "output"
    response_model: Name | None = Field(
        default=None,
        alias="gen_ai.response.model",
        description="The model that actually answered, if it differs from the requested one.",
    )
    confidence: UnitScore | None = Field(
        default=None, description="The model's confidence in its output, in [0, 1]."
    )
    label: LabelValue | None = Field(default=None, description="Predicted class, if any.")
    moderation: dict[LabelKey, UnitScore] = Field(
        default_factory=dict,
        max_length=64,
        description="Moderation scores by category (toxicity, self_harm, ...), each in [0, 1].",
    )
    prompt_injection: UnitScore | None = Field(
        default=None, description="Prompt-injection classifier score in [0, 1]."
    )
    groundedness: UnitScore | None = Field(
        default=None, description="How well the output is supported by its sources, [0, 1]."
    )
    output_text: LongText | None = Field(
        default=None, description="Raw output text. Sensitive: optional, often omitted."
    )
    finish_reasons: list[Name] = Field(
        default_factory=list, max_length=16, alias="gen_ai.response.finish_reasons"
    )
    input_tokens: Count | None = Field(default=None, alias="gen_ai.usage.input_tokens")
    output_tokens: Count | None = Field(default=None, alias="gen_ai.usage.output_tokens")
    latency_ms: FiniteFloat | None = Field(
        default=None, ge=0.0, description="Time from request to response, milliseconds."
    )


class Feedback(_EventBase):
    """A user's vote or rating on an output. Model and version are optional: feedback systems
    often do not know them, and the pipeline joins them from the output by request id."""

    event_type: Literal["feedback"] = "feedback"
    model: Name | None = Field(default=None, alias="gen_ai.request.model")
    model_version: Name | None = None
    vote: Literal["up", "down"] | None = Field(default=None, description="Thumbs up/down.")
    rating: Rating | None = Field(default=None, description="A 1-5 star rating.")
    comment: ShortText | None = Field(default=None, description="Free text. Sensitive.")

    @model_validator(mode="after")
    def _vote_or_rating(self) -> Feedback:
        if self.vote is None and self.rating is None:
            raise ValueError("feedback needs a vote or a rating")
        return self


class Evaluation(_EventBase):
    """An evaluator's or guardrail's result on an output, usually arriving later."""

    event_type: Literal["evaluation"] = "evaluation"
    model: Name | None = Field(default=None, alias="gen_ai.request.model")
    model_version: Name | None = None
    evaluator: Name = Field(description="Who judged: 'llm-judge-v2', 'guardrail/pii', ...")
    name: Name = Field(
        alias="gen_ai.evaluation.name", description="The metric: groundedness, relevance, ..."
    )
    kind: Literal["evaluation", "guardrail"] = "evaluation"
    score: FiniteFloat | None = Field(
        default=None, alias="gen_ai.evaluation.score.value", description="On the metric's scale."
    )
    score_label: LabelValue | None = Field(
        default=None, alias="gen_ai.evaluation.score.label", description="pass, fail, ..."
    )
    explanation: ShortText | None = Field(default=None, alias="gen_ai.evaluation.explanation")
    passed: StrictBool | None = Field(default=None, description="The evaluator's verdict.")
    scores: dict[LabelKey, UnitScore] = Field(
        default_factory=dict,
        max_length=64,
        description="Category scores in [0, 1], e.g. toxicity by category from a later pass.",
    )


EVENT_TYPES: Final[tuple[EventType, ...]] = ("input", "output", "feedback", "evaluation")
AnyEvent: TypeAlias = InferenceInput | InferenceOutput | Feedback | Evaluation
Event = Annotated[AnyEvent, Field(discriminator="event_type")]
"""Any event, told apart by ``event_type``."""

EVENT_MODELS: Final[dict[EventType, type[AnyEvent]]] = {
    "input": InferenceInput,
    "output": InferenceOutput,
    "feedback": Feedback,
    "evaluation": Evaluation,
}
EVENT_ADAPTER: Final[TypeAdapter[AnyEvent]] = TypeAdapter(Event)


def parse_event(data: bytes | str) -> AnyEvent:
    """Validate one JSON event (any kind). Raises :class:`pydantic.ValidationError`."""
    return EVENT_ADAPTER.validate_json(data)


def dump_event(event: AnyEvent) -> bytes:
    """The canonical wire form: compact JSON, alias names, ``None`` fields left out."""
    return event.model_dump_json(by_alias=True, exclude_none=True).encode()


TopicName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,249}$")]
"""A Kafka topic name: 1-249 of letters, digits, '.', '_' and '-'."""


class EventTopics(BaseModel):
    """The topic each kind of event is published to (the service's defaults).

    Part of the contract: the SDK publishes to these names and the service consumes them
    (``[topics]`` in the service config extends this with its own topics).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: TopicName = "sentinel.inputs"
    outputs: TopicName = "sentinel.outputs"
    feedback: TopicName = "sentinel.feedback"
    evaluations: TopicName = "sentinel.evaluations"

    @model_validator(mode="after")
    def _distinct(self) -> EventTopics:
        names = list(self.model_dump().values())
        shared = sorted({n for n in names if names.count(n) > 1})
        if shared:
            raise ValueError(f"one topic for two purposes: {', '.join(shared)}")
        return self

    def topic_of(self, kind: EventType) -> str:
        """The topic of one kind of event."""
        return self.by_kind()[kind]

    def by_kind(self) -> dict[EventType, str]:
        """Event kind -> topic."""
        return {
            "input": self.inputs,
            "output": self.outputs,
            "feedback": self.feedback,
            "evaluation": self.evaluations,
        }
