"""Signals -> incidents: severity, dedup, lifecycle, muting, sinks and containment.

Pipeline entry points: :class:`~alerting.engine.IncidentEngine` (``observe``/``tick``/
``get_state``/``set_state``), :func:`~streams.runtime.notify_consumer.run_notify_consumer`,
:func:`~streams.runtime.consumers.run_containment_consumer`, and for runtime silences
:func:`~alerting.silences.silences_topic`, :func:`~alerting.silences.fold_silence_records`,
:func:`~alerting.silences.active_silences` and :func:`~alerting.silences.sync_engine_silences`.
Never imports faust or ``streams``.
"""

from alerting.engine import IncidentEngine
from alerting.model import (
    BlastRadius,
    Detection,
    EventRange,
    IncidentAction,
    IncidentEvent,
    IncidentStatus,
    Labels,
    Severity,
)
from alerting.playbooks import PlaybookSet, load_playbooks
from alerting.policy import AlertingPolicy, Silence, load_policy

__all__ = [
    "AlertingPolicy",
    "BlastRadius",
    "Detection",
    "EventRange",
    "IncidentAction",
    "IncidentEngine",
    "IncidentEvent",
    "IncidentStatus",
    "Labels",
    "PlaybookSet",
    "Severity",
    "Silence",
    "load_playbooks",
    "load_policy",
]
