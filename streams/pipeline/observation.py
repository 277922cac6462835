"""An observation: a validated event with its model and version resolved, and where it
was read. The unit that flows from the join to the detectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from streams.contract.decode import Coordinates
from streams.contract.events import EVENT_ADAPTER, AnyEvent


def event_time(event: AnyEvent) -> float:
    """An event's time in Unix seconds (the pipeline's clock is event time)."""
    return event.timestamp.timestamp()


SERVING: Final[frozenset[str]] = frozenset({"input", "output"})
"""Event types of the model serving a request, as opposed to feedback or an evaluation
about an output served earlier: what traffic and silence are judged on."""


def serves(event: AnyEvent) -> bool:
    """Whether an event is the model serving a request (:data:`SERVING`)."""
    return event.event_type in SERVING


@dataclass(frozen=True, slots=True)
class Observation:
    """One event ready for detection: labels resolved, Kafka coordinates attached."""

    event: AnyEvent
    model: str
    version: str
    segment: dict[str, str]
    coords: Coordinates
    served_t: float | None = None
    """For feedback or an evaluation: when the output it rates was served (Unix seconds,
    from the join's entry for its request id; None when the join has not seen the output).
    Such events trail their output by minutes to hours, so this, not their own time, says
    when what they report on happened (:func:`served_time`)."""
    sampled: bool = True
    """False for a critical output of a request outside its model's sample
    (:mod:`streams.pipeline.sampling`): only the critical-event test judges it."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "event": self.event.model_dump(mode="json", by_alias=True, exclude_none=True),
            "model": self.model,
            "version": self.version,
            "segment": self.segment,
            "coords": [self.coords.topic, self.coords.partition, self.coords.offset],
        }
        if self.served_t is not None:
            data["served"] = self.served_t
        if not self.sampled:
            data["sampled"] = False
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observation:
        topic, partition, offset = data["coords"]
        return cls(
            event=EVENT_ADAPTER.validate_python(data["event"]),
            model=data["model"],
            version=data["version"],
            segment=dict(data["segment"]),
            coords=Coordinates(topic, partition, offset),
            served_t=data.get("served"),
            sampled=bool(data.get("sampled", True)),
        )


def served_time(obs: Observation) -> float:
    """When what ``obs`` reports on was served: its own time for an input or output, the
    rated output's time for feedback or an evaluation when the join knows it, else the
    event's own time (Unix seconds)."""
    if obs.served_t is not None and not serves(obs.event):
        return min(obs.served_t, event_time(obs.event))
    return event_time(obs.event)
