"""Test helpers: real incident events for the alerting commands, and their publisher."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafka import KafkaProducer

from alerting.engine import IncidentEngine
from alerting.model import IncidentEvent
from detectors.base import SignalKind
from tests.unit.alerting.helpers import T0, detection, minutes, playbooks, policy, signal


def three_incidents() -> list[IncidentEvent]:
    """The events a real :class:`IncidentEngine` makes of three detections: two incidents
    with playbook containment (a critical self-harm event on support-bot, a downvote rate
    on faq-bot) and one without (input drift on support-bot)."""
    engine = IncidentEngine(policy(), playbooks())
    out: list[IncidentEvent] = []
    out += engine.observe(detection(T0, sig=signal(SignalKind.CRITICAL_EVENT, feature="self_harm")))
    out += engine.observe(detection(T0 + minutes(1), model="faq-bot"))  # downvote_rate
    out += engine.observe(detection(T0 + minutes(2), sig=signal(SignalKind.INPUT_DRIFT)))
    return out


def publish_records(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]], **client: Any
) -> None:
    """Send ``(key, value)`` records to ``topic`` one by one, each acknowledged (30 s bound);
    ``client``: extra producer settings (e.g. the broker's security)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **client)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close(timeout=10)


def publish_incidents(
    bootstrap: str, topic: str, events: Iterable[IncidentEvent], **client: Any
) -> None:
    """Send incident events as the alerts topic holds them: keyed by dedup key, as JSON."""
    publish_records(bootstrap, topic, ((e.key(), e.to_json_bytes()) for e in events), **client)
