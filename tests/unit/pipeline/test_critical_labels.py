"""Critical-event incidents name the event's version and segment (issue 17: "version and
segment labels for every incident type"); they used to be model-wide (``version=all``)."""

from __future__ import annotations

import dataclasses

from alerting.alertmanager import identity_labels
from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from streams.contract.events import InferenceOutput
from streams.pipeline.detect import Detect
from streams.settings import load_settings
from tests.unit.pipeline.test_detect_state import _observations


def test_a_critical_event_incident_carries_the_events_version_and_segment() -> None:
    settings = load_settings(env={})
    det = settings.detection
    detect = Detect(
        det, load_policy(det.alerting_policy), load_playbooks(det.playbooks_dir), {}, {}
    )
    obs = _observations(400)
    output = next(o for o in obs if isinstance(o.event, InferenceOutput))
    assert isinstance(output.event, InferenceOutput)
    category = det.critical_categories[0]
    critical = dataclasses.replace(
        output,
        version="v-critical",
        segment={"tenant": "acme", "locale": "de-DE"},
        event=output.event.model_copy(
            update={"moderation": {category: 0.999}, "prompt_injection": None}
        ),
    )
    events = detect.process([*obs, critical])
    triggers = [
        e for e in events if e.incident_type.startswith("critical_event") and e.sequence == 1
    ]
    assert len(triggers) == 1, [e.incident_type for e in events]
    labels = triggers[0].labels
    assert labels.model == critical.model
    assert labels.version == "v-critical"
    expected = {k: v for k, v in critical.segment.items() if k in det.segment_labels}
    assert expected
    assert labels.segment == expected
    am = identity_labels(triggers[0])
    assert am["version"] == "v-critical"
    assert all(am[f"segment_{k}"] == v for k, v in expected.items())
