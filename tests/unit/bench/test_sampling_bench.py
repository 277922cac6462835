"""bench/sampling.py's scenarios and table on hand-made outcomes (the bench never runs)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bench.sampling import INJECTED_AT, LASTING, MODEL, Case, Outcome, main, report, scenario


def test_each_case_injects_its_type_on_the_busy_model_after_the_warm_up() -> None:
    sc = scenario(Case("harm_spike", 0.1, 3, 3.0, 72_000))
    assert sc.events_per_hour == 72_000
    assert sc.duration == timedelta(hours=3)
    (inj,) = sc.injections
    assert (inj.type, inj.start, inj.duration, inj.scope) == (
        "harm_spike",
        INJECTED_AT,
        LASTING,
        {"model": MODEL},
    )
    assert scenario(Case("clean", 1.0, 3, 3.0, 72_000)).injections == []


def test_the_table_sets_each_scenario_beside_its_sample() -> None:
    def out(kind: str, fraction: float, delay: float | None, triggers: int = 1) -> Outcome:
        return Outcome(Case(kind, fraction, 0, 3.0, 72_000), delay, triggers, 1000, 10.0)

    rows = report(
        [
            out("toxicity_spike", 1.0, 2.0),
            out("toxicity_spike", 0.1, 5.0),
            out("harm_spike", 1.0, 4.0),
            out("harm_spike", 0.1, None, 0),
            out("clean", 1.0, None, 0),
            out("clean", 0.1, None, 0),
        ],
        0.1,
    )
    assert "sampled 0.1 [min]" in rows[0]
    tox, harm, clean = (row.split() for row in rows[1:])
    assert tox[:4] == ["toxicity_spike", "2.0", "5.0", "2.50"]
    assert harm[:4] == ["harm_spike", "4.0", "missed", "n/a"]
    assert clean[:4] == ["clean", "-", "-", "n/a"]
    assert clean[-2:] == ["0", "0"]  # false incidents: none either way


def test_a_fraction_outside_zero_to_one_is_refused() -> None:
    for bad in ("0", "1", "1.5"):
        with pytest.raises(SystemExit):
            main(["--fraction", bad])
