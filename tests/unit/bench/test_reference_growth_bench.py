"""bench/reference_growth.py: both references in one run, with their ratios."""

from __future__ import annotations

import re

import pytest

from bench.reference_growth import main


def test_the_bench_prints_fixed_and_growing_references_with_ratios(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--seeds", "2"]) == 0
    out = capsys.readouterr().out
    clean = re.search(r"nominal ([\d.]+)\s+fixed ([\d.]+)\s+growing ([\d.]+)\s+ratio (\S+)", out)
    assert clean is not None, out
    assert float(clean.group(1)) == pytest.approx(1e4 / 3e4, abs=1e-3)
    skewed = re.search(r"fixed ([\d.]+) per stream .*growing ([\d.]+) \(", out)
    assert skewed is not None, out
    assert float(skewed.group(2)) < float(skewed.group(1))  # the warm-up stops paging
    rows = re.findall(r"^\s+(0\.5|0\.85)\s+(\d+)\s+.*\s([\d.]+|n/a)$", out, re.M)
    assert len(rows) == 6, out


def test_the_bench_needs_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--seeds", "0"])
    assert "--seeds needs at least 1" in capsys.readouterr().err
