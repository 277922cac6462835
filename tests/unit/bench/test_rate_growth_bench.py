"""bench/rate_growth.py: both rules in one run, with their ratios."""

from __future__ import annotations

import re

import pytest

from bench.rate_growth import main


def test_the_bench_prints_both_rules_with_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "2"]) == 0
    out = capsys.readouterr().out
    clean = re.findall(r"rate (\d+)%: nominal ([\d.]+)\s+cleared ([\d.]+)\s+at rest ([\d.]+)", out)
    assert [(rate, float(nominal)) for rate, nominal, _, _ in clean] == [("5", 10.0), ("1", 10.0)]
    low = re.search(r"cleared ([\d.]+) per stream \((\d) of 2 streams\)\s+at rest ([\d.]+)", out)
    assert low is not None, out
    rows = re.findall(r"^\s+([\d.]+)x\s+([\d,]+)\s+.*\s([\d.]+|n/a)$", out, re.M)
    assert len(rows) == 6, out
    assert re.search(r"cleared \d of 2\s+at rest \d of 2", out), out


def test_the_bench_needs_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--seeds", "0"])
    assert "--seeds needs at least 1" in capsys.readouterr().err
