"""Investigation commands on the real broker, over simulated history with a toxicity spike.

Once per module: 4 h of simulated traffic (3600 requests/h, an 8x toxicity spike on
support-chat from 02:00) is published with record timestamps = event time; outputs of
support-chat carry text with PII so redaction is visible. ``replay_from_kafka`` runs the
pipeline over it and its incidents are published to the alerts topic; then every command
runs through ``sentinel`` itself, configured by SENTINEL_* variables.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from alerting.model import IncidentEvent, iso_utc
from alerting.relearn import new_relearn, relearn_topic
from detectors.base import SignalKind
from streams.cli.main import main
from streams.devtools.simulate import Simulator
from streams.investigation.history import replay_from_kafka
from streams.kafka.topics import ensure_compacted_topic
from streams.pipeline.replay import replay_lines
from streams.settings import Settings, load_settings, settings_env
from tests.conftest import KafkaBroker
from tests.scenarios import toxicity_spike_scenario

pytestmark = pytest.mark.integration

START = datetime(2025, 1, 6, tzinfo=UTC)
PII = "Mail jane.doe@example.com, card 4111 1111 1111 1111, key sk-live-4f9a8b7c6d5e4f3a2b1c"


@dataclass
class World:
    settings: Settings
    env: dict[str, str]
    lines: list[bytes]
    incidents: list[IncidentEvent]


def _lines() -> list[bytes]:
    scenario = toxicity_spike_scenario(start=START)
    out = []
    for line in Simulator(scenario).lines():
        if '"event_type":"output"' in line and '"support-chat"' in line:
            data = json.loads(line)
            data["output_text"] = PII
            line = json.dumps(data)
        out.append(line.encode())
    return out


@pytest.fixture(scope="module")
def world(kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> World:
    import uuid

    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        env={},
        overrides={
            "kafka.broker": kafka_broker.url,
            "kafka.topic_partitions": 2,
            "worker.store": "memory://",
            "worker.data_dir": str(tmp_path_factory.mktemp("worker")),
            **{
                f"topics.{name}": f"{prefix}.{name.replace('_', '-')}"
                for name in (
                    "inputs",
                    "outputs",
                    "feedback",
                    "evaluations",
                    "alerts",
                    "dead_letter",
                    "control",
                )
            },
        },
    )
    t = settings.topics
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics(
        [NewTopic(name, 2, 1) for name in (t.inputs, t.outputs, t.feedback, t.evaluations)]
        + [NewTopic(t.alerts, 1, 1), NewTopic(t.control, 1, 1)]
    )
    admin.close()
    lines = _lines()
    topic_of = {
        "input": t.inputs,
        "output": t.outputs,
        "feedback": t.feedback,
        "evaluation": t.evaluations,
    }
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=50, acks=1)
    for raw in lines:
        data = json.loads(raw)
        ts = int(datetime.fromisoformat(data["timestamp"]).timestamp() * 1000)
        producer.send(
            topic_of[data["event_type"]],
            key=data["gen_ai.response.id"].encode(),
            value=raw,
            timestamp_ms=ts,
        )
    producer.flush()
    result = replay_from_kafka(settings, START, START + timedelta(hours=5), output=None)
    for ev in result.incidents:
        producer.send(
            t.alerts,
            key=ev.key(),
            value=ev.to_json_bytes(),
            timestamp_ms=int(ev.emitted_at.timestamp() * 1000),
        )
    producer.flush()
    producer.close()
    return World(settings, settings_env(settings), lines, result.incidents)


@pytest.fixture
def env(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Only where the broker and topics are: SENTINEL_DETECTION__* variables would override
    # the detection settings of both backtest configurations.
    for key, value in world.env.items():
        if key.startswith(("SENTINEL_KAFKA__", "SENTINEL_TOPICS__")):
            monkeypatch.setenv(key, value)
        else:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("SENTINEL_CONFIG", raising=False)
    return None


def _trigger(world: World) -> IncidentEvent:
    model_wide = [
        e
        for e in world.incidents
        if e.action == "trigger" and not e.labels.segment and e.labels.version is None
    ]
    assert model_wide, [e.summary for e in world.incidents]
    return model_wide[0]


def test_replay_from_kafka_finds_the_spike_with_real_coordinates(world: World) -> None:
    first = _trigger(world)
    assert first.incident_type.startswith("toxicity_rate")
    assert first.labels.model == "support-chat"
    assert all(e.replay for e in world.incidents)
    assert (
        timedelta(0)
        < first.evidence.window_end - (START + timedelta(hours=2))
        < timedelta(minutes=45)
    )
    assert {r.topic for r in first.evidence.ranges} == {world.settings.topics.outputs}
    # The same incidents (by dedup key) as the file replay of the same events.
    offline = replay_lines(world.lines, world.settings)
    key = {(e.dedup_key, e.action) for e in offline.incidents if e.action == "trigger"}
    assert {(e.dedup_key, e.action) for e in world.incidents if e.action == "trigger"} == key


def test_replay_to_a_shadow_topic_refuses_the_live_alerts_topic(world: World) -> None:
    with pytest.raises(ValueError, match="live alerts topic"):
        replay_from_kafka(
            world.settings,
            START,
            START + timedelta(hours=1),
            shadow_topic=world.settings.topics.alerts,
        )


def test_incidents_lists_latest_state_with_filters(
    world: World, env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["incidents", "--model", "support-chat", "--status", "all"]) == 0
    out = capsys.readouterr().out
    ids = {e.incident_id for e in world.incidents}
    assert all(i in out for i in ids)
    assert "DURATION (min)" in out
    assert "2025-01-06T0" in out
    assert "Z" in out
    assert main(["incidents", "--model", "nobody"]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # header only
    assert main(["incidents", "--format", "json", "--type", "toxicity_rate"]) == 0
    rows = [IncidentEvent.model_validate_json(x) for x in capsys.readouterr().out.splitlines()]
    assert {r.incident_id for r in rows} == ids
    assert main(["incidents", "--since", "2025-01-06T02:00:00"]) == 2  # no offset: bad input


def test_investigate_prints_redacted_audit_trail_and_plots_the_trigger(
    world: World, env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    first = _trigger(world)
    png = tmp_path / "stat.png"
    series_path = tmp_path / "series.json"
    args = ["investigate", first.incident_id, "--plot", str(png), "--series-json"]
    assert main([*args, str(series_path)]) == 0
    out = capsys.readouterr().out
    assert "did not fire" not in out
    assert "audit trail" in out
    assert "[EMAIL]" in out
    assert "[CARD]" in out
    assert "[SECRET]" in out
    assert "example.com" not in out
    assert "4111" not in out
    assert "sk-live" not in out
    assert "system: sha256:" in out
    assert "reproduces the recorded trigger" in out
    for rid in first.evidence.sample_request_ids[:3]:
        assert rid in out
    # A valid, non-empty PNG.
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100
    assert height > 100
    # The plotted statistic crosses the threshold (1.0) exactly at the trigger.
    series = json.loads(series_path.read_text())
    i = series["trigger_index"]
    assert i is not None
    assert series["reproduced"]
    ratio = series["ratio"]
    assert ratio[i] >= 1.0
    assert all(r is None or r < 1.0 for r in ratio[max(0, i - 200) : i])
    # Issue 18: the category detector's statistic is drawn once one category has learned
    # its baseline (categories that never occur stay learning), with no gap after that.
    ready = next(k for k, r in enumerate(ratio) if r is not None)
    assert ready < i
    assert all(r is not None for r in ratio[ready:i])
    when = datetime.fromisoformat(series["times"][i].replace("Z", "+00:00"))
    assert when == first.evidence.window_end

    assert main(["investigate", first.incident_id, "--show-text", "--limit", "3"]) == 0
    assert "jane.doe@example.com" in capsys.readouterr().out

    # The history starts 2 h before the spike: 6 h and 24 h of look-back read the same
    # records, and the output says so instead of suggesting a longer look-back.
    reads = []
    for lookback in ("6h", "24h"):
        assert main(["investigate", first.incident_id, "--lookback", lookback]) == 0
        out = capsys.readouterr().out
        assert "reached the first retained record of every partition" in out
        read = next(line for line in out.splitlines() if line.startswith("  read "))
        reads.append(read.split(" with ")[0])  # "  read N records"
    assert reads[0] == reads[1]


def test_investigate_and_postmortem_unknown_id_exit_1(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["investigate", "inc-doesnotexist"]) == 1
    assert "unknown incident id" in capsys.readouterr().err
    assert main(["postmortem", "inc-doesnotexist"]) == 1


def test_postmortem_writes_markdown_with_timeline_playbook_and_containment(
    world: World, env: None, tmp_path: Path
) -> None:
    from alerting.containment import ContainmentState, commands_for
    from alerting.playbooks import load_playbooks

    first = _trigger(world)
    # Containment as the live service would have recorded it on the control topic.
    live = first.model_copy(update={"replay": False})
    commands = commands_for(live, load_playbooks("config/playbooks"))
    assert commands
    state = ContainmentState().apply(commands[0])
    snap = state.snapshot(first.labels.model)
    assert snap is not None
    producer = KafkaProducer(bootstrap_servers=world.settings.kafka.bootstrap_servers)
    producer.send(world.settings.topics.control, key=snap.key(), value=snap.to_json_bytes())
    producer.flush()
    producer.close()

    out = tmp_path / "pm.md"
    assert main(["postmortem", first.incident_id, "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Postmortem draft: ")
    for heading in ("## Timeline (UTC)", "## Evidence", "## Containment", "## Playbook"):
        assert heading in text
    assert "## Open questions" in text
    assert "enable_filter(classifier:toxicity-strict)" in text
    assert "trust-and-safety-oncall" in text
    assert "- [ ] Read the sampled outputs" in text
    assert first.incident_id in text
    # Issue 18: times as emitted, the affected window and counts from the evidence.
    events = [e for e in world.incidents if e.incident_id == first.incident_id]
    assert f"| Detected (UTC) | {iso_utc(events[0].emitted_at)} (trigger emitted) |" in text
    resolves = [e for e in events if e.action == "resolve"]
    if resolves:
        assert f"| Resolved (UTC) | {iso_utc(resolves[-1].emitted_at)} |" in text
    affected = next(line for line in text.splitlines() if line.startswith("- Affected: "))
    assert " requests from " in affected
    when = affected.rsplit(" from ", 1)[1].split(" to ")[0]
    # the spike from 02:00, not the baseline-rate toxic outputs at the start of the
    # evidence window (it starts 01:46 here); a change point is an estimate: minutes
    assert when >= iso_utc(START + timedelta(hours=1, minutes=55))


def test_backtest_over_kafka_and_file_shows_disappearing_incidents(
    world: World, env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = tmp_path / "b.toml"
    # B counts an output as toxic only at a score of 0.999: A's toxicity incidents must
    # disappear, and its other incidents (if any) stay.
    candidate.write_text(
        f'[kafka]\nbroker = "{world.settings.kafka.broker}"\n[detection]\ntoxicity_cutoff = 0.999\n'
    )
    report = tmp_path / "bt.json"
    argv = ["backtest", "--from", "2025-01-06T00:00:00Z", "--to", "2025-01-06T05:00:00Z"]
    assert main([*argv, "--compare", str(candidate), "--output", str(report)]) == 0
    data = json.loads(report.read_text())
    toxic_rows = [
        r
        for r in data["rows"]
        if r["baseline"] and r["baseline"]["incident_type"].startswith("toxicity_rate")
    ]
    assert toxic_rows
    assert all(r["change"] == "disappeared" for r in toxic_rows)
    assert "disappeared" in capsys.readouterr().out

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(world.lines) + b"\n")
    assert main(["backtest", "--input", str(events), "--compare", str(candidate)]) == 0
    assert "disappeared" in capsys.readouterr().out
    assert main(["backtest", "--compare", str(candidate)]) == 2  # neither history nor file
    assert main(["backtest", "--input", str(tmp_path / "nope"), "--compare", str(candidate)]) == 2


def test_replay_output_file_marks_replay(world: World) -> None:
    sink = io.StringIO()
    replay_from_kafka(world.settings, START, START + timedelta(hours=1), output=sink)
    for line in sink.getvalue().splitlines():
        assert json.loads(line)["replay"] is True


def test_a_replay_of_history_applies_the_operators_relearns_at_their_time(
    world: World, env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A re-learn of the spike's toxicity detector, requested 50 minutes into the spike:
    the replay of that history applies it there (as the worker did), so the incident
    resolves soon after, not at the spike's end; a replay of a range that starts after the
    request has nothing to apply. ``sentinel investigate`` recomputes the statistic with
    it too: the chart restarts at the re-learn and says who asked."""
    first = _trigger(world)
    at = START + timedelta(hours=2, minutes=50)
    rec = new_relearn(
        first.labels, [SignalKind.TOXICITY_RATE], now=at, by="ops", reason="new moderation model"
    )
    bootstrap = world.settings.kafka.bootstrap_servers
    topic = relearn_topic(world.settings.topics.control)
    ensure_compacted_topic(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, key=rec.key(), value=rec.to_json_bytes()).get(timeout=30)
        result = replay_from_kafka(world.settings, START, START + timedelta(hours=5))
        later = replay_from_kafka(
            world.settings, at + timedelta(minutes=1), START + timedelta(hours=5)
        )
        series_path = tmp_path / "series.json"
        assert main(["investigate", first.incident_id, "--series-json", str(series_path)]) == 0
    finally:
        # A tombstone: the other tests replay this history as it was.
        producer.send(topic, key=rec.key(), value=None).get(timeout=30)
        producer.close()
    assert (result.relearns, later.relearns) == (1, 0)
    assert "1 operator re-learn(s) applied" in result.summary("records")
    out = capsys.readouterr().out
    assert "re-learned (ops: new moderation model); a new baseline from there" in out
    assert "reproduces the recorded trigger" in out  # the trigger came before the re-learn
    series = json.loads(series_path.read_text())
    [mark] = series["relearns"]
    relearned_at = datetime.fromisoformat(mark["at"].replace("Z", "+00:00"))
    assert at <= relearned_at < at + timedelta(minutes=1)
    times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in series["times"]]
    k = times.index(relearned_at)
    assert series["ratio"][k - 1] is not None
    assert series["ratio"][k] is None  # learning its new baseline

    def resolved(incidents: list[IncidentEvent]) -> list[datetime]:
        return [
            e.emitted_at
            for e in incidents
            if e.incident_id == first.incident_id and e.action == "resolve"
        ]

    [done] = resolved(result.incidents)
    assert at < done < at + timedelta(minutes=60)
    assert all(t > at + timedelta(minutes=60) for t in resolved(world.incidents))
