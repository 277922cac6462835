"""Solved thresholds: rounded up onto a shared grid (conservative), kept across runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from detectors.arl import (
    bernoulli_arl,
    bernoulli_lattice,
    bernoulli_threshold,
    calibration_rate,
    clear_thresholds,
    known_thresholds,
    zero_drift_rate,
)
from streams.pipeline.calibration import VERSION, load_calibrations, save_calibrations


@pytest.mark.parametrize("rate", [0.0011, 0.0123, 0.0417, 0.05, 0.0999, 0.2345])
def test_calibration_rate_rounds_up_by_at_most_one_grid_step(rate: float) -> None:
    p0 = rate * 0.9
    p1 = min(2 * p0, (1 + p0) / 2)
    grid = calibration_rate(rate, p0, p1)
    assert rate <= grid <= rate * 2 ** (1 / 32) * 1.000001
    # Nearby rates share the grid point: the point of rounding.
    assert calibration_rate(grid * 0.9999, p0, p1) == grid


def test_a_threshold_at_the_rounded_rate_keeps_the_false_alarm_budget() -> None:
    """Calibrated at the grid rate, the exact ARL0 at the unrounded rate still reaches it."""
    p0, p1, arl0 = 0.02, 0.04, 1e4
    rate = 0.02315
    grid = calibration_rate(rate, p0, p1)
    assert grid < zero_drift_rate(p0, p1)
    lat = bernoulli_lattice(p0, p1)
    h = bernoulli_threshold(p0, p1, arl0, grid)
    assert bernoulli_arl(lat.up, lat.down, h, rate) >= arl0


def test_saved_thresholds_are_reused_without_a_solve(tmp_path: Path) -> None:
    path = tmp_path / "calibrations.json"
    clear_thresholds()
    h = bernoulli_threshold(0.05, 0.1, 1e4, 0.0562)
    assert save_calibrations(path) == 1
    clear_thresholds()
    assert known_thresholds() == {}
    assert load_calibrations(path) == 1
    assert known_thresholds() == {(0.05, 0.1, 1e4, 0.0562): h}
    assert bernoulli_threshold(0.05, 0.1, 1e4, 0.0562) == h


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"version": VERSION + 1, "bernoulli": [[0.05, 0.1, 1e4, None, 12]]}),
        json.dumps({"version": VERSION, "bernoulli": [[0.5, 0.1, 1e4, None, 12]]}),
        json.dumps({"version": VERSION, "bernoulli": [[0.05, 0.1]]}),
    ],
)
def test_a_bad_cache_file_is_ignored(tmp_path: Path, content: str) -> None:
    path = tmp_path / "calibrations.json"
    path.write_text(content)
    clear_thresholds()
    assert load_calibrations(path) == 0
    assert known_thresholds() == {}
    assert load_calibrations(tmp_path / "missing.json") == 0
    assert math.isfinite(bernoulli_threshold(0.05, 0.1, 1e4))


@pytest.mark.slow
def test_backtest_keeps_the_thresholds_it_solved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sentinel backtest`` (like ``replay``, from a file or from Kafka) loads the
    thresholds solved before and saves what it solved, in ``<worker.data_dir>``."""
    from streams.cli.main import main

    monkeypatch.setenv("SENTINEL_WORKER__DATA_DIR", str(tmp_path / "data"))
    events = tmp_path / "events.jsonl"
    argv = ["simulate", "--duration", "2h", "--seed", "4", "--out", str(events), "--quiet"]
    assert main(argv) == 0
    clear_thresholds()
    assert main(["backtest", "--input", str(events), "--compare", "config/sentinel.toml"]) == 0
    assert "unchanged" in capsys.readouterr().out
    solved = dict(known_thresholds())
    assert solved
    clear_thresholds()
    assert load_calibrations(tmp_path / "data" / "calibrations.json") == len(solved)
