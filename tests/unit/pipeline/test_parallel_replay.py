"""``sentinel replay --jobs N``: detection in N processes, partitioned by model
(:mod:`streams.pipeline.parallel`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from alerting.model import IncidentEvent
from streams.cli.main import main
from streams.contract.decode import Coordinates
from streams.contract.jsonl import decode_lines
from streams.devtools.scenario import Injection
from streams.devtools.simulate import Simulator
from streams.pipeline import parallel
from streams.pipeline.parallel import DetectionProcessError, ParallelPipeline
from streams.pipeline.replay import replay_lines
from streams.settings import Settings, kind_topics, load_settings
from tests.scenarios import toxicity_spike_scenario

H = timedelta(hours=1)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(env={})


@pytest.fixture(scope="module")
def two_causes() -> list[bytes]:
    """Five hours of three models: an 8x toxicity spike on support-chat from 02:00 and
    summarizer silent from 02:30 for an hour (found by the offline sweep that other
    models' traffic drives)."""
    scenario = toxicity_spike_scenario(
        duration=5 * H,
        injections=[
            Injection(
                type="toxicity_spike",
                start=2 * H,
                duration=H,
                strength=8,
                scope={"model": "support-chat"},
            ),
            Injection(
                type="traffic_stop",
                start=2.5 * H,
                duration=H,
                strength=1,
                scope={"model": "summarizer"},
            ),
        ],
    )
    return [line.encode() for line in Simulator(scenario).lines()]


def _json(events: list[IncidentEvent]) -> list[str]:
    return [e.model_dump_json() for e in events]


def _parallel(
    lines: list[bytes], settings: Settings, jobs: int
) -> tuple[list[IncidentEvent], list[int]]:
    """The lines through a :class:`ParallelPipeline` of ``jobs`` processes: the incident
    events, and the observations each process took."""
    topics = kind_topics(settings)
    pipeline = ParallelPipeline(settings, jobs, batch=1024)
    try:
        out = []
        for offset, event in decode_lines(lines, "test"):
            assert not hasattr(event, "reason"), event
            out += pipeline.feed(event, Coordinates(topics[event.event_type], 0, offset))  # type: ignore[union-attr]
        return out + pipeline.flush(), pipeline.observations
    finally:
        pipeline.close()


@pytest.mark.slow
def test_one_detection_process_gives_the_in_process_replay_byte_for_byte(
    settings: Settings, two_causes: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-off (pickled observations), the sweeps sent from the reading process and
    the merge by stream position change nothing: with one detection process (the whole
    budget, every model) the incident events are the in-process replay's, in its order.
    A short look-ahead, so that most observations stream through the queues while the
    file is read (a file shorter than the look-ahead waits for the end)."""
    monkeypatch.setattr(parallel, "LOOKAHEAD", 1000)
    alone = replay_lines(two_causes, settings).incidents
    types = {(e.action, e.incident_type, e.labels.model) for e in alone}
    assert ("trigger", "traffic_silence", "summarizer") in types
    assert any(t[0] == "trigger" and t[1].startswith("toxicity_rate") for t in types)
    events, observations = _parallel(two_causes, settings, 1)
    assert _json(events) == _json(alone)
    assert observations[0] > 0


@pytest.mark.slow
def test_two_processes_find_both_causes(
    settings: Settings, two_causes: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--jobs 2``: support-chat (half the traffic) is detected in one process, the two
    other models in the other, each with half the budget; both causes page, the silence
    found in a process whose own traffic partly stopped with it."""
    src, out = tmp_path / "events.jsonl", tmp_path / "incidents.jsonl"
    src.write_bytes(b"\n".join(two_causes) + b"\n")
    assert main(["replay", "--input", str(src), "--output", str(out), "--jobs", "2"]) == 0
    assert "detection on 2 processes" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    events = [IncidentEvent.model_validate(json.loads(line)) for line in lines]
    triggers = [(e.incident_type, e.labels.model) for e in events if e.action == "trigger"]
    assert ("traffic_silence", "summarizer") in triggers
    assert any(t.startswith("toxicity_rate") and m == "support-chat" for t, m in triggers)
    assert all(e.replay for e in events)


def test_models_are_placed_by_their_traffic(settings: Settings, two_causes: list[bytes]) -> None:
    """support-chat sends half the requests, summarizer and intent-classifier a quarter
    each: on two processes, support-chat alone on one and the other two on the other (in
    whatever order they first appear), so each takes about half the observations."""
    _, observations = _parallel(two_causes[:6000], settings, 2)
    total = sum(observations)
    assert total > 5000
    assert all(0.4 < n / total < 0.6 for n in observations), observations


def test_a_detection_process_that_dies_is_an_error_not_a_hang(
    settings: Settings, two_causes: list[bytes]
) -> None:
    topics = kind_topics(settings)
    pipeline = ParallelPipeline(settings, 2, batch=64)
    try:
        pid = pipeline.pids[1]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        def feed_all() -> None:
            for offset, event in decode_lines(two_causes[:5000], "test"):
                pipeline.feed(event, Coordinates(topics[event.event_type], 0, offset))  # type: ignore[union-attr]
            pipeline.flush()

        with pytest.raises(DetectionProcessError, match="detection process 1 exited with code -9"):
            feed_all()
    finally:
        pipeline.close()


def test_bad_jobs_and_settings_are_refused_before_any_process_starts(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "events.jsonl"
    src.write_text("")
    assert main(["replay", "--input", str(src), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1, not 0" in capsys.readouterr().err
    args = ["replay", "--from", "2026-01-01T00:00:00Z", "--jobs", "2"]
    assert main(args) == 2
    assert "--jobs applies to a file" in capsys.readouterr().err
    det = settings.detection.model_copy(update={"playbooks_dir": tmp_path / "gone"})
    with pytest.raises(Exception, match="playbook directory does not exist"):
        ParallelPipeline(settings.model_copy(update={"detection": det}), 2, batch=64)


def _detection_children(pid: int) -> dict[int, int]:
    """The processes ``pid`` spawned for detection, with the CPU time each has used in
    clock ticks (read from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            out[int(entry.name)] = int(fields[11]) + int(fields[12])
    return out


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an orphan's reaper may be slow)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _catches_sigint(pid: int) -> bool:
    """Whether ``pid`` has a handler for SIGINT (not ignored, not the default)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    """What an ended process wrote to standard error (its standard input is left to the
    thread writing it, which a closed pipe ends)."""
    assert proc.stderr is not None
    return proc.stderr.read().decode()


_REPLAY = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from streams.pipeline import parallel; parallel.LOOKAHEAD = 1000; "
    "from streams.cli.main import main; sys.exit(main(sys.argv[1:]))"
)
"""``sentinel`` as a terminal starts it (a test runner may have SIGINT ignored, which its
children inherit), with a short look-ahead so that detection starts at once."""


def _replay_in_background(
    lines: list[bytes], tmp_path: Path
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """``sentinel replay --input - --jobs 2`` in its own process group, fed ``lines`` on
    standard input, which stays open (the replay cannot end by itself); returned once
    its two detection processes are detecting (each has used 2 CPU-seconds: about 1.3 go
    to imports, and their share of ``lines`` takes more than the rest) and it has its
    SIGINT handler back (it ignores SIGINT while it starts them)."""
    argv = [sys.executable, "-c", _REPLAY, "replay", "--input", "-", "--jobs", "2"]
    argv += ["--output", str(tmp_path / "incidents.jsonl")]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    stdin = proc.stdin
    assert stdin is not None

    def write() -> None:
        try:
            stdin.write(b"\n".join(lines) + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the replay was stopped, or the test closed the pipe

    threading.Thread(target=write, daemon=True).start()
    children: dict[int, int] = {}
    busy = 2 * os.sysconf("SC_CLK_TCK")
    # No deadline: the test's timeout is the bound.
    while len(children) < 2 or min(children.values()) < busy or not _catches_sigint(proc.pid):
        assert proc.poll() is None, _stderr(proc)
        time.sleep(0.05)
        children = _detection_children(proc.pid)
    return proc, list(children)


@pytest.mark.slow
def test_ctrl_c_stops_a_parallel_replay_with_one_line(
    two_causes: list[bytes], tmp_path: Path
) -> None:
    """A terminal's Ctrl-C reaches the whole process group: the replay exits with 130 and
    no traceback (the detection processes ignore it from their start; the reading process
    stops them), and no detection process is left."""
    proc, children = _replay_in_background(two_causes, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait()
    err = _stderr(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert not any(_running(pid) for pid in children)


@pytest.mark.slow
def test_detection_processes_end_when_the_reading_process_is_killed(
    two_causes: list[bytes], tmp_path: Path
) -> None:
    """Killed with SIGKILL, the reading process cannot stop its detection processes: they
    notice it is gone while waiting for input and end (they would otherwise wait for
    good)."""
    proc, children = _replay_in_background(two_causes, tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    while any(_running(pid) for pid in children):  # no deadline: the test's timeout is the bound
        time.sleep(0.2)
