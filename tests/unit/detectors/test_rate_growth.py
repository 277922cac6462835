"""A young learned rate grows from what its chart sees at rest (``BernoulliCusum.
growing_at_rest``): a warm-up that came out low is corrected instead of paging for days,
merges happen only at rest, and every path (one at a time, batches, counted non-events,
saved state) merges alike."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from detectors.adaptive_rate import AdaptiveDownvoteSpike
from detectors.base import AT_REST, GROWTH_CHUNK
from detectors.rate import MATURE_WARMUPS, BernoulliCusum

SHIFTS = (0.5, 1.0, 3.0)


def _low_warmup(seed: int, n: int = 20_000) -> np.ndarray:
    """Downvotes at 5.8 % whose first 600 came at 3.3 % (as the clean week's summarizer)."""
    rng = np.random.default_rng(10_000 + seed)
    flags = rng.random(n) < 0.058
    flags[:600] = rng.random(600) < 0.033
    return flags


def _chart(merge_at_rest: bool, arl0: float = 5e8) -> AdaptiveDownvoteSpike:
    return AdaptiveDownvoteSpike(
        relative_shifts=SHIFTS, arl0=arl0, warmup=300, merge_at_rest=merge_at_rest
    )


@pytest.mark.parametrize("seed", [7, 14, 17])
def test_a_low_warmup_is_corrected_instead_of_paging(seed: int) -> None:
    flags = _low_warmup(seed)
    old, new = _chart(False), _chart(True)
    assert len(old.update_many(flags)) >= 5  # cleared observations only: it pages for days
    assert new.update_many(flags) == []
    baselines = [d.baseline for d in new._parts]
    assert min(baselines) > 0.048  # the true rate is 5.8 %
    assert max(baselines) < 0.068
    assert all(d.reference[0] > 15_000 for d in new._parts)


def _part(**kw: object) -> BernoulliCusum:
    return BernoulliCusum(relative_shift=0.5, arl0=1e6, warmup=300, **kw)  # type: ignore[arg-type]


def test_merges_only_while_young_without_prior_and_at_rest() -> None:
    det = _part()
    flags = _low_warmup(7, 6000)
    merged_up = []  # the reference grew while the CUSUM was up: a merge
    for x in flags.tolist():
        before = det.reference[0]
        was_young = det.growing_at_rest
        det.update(x)
        if det.reference[0] > before and det.statistic > 0:
            merged_up.append((was_young, det.statistic / det.threshold))
    assert merged_up
    assert all(young for young, _ in merged_up)
    # The statistic keeps its height in nats; the new threshold is at least 0.65x the old
    # one in nats, so a merged chart stands under its threshold.
    assert all(ratio < AT_REST / 0.65 for _, ratio in merged_up)
    assert det.reference[0] >= MATURE_WARMUPS * det.warmup
    assert not det.growing_at_rest  # mature: from cleared observations only

    floored = _part()
    floored.adopt_prior(0.05, 300.0)
    assert not floored.growing_at_rest  # a parent's prior floors it instead


def test_nothing_is_merged_while_an_alarmed_episode_lasts() -> None:
    rng = np.random.default_rng(3)
    det = _part()
    det.update_many(rng.random(400) < 0.05)
    det.update_many(rng.random(64) < 0.2)  # the warm-up's last events: young, growing at rest
    assert det.growing_at_rest
    wave = rng.random(3000) < 0.15
    signals = det.update_many(wave[:1500])
    assert signals
    ref = det.reference[0]
    resting = 0  # block ends at which, outside an alarmed episode, it would merge
    for x in wave[1500:].tolist():  # the change goes on: it is not merged
        det.update(x)
        if det.reference[0] > ref and det.episode_alarmed:
            assert det.statistic == 0  # only a return to zero clears, as before
        ref = det.reference[0]
        resting += det.seen % GROWTH_CHUNK == 0 and 0 < det.statistic < AT_REST * det.threshold
    assert resting
    assert det.episode_alarmed
    assert det.growing_at_rest


@pytest.mark.parametrize("seed", [7, 18])
def test_batches_and_counted_non_events_merge_as_one_at_a_time(seed: int) -> None:
    flags = _low_warmup(seed, 8000)
    one = _chart(True, arl0=1e5)
    seq = [s.last_index for s in (one.update(bool(x)) for x in flags) if s is not None]
    many = _chart(True, arl0=1e5)
    cuts = [0, 333, 1000, 1001, 2718, 5000, 8000]
    vec = [s.last_index for a, b in itertools.pairwise(cuts) for s in many.update_many(flags[a:b])]
    assert seq == vec
    assert json.dumps(one.get_state()) == json.dumps(many.get_state())
    part_one, part_many = _part(), _part()
    merges = 0
    for x in flags.tolist():
        before = part_one.reference[0]
        part_one.update(x)
        merges += part_one.reference[0] > before and part_one.statistic > 0
    part_many.update_many(flags)
    assert part_one.get_state() == part_many.get_state()
    assert merges  # it merged, not only cleared


def test_state_saved_before_merges_loads_and_goes_on() -> None:
    flags = _low_warmup(14, 4000)
    det = _part()
    det.update_many(flags[:1000])
    state = det.get_state()
    old = {k: v for k, v in state.items() if k not in ("mt", "mk", "recent")}
    restored = _part()
    restored.set_state(json.loads(json.dumps(old)))
    assert restored.get_state()["mt"] == state["start"]
    restored.update_many(flags[1000:])
    assert restored.reference[0] > 1000
    # The saved state is the detector's own copy: updating after get_state leaves it be.
    recent = list(state["recent"])
    det.update_many(flags[1000 : 1000 + 4 * GROWTH_CHUNK])
    assert state["recent"] == recent


def test_a_given_or_frozen_baseline_does_not_grow() -> None:
    assert not BernoulliCusum(p0=0.05).growing_at_rest
    frozen = _part(max_reference=400)
    frozen.update_many(_low_warmup(7, 1000))
    assert frozen.calibrated
    assert not frozen.growing_at_rest
    assert frozen.get_state()["recent"] == []  # nothing a merge would read is saved


def test_a_threshold_lowered_under_the_statistic_alarms_at_the_next_event_on_every_path() -> None:
    rng = np.random.default_rng(5)
    flags = rng.random(6000) < 0.05
    flags[3000:3400] |= rng.random(400) < 0.06  # an excursion to lower the threshold under
    one, many = _part(merge_at_rest=False), _part(merge_at_rest=False)
    for det in (one, many):
        det.update_many(flags[:3300])
        assert det.statistic > 0
        det.set_arl0(10.0)  # far under the statistic: the next event alarms
    seq = [s.last_index for s in (one.update(x) for x in flags[3300:].tolist()) if s is not None]
    vec = [s.last_index for s in many.update_many(flags[3300:])]
    assert seq == vec
    assert flags[seq[0]]  # on an event, as update does


def test_a_floor_that_moved_with_its_parent_is_applied_at_rest() -> None:
    """A segment floored at its parent's low first estimate follows the parent's
    re-estimate where a block ends at rest, not only at a return to zero that a chart
    designed below its rate may never reach; batches apply it at the same observation."""
    rng = np.random.default_rng(11)
    flags = rng.random(3000) < 0.058
    det = _part()
    det.adopt_prior(0.03, 100.0)  # the parent's first estimate, low
    t = 0
    while not (0.5 < det.statistic < 0.3 * det.threshold and det.seen % GROWTH_CHUNK > 8):
        det.update(bool(flags[t]))
        t += 1
    state = json.loads(json.dumps(det.get_state()))
    batch = _part()
    batch.adopt_prior(0.03, 100.0)
    batch.set_state(state)
    for d in (det, batch):
        assert d.adopt_prior(0.055, 100.0)  # the parent re-estimated: the floor moves
    low = det.baseline
    # Up to the block's end, an event in 10: the chart stays up, under half its threshold.
    block = np.arange(GROWTH_CHUNK - det.seen % GROWTH_CHUNK) % 10 == 9
    for x in block.tolist():
        det.update(x)
    assert det.statistic > 0  # no return to zero: the floor moved at rest
    assert det.baseline > 1.5 * low
    batch.update_many(block)
    assert det.get_state() == batch.get_state()
