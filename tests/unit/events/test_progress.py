"""Long offline jobs show progress in a log as well as on a terminal (streams.progress)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from streams.progress import LineProgress, progress_bar


def test_off_a_terminal_progress_is_a_whole_line_every_interval() -> None:
    now = [0.0]
    out = io.StringIO()
    bar = LineProgress("sentinel replay", out, total=50_000, every_s=10.0, clock=lambda: now[0])
    for _ in range(4):
        now[0] += 4.0
        bar.update(5_000)
    bar.close()
    # 16 s of work: one line, at 12 s; no carriage returns run lines together
    assert out.getvalue() == "sentinel replay: 15,000 events of 50,000 (30%) (1,250 events/s)\n"
    assert isinstance(progress_bar("x", stream=io.StringIO()), LineProgress)
    assert progress_bar("x", enabled=False) is None


def test_simulate_to_a_file_writes_no_carriage_returns_to_a_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, ``simulate`` redrew its count with ``\\r`` on any stderr: in a log file its
    updates ran together on one line."""
    from streams.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--duration", "1h", "--out", "e.jsonl"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "-> e.jsonl in " in err.splitlines()[0], err
