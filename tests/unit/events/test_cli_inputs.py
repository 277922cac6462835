"""Bad input to the command line: one line, the right exit code, no file destroyed."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli.main import main

CONFIG = Path(__file__).resolve().parents[3] / "config" / "sentinel.toml"


@pytest.fixture
def events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SENTINEL_WORKER__DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "in.jsonl"
    assert main(["simulate", "--duration", "10m", "--out", str(path), "--quiet"]) == 0
    return path


def test_replay_never_writes_over_its_input(
    events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = events.read_bytes()
    for flag in ("--output", "--dead-letter"):
        assert main(["replay", "--input", str(events), flag, str(events)]) == 2
        assert "is also the input" in capsys.readouterr().err
    assert events.read_bytes() == before


def test_a_failed_replay_leaves_an_existing_output_as_it_was(
    events: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outputs are written whole or not at all (before, the output was emptied first)."""
    out = tmp_path / "incidents.jsonl"
    out.write_text("kept\n")
    assert main(["replay", "--to", "now", "--output", str(out)]) == 2
    assert main(["replay", "--input", str(tmp_path / "missing.jsonl"), "--output", str(out)]) == 2
    assert out.read_text() == "kept\n"
    assert main(["replay", "--input", str(events), "--output", str(out)]) == 0
    assert out.read_text() != "kept\n"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    capsys.readouterr()


def test_simulate_refuses_one_file_for_events_and_ground_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["simulate", "--duration", "10m", "--out", "same.jsonl", "--ground-truth", "same.jsonl"]
    assert main(argv) == 2
    assert "is also the events file" in capsys.readouterr().err
    assert not (tmp_path / "same.jsonl").exists()


def test_simulate_out_dash_writes_standard_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--duration", "5m", "--out", "-", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines
    assert lines[0].startswith('{"event_type":')
    assert (tmp_path / "ground-truth.json").exists()
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["simulate", "--events-per-hour", "0", "--out", "x.jsonl"],
            2,
            "invalid Scenario: events_per_hour: Input should be greater than 0 (given 0.0)",
        ),
        (["simulate", "--out", "/nonexistent/x.jsonl"], 2, "output directory not found"),
        (["replay", "--input", "."], 2, "Is a directory: ."),
        (["simulate", "--duration", "99999999999d"], 2, "longer than 100 years"),
        (["incidents", "--since", "0001-01-01T00:00:00+01:00"], 2, "out of range in UTC"),
        (["replay", "--config", "/nonexistent.toml", "--input", "x"], 2, "config file not found"),
        # range errors before the broker (none runs here: its absence would say so first)
        (["replay", "--from", "garbage"], 2, "not a time: 'garbage'"),
        (["replay", "--from", "now", "--to", "now-1h"], 2, "must be after --from"),
        (["replay", "--from", "now-1h", "--shadow-topic", "sentinel.alerts"], 2, "live alerts"),
        (["backtest", "--from", "garbage", "--compare", str(CONFIG)], 2, "not a time"),
        # output paths before the analysis (or the broker)
        (["investigate", "X", "--plot", "/nonexistent/a.png"], 2, "output directory not found"),
        (["postmortem", "X", "--out", "."], 2, "is a directory: give a file name"),
        (["schema", "--out", str(CONFIG)], 2, "is a file: give a directory"),
    ],
)
def test_bad_input_is_one_line(
    argv: list[str],
    code: int,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_byte_order_mark_before_the_first_line_is_not_a_dead_letter(
    events: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marked = tmp_path / "bom.jsonl"
    marked.write_bytes(b"\xef\xbb\xbf" + events.read_bytes())
    lines = len(events.read_bytes().splitlines())
    capsys.readouterr()
    assert main(["replay", "--input", str(marked), "--output", str(tmp_path / "o.jsonl")]) == 0
    assert f"{lines:,} lines, {lines:,} events, 0 dead letters" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--inject", "toxicity_spike:5h:1h"], "starts at 300 min, after the simulated 60 min"),
        (["--inject", "toxicity_spike:1m:1m:abc"], "strength 'abc' is not a number"),
        (["--inject", "input_drift:1m:5m:1e308"], "strength: Input should be less than"),
        (["--events-per-hour", "inf"], "events_per_hour: Input should be a finite number"),
        (
            ["--inject", "toxicity_spike:1m:5m:5:category=sexual"],
            "category applies to harm_spike only, not to toxicity_spike",
        ),
    ],
)
def test_simulate_refuses_what_would_inject_nothing_or_write_invalid_json(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.jsonl"
    assert main(["simulate", "--duration", "1h", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("list.json", "[1]", "expected an object of scenario keys"),
        ("inj.json", '{"injections": [1]}', "injections must be a list of tables"),
        ("s.yaml", "a: b", "a .toml or .json file is expected"),
        ("bad.json", "{", "not valid JSON"),
    ],
)
def test_a_bad_scenario_file_says_what_is_wrong(
    name: str, content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / name
    scenario.write_text(content)
    argv = ["simulate", "--scenario", str(scenario), "--out", str(tmp_path / "x.jsonl")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("SENTINEL_DETECTION__ALERTING_POLICY", "/nonexistent.toml", "alerting policy file not"),
        ("SENTINEL_DETECTION__PLAYBOOKS_DIR", "/nonexistent", "playbook directory does not"),
        (
            "SENTINEL_DETECTION__SEGMENT_LABELS",
            "tenant",
            "among SENTINEL_DETECTION__SEGMENT_LABELS: a value that is not valid JSON",
        ),
    ],
)
def test_sentinel_config_checks_what_the_worker_reads(
    env: str,
    value: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, ``sentinel config`` passed a missing policy, which crashed ``backtest``."""
    monkeypatch.setenv(env, value)
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "argv", [["console", "--port", "99999"], ["simulate", "--rate", "-5"]], ids=["port", "rate"]
)
def test_argument_types_refuse_out_of_range_values(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert f"argument {argv[1]}: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["silence", "add", "--model", "a b"], "--model"),
        (["silence", "add", "--model", "m", "--version", "v\x01"], "--version"),
        (["silence", "add", "--model", "m", "--segment", "Tenant=acme"], "--segment"),
        (["silence", "add", "--model", "m", "--segment", "tenant=" + "x" * 300], "--segment"),
        (["incidents", "--model", "a b"], "--model"),
    ],
    ids=["model", "version", "label", "value", "filter"],
)
def test_names_are_checked_as_the_event_contract_checks_them(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, a silence for model "a b" was published: it could never match an event."""
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--duration", "1h", "--comment", "x"] if argv[0] == "silence" else argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse's usage, then the one error
    assert f"error: argument {flag}: not a " in last, err


def test_a_broker_that_accepts_no_connection_is_said_before_the_clients_wait(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, ``status`` said nothing for the 30 s the Kafka client spends bootstrapping."""
    from streams.cli.common import connect
    from streams.devtools.broker import free_port
    from streams.settings import load_settings

    broker = f"localhost:{free_port()}"
    _, servers = connect(
        load_settings(CONFIG, env={}, overrides={"kafka.broker": f"kafka://{broker}"})
    )
    assert servers == [broker]
    err = capsys.readouterr().err
    assert f"no broker accepts connections at {broker} yet" in err, err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "holds no lines"),
        (b"model,score\nsupport-chat,0.9\n", "none of the 2 lines of"),
    ],
    ids=["empty", "csv"],
)
def test_a_file_of_no_events_is_refused_not_replayed_into_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    """Before, replay and backtest of a CSV or an empty file exited 0 with no incidents."""
    data = tmp_path / "data.csv"
    data.write_bytes(content)
    out = tmp_path / "incidents.jsonl"
    out.write_text("kept\n")
    assert main(["replay", "--input", str(data), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert out.read_text() == "kept\n"
    assert main(["backtest", "--input", str(data), "--compare", str(CONFIG)]) == 2
    assert message in capsys.readouterr().err


def test_backtest_checks_its_output_first_and_reads_stdin(
    events: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    argv = ["backtest", "--input", str(events), "--compare", str(CONFIG), "--no-progress"]
    assert main([*argv, "--output", str(tmp_path / "nodir" / "r.json")]) == 2
    assert "output directory not found" in capsys.readouterr().err
    assert main([*argv, "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    stdin = io.TextIOWrapper(io.BytesIO(events.read_bytes()))
    monkeypatch.setattr("sys.stdin", stdin)
    argv[2] = "-"
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = len(events.read_bytes().splitlines())
    assert f"{lines:,} events, 0 dead letters; A: " in out, out


def test_a_replayed_dead_letter_names_its_file_and_line(
    events: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    lines = events.read_bytes().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"\n".join([lines[0], b'{"event_type": "infer', *lines[1:]]) + b"\n")
    dead = tmp_path / "dead.jsonl"
    argv = ["replay", "--input", str(broken), "--output", str(tmp_path / "o.jsonl")]
    assert main([*argv, "--dead-letter", str(dead)]) == 0
    [letter] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert (letter["source_topic"], letter["offset"]) == (str(broken), 1)
    assert main(argv) == 0
    assert "--dead-letter FILE keeps each rejected line" in capsys.readouterr().err


def test_the_example_scenario_file_is_valid_and_injects_what_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    example = CONFIG.parent / "scenarios" / "example.toml"
    argv = ["simulate", "--scenario", str(example), "--duration", "20h", "--out", "e.jsonl"]
    assert main([*argv, "--quiet"]) == 0
    truth = json.loads((tmp_path / "e.truth.json").read_text())
    assert [(i["type"], i.get("category")) for i in truth["injections"]] == [
        ("toxicity_spike", None),
        ("harm_spike", "self_harm"),
    ]


@pytest.mark.parametrize(
    ("argv", "prog", "left"),
    [
        (["replay", "--inptu", "x"], "sentinel replay", "--inptu x"),
        (["silence", "list", "--bogus"], "sentinel silence list", "--bogus"),
    ],
)
def test_a_misspelt_option_is_reported_by_its_subcommand(
    argv: list[str], prog: str, left: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, ``replay --inptu`` printed the top-level usage, which lists no options."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {prog} "), err
    assert err.strip().splitlines()[-1] == f"{prog}: error: unrecognized arguments: {left}"
