"""The score kinds of bench/calibration.py: a guardrail's bimodal score and an LLM judge's
1-5 score, each with a shift that its chart's side must catch (issue 13: judge and
guardrail results are failures the playbook names)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.calibration import (
    BLOCK,
    GUARDRAIL_BLOCK_RATE,
    JUDGE_SCORES,
    JUDGE_SCORES_DROPPED,
    Kind,
    _guardrail_score,
    _judge_score,
    kinds,
    run_delay,
)


def _kind(prefix: str) -> Kind:
    [kind] = [k for k in kinds() if k.name.startswith(prefix)]
    return kind


def test_the_score_generators_draw_what_they_state() -> None:
    rng = np.random.default_rng(59)
    n = 200_000
    for shift in (1.0, 4.0):
        scores = _guardrail_score(shift)(rng, n)
        blocking = float(np.mean(scores > 0.5))  # Beta(8, 2) against Beta(1, 12)
        assert blocking == pytest.approx(GUARDRAIL_BLOCK_RATE * shift, rel=0.05)
    for probabilities in (JUDGE_SCORES, JUDGE_SCORES_DROPPED):
        judged = _judge_score(probabilities)(rng, n)
        shares = [float(np.mean(judged == v)) for v in (1.0, 2.0, 3.0, 4.0, 5.0)]
        assert shares == pytest.approx(probabilities, abs=0.005)


@pytest.mark.parametrize(
    ("prefix", "side"), [("guardrail score", "up:mean"), ("judge score", "down:mean")]
)
def test_each_score_kinds_shift_is_caught_by_the_side_it_moves(prefix: str, side: str) -> None:
    kind = _kind(prefix)
    assert kind.changed == side
    delays = run_delay(kind, 1e4, 3, 4 * BLOCK)
    # Every seed's shift is caught (run_delay leaves out those it gives up on after 20
    # blocks), within a few thousand verdicts at 1e4 events between false alarms.
    assert len(delays) == 3
    assert max(delays) < 2_500, delays
