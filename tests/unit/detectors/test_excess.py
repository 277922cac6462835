"""The read-only excess accessor: an episode spans a change across alarms and ends after it."""

from __future__ import annotations

import numpy as np

from detectors.adaptive_rate import AdaptiveBernoulliCusum
from detectors.base import Direction
from detectors.confidence import ConfidenceShift
from detectors.coverage import POOLED, HarmRate
from detectors.moderation import ToxicityRate
from detectors.rate import BernoulliCusum


def stream(seed: int, rates: list[tuple[float, int]]) -> list[bool]:
    rng = np.random.default_rng(seed)
    return [bool(v) for p, n in rates for v in rng.random(n) < p]


def test_episode_spans_the_change_through_alarms_and_clears_after_it() -> None:
    det = BernoulliCusum(p0=0.05, arl0=1e4)
    xs = stream(1, [(0.05, 2000), (0.15, 2000)])
    signals = det.update_many(xs)
    assert len(signals) >= 3  # a persisting shift alarms again and again...
    ex = det.excess()
    assert ex is not None
    assert ex.alarmed
    # ...but the episode is one: it starts near the change and holds its whole excess
    assert ex.n > 1500
    assert ex.excess > 0.8 * (0.10 * 2000)
    assert ex.surprise > 50
    before = det.get_state()
    det.excess()
    assert det.get_state() == before  # read-only
    det.update_many(stream(2, [(0.05, 4000)]))
    after = det.excess()
    assert after is not None
    assert not after.alarmed
    assert after.n < 2000


def test_update_many_and_update_agree_on_the_episode() -> None:
    xs = stream(3, [(0.05, 3000), (0.12, 1500), (0.05, 3000)])
    a, b = BernoulliCusum(warmup=500, arl0=5e3), BernoulliCusum(warmup=500, arl0=5e3)
    assert a.update_many(xs) == [s for x in xs if (s := b.update(x)) is not None]
    assert a.get_state() == b.get_state()
    assert a.excess() == b.excess()


def test_state_saved_without_episode_restores() -> None:
    det = BernoulliCusum(p0=0.05, arl0=1e4)
    det.update_many(stream(4, [(0.05, 500)]))
    old = {
        k: v for k, v in det.get_state().items() if k not in ("e", "ep_start", "ep_k", "ep_alarmed")
    }
    fresh = BernoulliCusum(p0=0.05, arl0=1e4)
    fresh.set_state(old)
    ex = fresh.excess()
    assert ex is not None
    assert ex.n == 0
    assert not ex.alarmed


def test_category_adaptive_and_confidence_accessors() -> None:
    tox = ToxicityRate(categories=("toxicity", "hate"), warmup=500, arl0=1e4)
    rng = np.random.default_rng(5)
    for i in range(4000):
        p = 0.02 if i < 2000 else 0.10
        tox.update({"toxicity": float(rng.random() < p), "hate": 0.0})
    t = tox.excess("toxicity")
    h = tox.excess("hate")
    assert t is not None
    assert t.alarmed
    assert t.excess > 50
    assert h is None or not h.alarmed
    assert tox.excess("violence") is None

    ada = AdaptiveBernoulliCusum(warmup=500, arl0=1e4)
    ada.update_many(stream(6, [(0.05, 2000), (0.2, 800)]))
    a = ada.excess()
    assert a is not None
    assert a.alarmed
    assert a.excess > 0

    conf = ConfidenceShift(arl0=1e4, reference_size=500)
    for v in rng.beta(12, 3, 1500):
        conf.update(float(v))
    for v in rng.beta(12, 3, 600) - 0.15:
        conf.update(float(v))
    down = conf.excess(None, Direction.DOWN)
    up = conf.excess(None, Direction.UP)
    assert down is not None
    assert down.alarmed
    assert down.excess > 0
    assert up is not None
    assert not up.alarmed


def test_a_change_stays_alarmed_after_a_large_design_fired_first_and_went_quiet() -> None:
    """A 16x design catches the burst that starts a 3x change, then drifts back to zero
    under 3x before the 1.5x design alarms: the change is still on (the 1.5x episode,
    which began before the alarm, is up), so the detector must read as alarmed; and it
    reads clear once that episode ends after the change."""
    det = AdaptiveBernoulliCusum(p0=0.01, relative_shifts=(0.5, 15.0), arl0=1e5)
    assert det.update_many([False] * 3000 + [True] * 8)  # the burst: the 16x design fires
    rng = np.random.default_rng(3)
    gap_seen = False
    for x in rng.random(3000) < 0.03:
        det.update(bool(x))
        ex = det.excess()
        assert ex is not None
        if not any(p.episode_alarmed for p in det._parts):
            gap_seen = True  # no part's own episode is alarmed...
            assert ex.alarmed  # ...yet the change that alarmed is still on
    assert gap_seen
    det.update_many([False] * 20_000)
    ex = det.excess()
    assert ex is not None
    assert not ex.alarmed
    restored = AdaptiveBernoulliCusum(p0=0.01, relative_shifts=(0.5, 15.0), arl0=1e5)
    restored.set_state(det.get_state())
    assert restored.get_state() == det.get_state()


def test_category_rates_report_each_category_and_the_pooled_episode() -> None:
    """A harm spike in one category is that category's episode (and the pooled one's), not
    another category's: the localizer reads it per key, the incident's probes follow it."""
    det = HarmRate(max_categories=3, warmup=500, arl0=1e4)
    rng = np.random.default_rng(7)
    n = 6000
    sexual = rng.random(n) < np.where(np.arange(n) < 3000, 0.01, 0.06)
    hate = rng.random(n) < 0.01
    det.update_many(
        [{"sexual": bool(s), "hate": bool(h)} for s, h in zip(sexual, hate, strict=True)]
    )
    s_ex, h_ex, pooled = det.excess("sexual"), det.excess("hate"), det.excess(POOLED)
    assert s_ex is not None
    assert s_ex.alarmed
    assert s_ex.excess > 0.5 * 0.05 * 3000
    assert h_ex is not None
    assert not h_ex.alarmed
    assert pooled is not None
    assert pooled.alarmed
    assert det.excess("violence") is None  # never seen: not watched
    assert det.excess(None) is None
    det.update_many([{"sexual": bool(s)} for s in rng.random(30_000) < 0.01])
    after = det.excess("sexual")
    assert after is not None
    assert not after.alarmed


def test_category_state_saved_before_its_observation_count_restores_it() -> None:
    """State of an older release has no ``n``: the pooled test, which saw every
    observation, gives it, so signals keep the key's indices after an upgrade."""
    det = HarmRate(max_categories=3, warmup=500, arl0=1e4)
    det.update_many([{"hate": False}] * 300 + [{"hate": False, "sexual": True}] * 200)
    state = det.get_state()
    assert state["n"] == 500
    older = {k: v for k, v in state.items() if k != "n"}
    restored = HarmRate(max_categories=3, warmup=500, arl0=1e4)
    restored.set_state(older)
    assert restored.get_state() == state
