"""Open incidents folded from the alerts topic."""

from __future__ import annotations

from alerting.engine import IncidentEngine
from alerting.status import fold_open_incidents, render_incidents
from detectors.base import SignalKind
from tests.unit.alerting.helpers import T0, detection, minutes, playbooks, policy, signal


def test_latest_event_per_dedup_key_and_resolved_ones_dropped() -> None:
    eng = IncidentEngine(policy(), playbooks())
    a = eng.observe(detection(T0))
    b = eng.observe(detection(T0 + minutes(1), sig=signal(SignalKind.CRITICAL_EVENT,
                                                          feature="self_harm")))  # fmt: skip
    upd = eng.observe(detection(T0 + minutes(3), sig=signal(effect=1.5, p_value=1e-9,
                                                            last_index=5)))  # fmt: skip
    assert [e.action.value for e in upd] == ["update"]
    open_ = fold_open_incidents(a + b + upd)
    assert [e.event_id for e in open_] == [b[0].event_id, upd[0].event_id]  # SEV1 first
    text = render_incidents(open_)
    assert text.splitlines()[0].split() == ["ID", "TYPE", "LABELS", "SEVERITY", "STATUS", "SINCE"]
    assert "critical_event:self_harm" in text
    assert "2025-03-01T11:" in text  # first_seen, aware UTC with Z
    resolved = eng.tick(T0 + minutes(300))
    assert fold_open_incidents(a + b + upd + resolved) == []
    assert render_incidents([]) == "no open incidents"
