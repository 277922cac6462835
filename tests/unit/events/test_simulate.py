"""The traffic simulator: determinism, validity, realism and injected ground truth."""

from __future__ import annotations

import io
import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerting.clock import parse_duration
from streams.cli.main import main
from streams.cli.simulate import ending_by
from streams.contract.decode import DeadLetter
from streams.contract.events import Feedback, InferenceInput, InferenceOutput, parse_event
from streams.contract.jsonl import read_records
from streams.devtools.broker import free_port
from streams.devtools.scenario import Scenario, parse_injection
from streams.devtools.simulate import Simulator, write_jsonl


def _run(scenario: Scenario) -> tuple[str, dict[str, object]]:
    sim = Simulator(scenario)
    buf = io.StringIO()
    write_jsonl(sim, buf)
    return buf.getvalue(), sim.ground_truth()


SCEN = Scenario(
    seed=7,
    duration=timedelta(hours=12),
    events_per_hour=2000,
    injections=[
        parse_injection("toxicity_spike:4h:3h:6:tenant=acme"),
        parse_injection("bad_deploy:8h:2h::model=summarizer"),
    ],
)


@pytest.fixture(scope="module")
def stream() -> tuple[str, dict[str, object]]:
    return _run(SCEN)


def test_same_seed_same_bytes(tmp_path: Path, stream: tuple[str, dict[str, object]]) -> None:
    text, truth = stream
    again, truth2 = _run(SCEN)
    assert again == text
    assert truth2 == truth
    other, _ = _run(SCEN.model_copy(update={"seed": 8}))
    assert other != text
    argv = ["--seed", "3", "--duration", "2h", "--inject", "confidence_drop:30m:1h", "--quiet"]
    for name in ("a", "b"):
        assert main(["simulate", *argv, "--out", str(tmp_path / f"{name}.jsonl")]) == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.truth.json").read_bytes() == (tmp_path / "b.truth.json").read_bytes()


def test_every_line_is_a_valid_event(tmp_path: Path, stream: tuple[str, dict[str, object]]) -> None:
    text, truth = stream
    path = tmp_path / "s.jsonl"
    path.write_text(text)
    records = list(read_records(path))
    assert not [r for r in records if isinstance(r, DeadLetter)]
    kinds = Counter(r.event_type for r in records)  # type: ignore[union-attr]
    counts = truth["counts"]
    assert isinstance(counts, dict)
    for kind in ("input", "output", "feedback", "evaluation"):
        assert kinds[kind] == counts[kind] > 0


def test_realistic_shape(stream: tuple[str, dict[str, object]]) -> None:
    text, _ = stream
    events = [parse_event(line) for line in text.splitlines()]
    outputs = {e.request_id: e for e in events if isinstance(e, InferenceOutput)}
    feedback = [e for e in events if isinstance(e, Feedback)]
    assert 0.15 < len(feedback) / len(outputs) < 0.25
    lags = [(f.timestamp - outputs[f.request_id].timestamp).total_seconds() for f in feedback]
    assert min(lags) >= 60
    assert max(lags) <= 1800
    # Some deliveries are out of event-time order.
    stamps = [e.timestamp for e in events]
    late = sum(1 for a, b in itertools.pairwise(stamps) if b < a)
    assert 0 < late < 0.1 * len(stamps)
    confidences = [o.confidence for o in outputs.values() if o.confidence is not None]
    assert 0.7 < sum(confidences) / len(confidences) < 0.9
    assert len({o.model for o in outputs.values()}) == 3
    assert len({o.segment["tenant"] for o in outputs.values()}) == 5
    assert any(isinstance(e, InferenceInput) and e.system_instructions_hash for e in events)


def _tox_rate(outs: list[InferenceOutput]) -> float:
    return sum(o.moderation["toxicity"] >= 0.5 for o in outs) / max(len(outs), 1)


def test_injections_match_ground_truth(stream: tuple[str, dict[str, object]]) -> None:
    text, truth = stream
    outs = [e for e in map(parse_event, text.splitlines()) if isinstance(e, InferenceOutput)]
    injections = truth["injections"]
    assert isinstance(injections, list)
    tox, deploy = injections
    assert tox["type"] == "toxicity_spike"
    start, end = (datetime.fromisoformat(tox[k]) for k in ("start", "end"))
    assert start == datetime(2025, 1, 6, 4, tzinfo=UTC)
    inside = [o for o in outs if o.segment["tenant"] == "acme" and start <= o.timestamp < end]
    outside = [
        o for o in outs if o.segment["tenant"] != "acme" or o.timestamp >= end + timedelta(hours=1)
    ]
    assert _tox_rate(inside) > 3 * _tox_rate(outside)
    assert tox["affected_requests"] == pytest.approx(len(inside), abs=5)
    assert deploy["old_version"] == "v3"
    assert deploy["new_version"] == "v4"
    d0, d1 = (datetime.fromisoformat(deploy[k]) for k in ("start", "end"))
    new = [o for o in outs if o.model_version == "v4"]
    assert new
    assert all(o.model == "summarizer" for o in new)
    assert all(d0 <= o.timestamp < d1 + timedelta(seconds=60) for o in new)
    old = [o for o in outs if o.model == "summarizer" and o.model_version == "v3"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean([o.confidence or 0 for o in new]) < mean([o.confidence or 0 for o in old]) - 0.05


def test_parsers_reject_nonsense() -> None:
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    for bad in ("", "7", "3y", "1h x"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="unknown injection"):
        parse_injection("meteor:1h:1h")
    with pytest.raises(ValueError, match="scope"):
        parse_injection("toxicity_spike:1h:1h:2:planet=mars")
    with pytest.raises(ValueError, match="matches no simulated traffic"):
        Simulator(Scenario(injections=[parse_injection("toxicity_spike:1h:1h:2:tenant=nobody")]))


@pytest.mark.slow
def test_a_day_of_events_streams_to_a_file(tmp_path: Path) -> None:
    """Volume, not speed: the rate is printed (timings belong in bench/, not in asserts)."""
    import time

    began = time.monotonic()
    scen = Scenario(duration=timedelta(days=1), events_per_hour=3650)
    with (tmp_path / "big.jsonl").open("w") as f:
        n = write_jsonl(Simulator(scen), f)
    assert n > 150_000  # inputs, outputs, feedback and evaluations of ~88k requests
    print(f"{n} events in {time.monotonic() - began:.1f} s")


def test_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            {
                "seed": 1,
                "duration": "1h",
                "injections": [
                    {"type": "input_drift", "start": "10m", "duration": "20m", "strength": 2.0}
                ],
            }
        )
    )
    out = tmp_path / "o.jsonl"
    assert main(["simulate", "--scenario", str(path), "--out", str(out), "--quiet"]) == 0
    truth = json.loads(out.with_suffix(".truth.json").read_text())
    assert truth["injections"][0]["type"] == "input_drift"
    assert truth["injections"][0]["start"] == "2025-01-06T00:10:00Z"


def test_with_no_broker_anywhere_publishing_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No broker configured and no local broker running (its port is free): exit 2 with
    every way out, and no ground-truth file claiming events were published."""
    monkeypatch.delenv("SENTINEL_BROKER", raising=False)
    monkeypatch.setenv("SENTINEL_LOCAL_BROKER__PORT", str(free_port()))
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--duration", "10m", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no local broker running" in err
    assert "'sentinel kafka up'" in err
    assert "--broker" in err
    assert "--out" in err
    assert not (tmp_path / "ground-truth.json").exists()


@pytest.mark.slow
def test_a_broker_that_does_not_answer_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A configured broker nobody listens on: after the client's bootstrap timeout (30 s),
    exit 1 with one line naming the broker (before, a kafka-python traceback), and no
    ground-truth file claiming events were published. Every command shares this handler
    (``streams.cli.main.main``)."""
    monkeypatch.setenv("SENTINEL_BROKER", f"kafka://127.0.0.1:{free_port()}")
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--duration", "10m", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "sentinel: Kafka: KafkaTimeoutError: Unable to bootstrap from ['127.0.0.1:" in err
    assert "Traceback" not in err
    assert not (tmp_path / "ground-truth.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "--to", "now"], "--to needs --from TIME"),
        (["backtest", "--to", "now", "--compare", "config/sentinel.toml"], "needs --from TIME"),
    ],
    ids=["replay", "backtest"],
)
def test_kafka_history_without_a_start_says_so(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--to`` alone is a bad range (exit 2, no traceback); ``--to`` left out means now."""
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_published_traffic_ends_by_now_feedback_and_evaluations_included() -> None:
    """``sentinel simulate`` to Kafka moves the scenario to end by the wall clock: no event
    (feedback trails its output by up to 30 min) is stamped after now, which the worker
    would dead-letter as ``future_timestamp``; the traffic still runs up to TRAIL_S
    before now."""
    now = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
    scenario = ending_by(Scenario(seed=3, duration=parse_duration("2h"), events_per_hour=3600), now)
    text, _ = _run(scenario)
    stamps = [json.loads(line)["timestamp"] for line in text.splitlines()]
    times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in stamps]
    assert max(times) <= now
    assert max(times) >= now - timedelta(minutes=31)
