"""bench/state.py --flush: one simulated hour, both flushes printed with their ratios."""

from __future__ import annotations

import re

import pytest

from bench.state import main


def test_the_flush_of_mature_keys_prints_both_ways_and_sends_fewer_bytes_apart(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--flush", "1"]) == 0
    out = capsys.readouterr().out
    base = re.search(r"every value in place \(baseline\)\s+\d+ ms\s+1\.00\s+([\d,]+)\s+1\.00", out)
    apart = re.search(r"frozen values stored once\s+\d+ ms\s+[\d.]+\s+([\d,]+)\s+([\d.]+)", out)
    assert base is not None, out
    assert apart is not None, out
    sent = int(apart.group(1).replace(",", ""))
    assert 0 < sent < int(base.group(1).replace(",", ""))
    assert float(apart.group(2)) < 1.0


def test_the_flush_needs_a_positive_number_of_hours(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--flush", "0"])
    assert "--flush needs a positive number of hours" in capsys.readouterr().err
