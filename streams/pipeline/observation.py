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

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event.model_dump(mode="json", by_alias=True, exclude_none=True),
            "model": self.model,
            "version": self.version,
            "segment": self.segment,
            "coords": [self.coords.topic, self.coords.partition, self.coords.offset],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observation:
        topic, partition, offset = data["coords"]
        return cls(
            event=EVENT_ADAPTER.validate_python(data["event"]),
            model=data["model"],
            version=data["version"],
            segment=dict(data["segment"]),
            coords=Coordinates(topic, partition, offset),
        )
