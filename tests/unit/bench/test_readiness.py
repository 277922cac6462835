"""The quality bench says whether an injection met a young key (bench/quality.readiness)."""

from __future__ import annotations

import numpy as np

from bench.quality import readiness
from streams.pipeline.detectorset import FACTORIES, DetectorSet
from streams.settings import load_settings


def _set() -> DetectorSet:
    return DetectorSet(load_settings(env={}).detection, "model", 1e6)


def test_a_judge_chart_is_learning_until_its_reference_is_full() -> None:
    ds = _set()
    assert readiness(ds, "judge_score_drop", None) == "absent"
    assert readiness(None, "judge_score_drop", None) == "absent"
    assert readiness(ds, "bad_deploy", None) == "n/a"
    chart = FACTORIES["eval_score"].make(ds, ("llm-judge", "faithful"))
    ds.detectors["eval_score:llm-judge,faithful"] = chart
    rng = np.random.default_rng(3)
    reference = ds.settings.evaluation_warmup_events
    for x in rng.beta(8, 2, reference - 1):
        chart.update(float(x))
    assert readiness(ds, "judge_score_drop", None) == "learning"
    chart.update(0.8)
    assert readiness(ds, "judge_score_drop", None) == "ready"


def test_a_harm_spike_is_judged_by_its_own_category() -> None:
    ds = _set()
    harm = FACTORIES["harm"].make(ds, ())
    ds.detectors["harm"] = harm
    rng = np.random.default_rng(4)
    # toxicity is common enough to learn a baseline; sexual never occurs (stays learning).
    for hit in rng.random(20_000) < 0.03:
        harm.update({"toxicity": bool(hit), "sexual": False})
    assert readiness(ds, "harm_spike", "toxicity") == "ready"
    assert readiness(ds, "harm_spike", "sexual") == "learning"
    assert readiness(ds, "toxicity_spike", "self_harm") == "ready"  # the pooled test
