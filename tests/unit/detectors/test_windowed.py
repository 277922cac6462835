"""Behavioural tests of the confidence and drift detectors, and their test statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from detectors.base import Direction, Signal
from detectors.confidence import ConfidenceShift
from detectors.drift import CategoricalDrift, EmbeddingDrift, LabelMixDrift, NumericDrift
from detectors.twosample import chi2_homogeneity, holm_reject, ks_two_sample


def test_ks_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    ref, win = rng.normal(size=(300, 1)), rng.normal(0.3, size=(80, 1))
    d, p = ks_two_sample(np.sort(ref, axis=0), win)
    expected = stats.ks_2samp(ref[:, 0], win[:, 0], method="asymp")
    assert d[0] == pytest.approx(expected.statistic)
    assert p[0] == pytest.approx(expected.pvalue, rel=0.2)


def test_chi2_matches_scipy() -> None:
    ref, win = np.array([50.0, 30.0, 20.0]), np.array([10.0, 5.0, 15.0])
    stat, p = chi2_homogeneity(ref, win)
    expected = stats.chi2_contingency(np.vstack([ref, win]), correction=False)
    assert (stat, p) == pytest.approx((expected.statistic, expected.pvalue))


def test_holm() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    assert holm_reject(p, 0.05).tolist() == [True, False, False, True]
    assert not holm_reject(np.array([0.02, 0.03]), 0.02).any()


def false_alarm_run_length(det: NumericDrift | ConfidenceShift, xs: list[object]) -> float:
    signals = det.update_many(xs)
    return (len(xs) - det.reference_size) / max(1, len(signals))


@pytest.mark.parametrize("designs", [(), (1.0, 2.0, 4.0)])
def test_numeric_drift_false_alarms_no_more_than_target(designs: tuple[float, ...]) -> None:
    """The bound alpha = stride/arl0 is conservative: ARL0 at least the target. With mean
    tests the window test spends half of it and the four directions the other half; the
    mean charts are exact for their reference but allow for its estimated mean, so the
    whole stays at or above the target (skewed features: normal scores make that moot)."""
    rng = np.random.default_rng(1)
    arl0 = 1000.0
    data = np.column_stack([rng.normal(size=120_000), rng.exponential(size=120_000)])
    xs = [{"a": float(a), "b": float(b)} for a, b in data]
    det = NumericDrift(
        features=("a", "b"), arl0=arl0, reference_size=500, window=100, stride=20, designs=designs
    )
    assert false_alarm_run_length(det, xs) >= arl0


def test_numeric_drift_mean_tests_catch_a_shift_before_the_window_test() -> None:
    """A 1.2 sd shift of one feature: the window test needs a good part of its window past
    the change; the mean CUSUMs (designs for 0.5, 1 and 2 sd) alarm within a few dozen."""
    rng = np.random.default_rng(13)
    delays: dict[tuple[float, ...], list[int]] = {(): [], (1.0, 2.0, 4.0): []}
    for _ in range(12):
        data = rng.lognormal(size=(1300, 2))
        data[1000:, 1] *= np.exp(1.2)  # log-normal: +1.2 sd on the log scale
        xs = [{"a": float(a), "b": float(b)} for a, b in data]
        for designs, out in delays.items():
            det = NumericDrift(features=("a", "b"), arl0=1e6, designs=designs)
            signals = det.update_many(xs)
            assert signals
            first = signals[0]
            assert first.feature == "b"
            out.append(first.last_index - 999)
            if designs:  # a mean test: up, its values in the feature's units
                assert first.direction is Direction.UP
                assert first.effect_size > 0.5
                assert 0.7 < first.baseline < 1.4  # the reference median of lognormal(0, 1)
                assert first.observed > 1.5 * first.baseline
    mean_tests = delays[1.0, 2.0, 4.0]
    assert np.mean(mean_tests) <= 0.5 * np.mean(delays[()])
    assert max(mean_tests) <= 60


def test_numeric_drift_detects_and_names_feature() -> None:
    rng = np.random.default_rng(2)
    det = NumericDrift(features=("a", "b", "c"), arl0=1e5)
    data = rng.normal(size=(3000, 3))
    data[2000:, 1] += 1.0
    signals = det.update_many([dict(zip("abc", map(float, row), strict=True)) for row in data])
    assert signals
    first = signals[0]
    assert first.feature == "b"
    assert 2000 <= first.last_index <= 2000 + 200  # within one window of the change
    assert first.p_value is not None
    assert first.p_value <= det.alpha


def test_a_row_pushed_is_an_update_of_its_mapping() -> None:
    """``push_row`` (the score charts' distribution test) gives the signals and state that
    ``update`` of the same values gives, and refuses to run before the reference is fitted."""
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(size=600), rng.normal(0.8, 1.0, size=400)]).tolist()
    by_map, by_row = (NumericDrift(("x",), arl0=500.0, reference_size=300, window=50) for _ in "ab")
    with pytest.raises(ValueError, match="fitted"):
        by_row.push_row([values[0]])
    signals = {"map": [], "row": []}
    for i, v in enumerate(values):
        signals["map"].append(by_map.update({"x": v}))
        signals["row"].append(by_row.update({"x": v}) if i < 300 else by_row.push_row([v]))
    assert any(s is not None for s in signals["map"]), "the shift should be seen"
    assert signals["map"] == signals["row"]
    assert by_map.get_state() == by_row.get_state()


def test_categorical_and_label_mix_detect() -> None:
    rng = np.random.default_rng(3)
    cats = np.array(["en", "de", "fr"])
    stream = np.concatenate(
        [rng.choice(cats, 3000, p=[0.7, 0.2, 0.1]), rng.choice(cats, 1000, p=[0.45, 0.2, 0.35])]
    )
    cat = CategoricalDrift(features=("locale",), arl0=1e5)
    lab = LabelMixDrift(arl0=1e5)
    for det, xs in ((cat, [{"locale": str(c)} for c in stream]), (lab, [str(c) for c in stream])):
        signals: list[Signal] = det.update_many(xs)
        assert signals
        assert 3000 <= signals[0].last_index <= 3000 + 400
        assert signals[0].feature is not None
        assert signals[0].feature.endswith("=fr") or signals[0].feature.endswith("=en")


def test_categorical_false_alarms_no_more_than_target() -> None:
    rng = np.random.default_rng(4)
    arl0 = 1000.0
    xs = [str(c) for c in rng.choice(["a", "b", "c", "d"], 100_000, p=[0.4, 0.3, 0.2, 0.1])]
    det = LabelMixDrift(arl0=arl0, reference_size=500, window=100, stride=20)
    signals = det.update_many(xs)
    assert (len(xs) - 500) / max(1, len(signals)) >= arl0 / 1.5


def test_embedding_drift_detects_shift() -> None:
    rng = np.random.default_rng(5)
    emb = rng.standard_normal((4000, 32))
    emb[3000:, :8] += 0.5
    det = EmbeddingDrift(arl0=1e5)
    signals = det.update_many([list(map(float, e)) for e in emb])
    assert signals
    assert 3000 <= signals[0].last_index <= 3000 + 400


def test_embedding_rows_made_when_the_test_is_due_change_nothing() -> None:
    """Once fitted, embeddings become rows only when the window test is due or the state
    is read: one-at-a-time updates, with the state read at odd points and restored into
    a fresh detector, give the signals (same observation, same values) and the final
    state of a batch update."""
    rng = np.random.default_rng(9)
    emb = rng.standard_normal((3000, 16))
    emb[2000:, :4] += 0.6
    xs = [list(map(float, e)) for e in emb]
    batch = EmbeddingDrift(arl0=1e4, reference_size=600, window=100)
    expected = batch.update_many(xs)
    det = EmbeddingDrift(arl0=1e4, reference_size=600, window=100)
    got = []
    for i, x in enumerate(xs):
        if i % 97 == 13:
            fresh = EmbeddingDrift(arl0=1e4, reference_size=600, window=100)
            fresh.set_state(det.get_state())
            det = fresh
        if (signal := det.update(x)) is not None:
            got.append(signal)
    assert expected, "the shift went unseen"
    assert [s.model_dump() for s in got] == [s.model_dump() for s in expected]
    assert det.get_state() == batch.get_state()


def _shifted_embeddings(seed: int, dim: int, norm: float, n: int, at: int) -> list[list[float]]:
    """``n`` standard normal embeddings of ``dim`` numbers whose mean moves by ``norm`` in a
    random direction from index ``at`` on."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim))
    v = rng.standard_normal(dim)
    emb[at:] += v * norm / np.linalg.norm(v)
    return [list(map(float, e)) for e in emb]


def _first_alarm(det: EmbeddingDrift, xs: list[list[float]]) -> int | None:
    for i, x in enumerate(xs):
        if det.update(x) is not None:
            return i
    return None


def test_embedding_distance_charts_find_a_shift_the_window_test_misses() -> None:
    """A shift of 3 standard deviations among 384 dimensions moves the distance to the
    reference mean by a third of its spread: the KS window over 200 embeddings does not
    reject it at the budget's alpha in 1,500 embeddings, the distance's mean charts do,
    on every seed. Seeded; the bounds could fail."""
    for seed in range(4):
        xs = _shifted_embeddings(seed, 384, 3.0, 3000, 1500)
        window = _first_alarm(EmbeddingDrift(arl0=1e8), xs)
        charted = _first_alarm(EmbeddingDrift(arl0=1e8, designs=(1.0, 2.0, 4.0)), xs)
        assert window is None, (seed, window)
        assert charted is not None, seed
        assert 1500 <= charted < 3000, (seed, charted)


def test_embedding_distance_charts_stay_quiet_on_a_clean_stream() -> None:
    """No alarm on 20,000 clean 64-dimensional embeddings after the reference (the
    detector's ARL0 is 1e6: a chance alarm here has probability about 2 %, seeded)."""
    xs = _shifted_embeddings(3, 64, 0.0, 21_000, 21_000)
    det = EmbeddingDrift(arl0=1e6, designs=(1.0, 2.0, 4.0))
    assert det.update_many(xs) == []
    assert det._charts
    assert det._charts[0].ratio < 1.0


def test_an_embedding_state_saved_without_charts_gets_them_on_restore() -> None:
    """A fitted embedding detector saved by a release without the distance charts
    restores into one with them: they start on the saved reference and find the shift."""
    xs = _shifted_embeddings(1, 384, 3.0, 3000, 1500)
    old = EmbeddingDrift(arl0=1e8)
    old.update_many(xs[:1200])
    state = old.get_state()
    assert "charts" not in state
    new = EmbeddingDrift(arl0=1e8, designs=(1.0, 2.0, 4.0))
    new.set_state(state)
    alarm = _first_alarm(new, xs[1200:])
    assert alarm is not None
    assert 300 <= alarm < 1800, alarm


@pytest.mark.parametrize("designs", [(1.0,), (1.0, 2.0, 4.0)])
def test_confidence_false_alarms_within_factor_two(designs: tuple[float, ...]) -> None:
    """Three tests share arl0 (each direction splits its share over its designs); the
    mean CUSUMs are exact for the empirical reference, the remaining error comes from
    estimating the reference from 1000 scores."""
    rng = np.random.default_rng(6)
    arl0 = 2000.0
    alarms, events = 0, 0
    for _ in range(4):
        det = ConfidenceShift(arl0=arl0, designs=designs)
        xs = [float(v) for v in rng.beta(8.0, 2.0, 31_000)]
        alarms += len(det.update_many(xs))
        events += 30_000
    assert arl0 / 2 <= events / max(alarms, 1)


@pytest.mark.parametrize(("delta", "direction"), [(-0.5, Direction.DOWN), (0.5, Direction.UP)])
def test_confidence_mean_shift_both_directions(delta: float, direction: Direction) -> None:
    rng = np.random.default_rng(7)
    delays = []
    for _ in range(20):
        det = ConfidenceShift(arl0=1e5)
        ref = rng.normal(0.7, 0.1, 1000)
        assert det.update_many([float(v) for v in ref]) == []
        signals = det.update_many([float(v) for v in rng.normal(0.7 + delta * 0.1, 0.1, 3000)])
        assert signals
        assert signals[0].direction is direction
        delays.append(signals[0].last_index - 1000 + 1)
    # Siegmund: h ~ 19 sd at 3e5 for k = 0.25, delay ~ (h + 1.166) / (0.5 - 0.25) ~ 80.
    assert np.median(delays) <= 120


def test_designs_for_larger_shifts_catch_a_large_shift_sooner() -> None:
    """A chart for 0.5 sd reacts to a 1.5 sd drop at about half the optimal speed; with
    designs for 1 and 2 sd beside it (each at three times the ARL0) the same streams alarm
    sooner, and a 0.5 sd drop costs the split little."""
    rng = np.random.default_rng(11)
    delays: dict[tuple[float, tuple[float, ...]], list[int]] = {}
    for _ in range(20):
        ref = [float(v) for v in rng.normal(0.7, 0.1, 1000)]
        for delta in (1.5, 0.5):
            after = [float(v) for v in rng.normal(0.7 - delta * 0.1, 0.1, 3000)]
            for designs in ((1.0,), (1.0, 2.0, 4.0)):
                det = ConfidenceShift(arl0=1e5, designs=designs)
                assert det.update_many(ref) == []
                signals = det.update_many(after)
                assert signals
                assert signals[0].direction is Direction.DOWN
                delays.setdefault((delta, designs), []).append(signals[0].last_index - 999)
    one, three = (1.0,), (1.0, 2.0, 4.0)
    assert np.mean(delays[1.5, three]) <= 0.8 * np.mean(delays[1.5, one])
    assert np.mean(delays[0.5, three]) <= 1.1 * np.mean(delays[0.5, one])


def test_state_saved_before_designs_restores_as_one_design() -> None:
    """State of the earlier layout (scalars per direction) continues where it stopped."""
    rng = np.random.default_rng(12)
    xs = [float(v) for v in rng.normal(0.7, 0.1, 1500)]
    det = ConfidenceShift(arl0=1e4, reference_size=500)
    det.update_many(xs[:1200])
    state = det.get_state()
    old = {k: v for k, v in state.items() if k not in ("kq", "h", "s", "start", "sum", "ep")}
    old["kq"] = state["kq"][0]
    old["ep_up"], old["ep_down"] = state["ep"]
    for key in ("h", "s", "start", "sum"):
        old[f"{key}_up"], old[f"{key}_down"] = state[key][0][0], state[key][1][0]
    restored = ConfidenceShift(arl0=1e4, reference_size=500)
    restored.set_state(old)
    assert restored.get_state() == state
    tail = [x - 0.05 for x in xs[1200:]]
    assert restored.update_many(tail) == det.update_many(tail)
    with pytest.raises(ValueError, match="design"):
        ConfidenceShift(arl0=1e4, reference_size=500, designs=(1.0, 2.0)).set_state(old)
    with pytest.raises(ValueError, match="designs"):
        ConfidenceShift(designs=(2.0, 4.0))


def test_confidence_shape_change_caught_by_distribution_test() -> None:
    """Same mean and spread, different shape: only the KS test can see it."""
    rng = np.random.default_rng(8)
    det = ConfidenceShift(arl0=1e5)
    assert det.update_many([float(v) for v in rng.normal(0.7, 0.1, 1000)]) == []
    bimodal = 0.7 + 0.1 * rng.choice([-1.0, 1.0], 2000) + rng.normal(0, 0.01, 2000)
    signals = det.update_many([float(v) for v in bimodal])
    assert signals
    assert signals[0].feature == "distribution"
    assert signals[0].last_index <= 1000 + 400


def test_small_window_gets_a_proportional_stride() -> None:
    det = NumericDrift(arl0=1e4, window=20)
    assert det.alpha == pytest.approx(5 / 1e4)
    with pytest.raises(ValueError, match="stride"):
        NumericDrift(window=20, stride=50)


@pytest.mark.parametrize("seed", range(4))
def test_rows_pushed_in_slices_equal_rows_pushed_one_by_one(seed: int) -> None:
    """``push_rows`` adds the rows between two tests as slices: the same tests at the same
    rows (alarms included, which empty the window) and the same window as ``push_row``."""
    rng = np.random.default_rng(seed)
    params: dict[str, Any] = {
        "features": ("a",), "arl0": 500.0, "reference_size": 200, "window": 50, "stride": 7
    }  # fmt: skip
    one, sliced = NumericDrift(**params), NumericDrift(**params)
    for v in rng.normal(size=200).tolist():
        one.update({"a": v})
        sliced.update({"a": v})
    rows = [[v] for v in np.concatenate([rng.normal(size=500), rng.normal(1.0, size=700)])]
    want = [s for row in rows if (s := one.push_row(row)) is not None]
    got, i = [], 0
    while i < len(rows):
        size = int(rng.choice([1, 3, 7, 50, 120, 400]))
        got += sliced.push_rows(rows[i : i + size])
        i += size
    assert len(want) >= 3
    assert got == want
    assert sliced.get_state() == one.get_state()


@pytest.mark.parametrize("seed", range(3))
def test_numeric_drift_in_batches_equals_its_steps(seed: int) -> None:
    """With mean charts, a batch goes through each feature's chart in one call and the
    window in slices; the signals merge per observation as a step merges them (a mean
    alarm naming a window alarm on the same observation in its details)."""
    rng = np.random.default_rng(seed)
    params: dict[str, Any] = {
        "features": ("a", "b"), "arl0": 2_000.0, "reference_size": 300, "window": 60,
        "stride": 15, "designs": (1.0, 2.0),
    }  # fmt: skip
    steps, batched = NumericDrift(**params), NumericDrift(**params)
    a = np.concatenate([rng.normal(size=1300), rng.normal(0.8, size=900), rng.normal(size=600)])
    b = np.concatenate([rng.exponential(size=1800), rng.exponential(2.0, size=1000)])
    xs = [{"a": float(u), "b": float(v)} for u, v in zip(a, b, strict=True)]
    want = [s for x in xs if (s := steps.update(x)) is not None]
    got, i = [], 0
    while i < len(xs):
        size = int(rng.choice([1, 10, 64, 250, 900]))
        got += batched.update_many(xs[i : i + size])
        i += size
    assert {s.details.get("test") for s in want} == {1.0, None}  # mean and window alarms
    assert got == want
    assert batched.get_state() == steps.get_state()


@pytest.mark.parametrize("designs", [(), (1.0, 2.0, 4.0)])
def test_embeddings_of_another_size_are_skipped(designs: tuple[float, ...]) -> None:
    """Embeddings of another size than the first one (a producer that changed encoders
    part-way) are skipped, in the reference and after it: before, the first one broke
    the key for good (every later test and every state read raised). A batch with them
    gives what the steps give."""
    xs = _shifted_embeddings(2, 16, 3.0, 3000, 2000)
    odd = _shifted_embeddings(3, 12, 0.0, 3000, 3000)
    mixed = [odd[i] if i % 97 == 5 else x for i, x in enumerate(xs)]
    steps = EmbeddingDrift(arl0=1e5, designs=designs, reference_size=600, window=100)
    signals = [s for x in mixed if (s := steps.update(x)) is not None]
    assert signals, "the shift went unseen"
    assert signals[0].last_index >= 2000 - 2000 // 97  # the odd ones are not counted
    batch = EmbeddingDrift(arl0=1e5, designs=designs, reference_size=600, window=100)
    assert [s.model_dump() for s in batch.update_many(mixed)] == [s.model_dump() for s in signals]
    assert batch.get_state() == steps.get_state()
    clean = EmbeddingDrift(arl0=1e5, designs=designs, reference_size=600, window=100)
    clean.update_many([x for i, x in enumerate(xs) if i % 97 != 5])
    assert clean.get_state() == steps.get_state()
