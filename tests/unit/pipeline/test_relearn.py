"""An operator's re-learn (:mod:`alerting.relearn`): a level that moved for good is taken
as the new normal, its incident resolves, and the key watches again from the new level (a
later drop pages; without the re-learn it only updates the incident left open). The
detectors of other signal kinds and of keys outside the scope keep their baselines;
restored state does not apply a re-learn twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from alerting.model import IncidentAction, IncidentEvent, Labels
from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from alerting.relearn import RelearnBook, RelearnRecord, new_relearn
from detectors.base import SignalKind
from streams.contract.decode import Coordinates
from streams.contract.events import InferenceOutput
from streams.detection_settings import DetectionSettings
from streams.pipeline.detect import Detect
from streams.pipeline.detectorset import DetectorSet
from streams.pipeline.keys import key_id
from streams.pipeline.observation import Observation
from streams.pipeline.replay import ReplayResult
from streams.settings import load_settings

T0 = datetime(2025, 1, 6, tzinfo=UTC)
STEP_S = 20.0
SHIFT_AT = 6_000
"""The confidence level moves for good at this output (about 33 h in)."""
RELEARN_AT = 8_000
SECOND_AT = 11_000
"""A second, real drop (about 61 h in)."""
N = 14_000
MODEL = Labels(model="m")


def _outputs(seed: int) -> list[Observation]:
    """Outputs of one model at one every 20 s over two tenants; confidence Beta(12, 3)
    (mean 0.8), then Beta(10, 4) (mean 0.71), then Beta(8, 5) (mean 0.62); 1 % flagged
    toxic throughout."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N):
        a, b = (12.0, 3.0) if i < SHIFT_AT else (10.0, 4.0) if i < SECOND_AT else (8.0, 5.0)
        event = InferenceOutput.model_validate(
            {
                "request_id": f"r{i}",
                "timestamp": _at(i),
                "gen_ai.request.model": "m",
                "model_version": "v1",
                "confidence": float(rng.beta(a, b)),
                "moderation": {"toxicity": 0.9 if rng.random() < 0.01 else 0.01},
            }
        )
        tenant = ("acme", "globex")[i % 2]
        out.append(Observation(event, "m", "v1", {"tenant": tenant}, Coordinates("out", 0, i)))
    return out


def _at(i: int) -> datetime:
    """The event time of output ``i``."""
    return T0 + timedelta(seconds=i * STEP_S)


def _detect() -> Detect:
    settings: DetectionSettings = load_settings(None).detection
    return Detect(
        settings,
        load_policy(settings.alerting_policy),
        load_playbooks(settings.playbooks_dir),
        {},
        {},
        replay=True,
    )


def _run(
    obs: list[Observation], detect: Detect, record: RelearnRecord | None
) -> list[IncidentEvent]:
    out = detect.process(obs[:RELEARN_AT])
    if record is not None:
        detect.relearns.update([(record.key(), record.to_json_bytes())])
    for k in range(RELEARN_AT, N, 500):
        out += detect.process(obs[k : k + 500])
    return out


def _confidence(events: list[IncidentEvent], action: IncidentAction) -> list[IncidentEvent]:
    return [e for e in events if e.action == action and e.incident_type.startswith("confidence")]


def test_a_relearn_takes_a_lasting_shift_as_the_new_normal() -> None:
    obs = _outputs(seed=5)
    record = new_relearn(
        MODEL,
        [SignalKind.CONFIDENCE_SHIFT],
        now=_at(RELEARN_AT),
        by="ops",
        reason="new system prompt: lower confidence is expected",
    )
    # Without it, the first shift stays one open incident to the end, and the second drop
    # only updates it: no page.
    control = _run(obs, _detect(), None)
    first = _confidence(control, IncidentAction.TRIGGER)
    assert len(first) == 1, "the shift was not detected, or paged again"
    assert first[0].evidence.window_end < _at(RELEARN_AT)
    assert not _confidence(control, IncidentAction.RESOLVE)
    # With it: the incident resolves within the quiet period, the new level does not page,
    # and the second drop is a new incident, paged within 300 outputs (100 min).
    detect = _detect()
    events = _run(obs, detect, record)
    triggers = _confidence(events, IncidentAction.TRIGGER)
    assert triggers[0].incident_id == first[0].incident_id
    [resolved] = _confidence(events, IncidentAction.RESOLVE)
    assert _at(RELEARN_AT) < resolved.emitted_at < _at(RELEARN_AT + 300)
    assert len(triggers) == 2
    assert triggers[1].incident_id != first[0].incident_id
    assert _at(SECOND_AT) < triggers[1].emitted_at < _at(SECOND_AT + 300)
    # Every key in scope re-learned its confidence chart, and only that.
    for labels in (
        MODEL,
        Labels(model="m", version="v1"),
        Labels(model="m", segment={"tenant": "acme"}),
    ):
        ds = detect.live_sets.live[key_id(labels)]
        assert ds.relearn_mark == record.mark()
        assert ds.trackers["confidence"].first["out|0"] == RELEARN_AT, labels.describe()
        assert ds.trackers["harm"].first["out|0"] in (0, 1), labels.describe()


def test_a_replay_applies_a_scheduled_relearn_where_the_worker_did() -> None:
    """Scheduled by its request time (a replay of history), the re-learn gives the same
    incidents as one the worker receives at that point of the stream, in any batch size."""
    obs = _outputs(seed=5)[:9_000]
    record = new_relearn(
        MODEL, [SignalKind.CONFIDENCE_SHIFT], now=_at(RELEARN_AT), by="o", reason="r"
    )
    live = _detect()
    expected = live.process(obs[:RELEARN_AT])
    live.relearns.update([(record.key(), record.to_json_bytes())])
    expected += live.process(obs[RELEARN_AT:])
    for size in (1_000, 4_096):
        replay = _detect()
        replay.relearns.schedule([record])
        got = [e for k in range(0, len(obs), size) for e in replay.process(obs[k : k + size])]
        assert [e.model_dump() for e in got] == [e.model_dump() for e in expected]
        assert replay.relearns.next_release == float("inf")
        assert (replay.relearns.released, replay.relearns.waiting) == (1, 0)
        assert replay.relearns.outcome() == (1, 0, 0)
    assert _confidence(expected, IncidentAction.RESOLVE)


def test_a_relearn_for_another_scope_is_reached_but_not_applied() -> None:
    """A re-learn of the range that names a model the range does not carry is reached by
    its observations and applied by no key: the summary says so."""
    obs = _outputs(seed=5)[:500]
    record = new_relearn(Labels(model="other"), [], now=_at(10), by="o", reason="r")
    replay = _detect()
    replay.relearns.schedule([record])
    replay.process(obs)
    assert replay.relearns.outcome() == (0, 1, 0)
    result = ReplayResult(lines=500, events=500, relearns_unmatched=1)
    assert "1 operator re-learn(s) that dropped no detector" in result.summary("records")
    assert "re-learn(s) applied" not in result.summary("records")


def test_a_relearn_requested_after_the_last_event_is_not_counted_as_applied() -> None:
    """A range's re-learn that its data never reaches is reported as such, not "applied"."""
    obs = _outputs(seed=5)[:500]
    record = new_relearn(
        MODEL, [SignalKind.CONFIDENCE_SHIFT], now=_at(RELEARN_AT), by="o", reason="r"
    )
    replay = _detect()
    replay.relearns.schedule([record])
    replay.process(obs)
    assert replay.relearns.outcome() == (0, 0, 1)
    assert replay.live_sets.live[key_id(MODEL)].relearn_mark is None
    result = ReplayResult(lines=500, events=500, relearns=0, relearns_unreached=1)
    assert "1 requested after the last event (not applied)" in result.summary("records")
    assert "re-learn(s) applied" not in result.summary("records")


def test_a_relearn_applies_once_and_only_inside_its_scope() -> None:
    obs = _outputs(seed=6)[:3_000]
    detect = _detect()
    detect.process(obs)
    acme = key_id(Labels(model="m", segment={"tenant": "acme"}))
    globex = key_id(Labels(model="m", segment={"tenant": "globex"}))
    record = new_relearn(
        Labels(model="m", segment={"tenant": "acme"}),
        [],
        now=T0 + timedelta(days=1),
        by="ops",
        reason="acme moved to the new retrieval index",
    )
    detect.relearns.update([(record.key(), record.to_json_bytes())])
    detect.process(obs[-2:])  # one output of each tenant: their sets are used again
    assert detect.live_sets.live[acme].detectors["confidence"].learning
    assert not detect.live_sets.live[globex].detectors["confidence"].learning
    assert detect.live_sets.live[key_id(MODEL)].relearn_mark is None
    # Its state keeps the mark: restored after a restart, it does not start over again.
    saved = detect.live_sets.live[acme].to_json()
    restored = DetectorSet.from_json(saved, detect.settings, "segment", 1e5)
    assert restored.relearn_mark == record.mark()
    assert RelearnBook().pending(record.scope, restored.relearn_mark) == []
    book = RelearnBook()
    book.update([(record.key(), record.to_json_bytes())])
    assert book.pending(record.scope, restored.relearn_mark) == []
    assert book.pending(record.scope, None) == [record]


def test_records_without_a_baseline_or_a_reason_are_refused() -> None:
    with pytest.raises(ValueError, match="no learned baseline"):
        new_relearn(MODEL, [SignalKind.CRITICAL_EVENT], now=T0, by="ops", reason="x")
    with pytest.raises(ValueError, match="reason is required"):
        new_relearn(MODEL, [], now=T0, by="ops", reason="  ")
    everything = new_relearn(MODEL, [], now=T0, by="ops", reason="retrained")
    assert everything.selects(SignalKind.TOXICITY_RATE)
    assert not everything.selects(SignalKind.CRITICAL_EVENT)
    book = RelearnBook()
    book.update([(b"bad", b"{not json"), (everything.key(), everything.to_json_bytes())])
    assert book.generation == 1
    assert list(book.records) == [everything.id]
    book.update([(everything.key(), everything.to_json_bytes())])
    assert book.generation == 1  # unchanged: sets are not checked again
    book.update([(everything.key(), None)])
    assert book.generation == 2
    assert not book.records


def test_a_relearn_half_a_second_after_another_is_applied_after_it() -> None:
    """Marks are compared as strings: ISO 8601 left out a zero fraction, and "." sorts
    before "Z", so a record at 12:00:00.5 sorted before one at 12:00:00 and a key that
    had applied the earlier one never applied it."""
    scope = Labels(model="chat", segment={"tenant": "acme"})
    at = datetime(2025, 3, 1, 12, tzinfo=UTC)
    first = new_relearn(scope, [SignalKind.TOXICITY_RATE], now=at, by="alice", reason="a")
    later = at + timedelta(milliseconds=500)
    second = new_relearn(scope, [SignalKind.DOWNVOTE_RATE], now=later, by="bob", reason="b")
    book = RelearnBook()
    book.records = {first.id: first, second.id: second}
    assert [r.id for r in book.pending(scope, None)] == [first.id, second.id]
    assert [r.id for r in book.pending(scope, first.mark())] == [second.id]
    # a mark stored before the fixed width (no fraction) still orders the same records
    stored = ("2025-03-01T12:00:00Z", first.id)
    assert [r.id for r in book.pending(scope, stored)] == [second.id]
