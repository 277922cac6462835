"""Conformance suite: every registered detector, found through ``detectors.registry``.

After river's ``check_estimator``: state survives JSON and pickle round-trips, reset gives
a fresh detector, the same seed gives the same result, inputs are not mutated, batch
updates equal sequential ones, and signals are well formed.
"""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest

from detectors import registry
from detectors.base import Detector
from tests.unit.detectors.cases import CASES, update_each

N = 1200


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> tuple[type[Detector[Any]], dict[str, Any]]:
    cls, params = request.param
    return cls, params


def test_registry_is_complete() -> None:
    import detectors

    exported = [getattr(detectors, n) for n in detectors.__all__]
    detector_classes = {
        c for c in exported if isinstance(c, type) and issubclass(c, Detector) and c is not Detector
    }
    assert detector_classes <= {*registry.REGISTRY.values(), *registry.OPTIONAL.values()}


def test_stream_raises_signals(case: tuple[type[Detector[Any]], dict[str, Any]]) -> None:
    cls, params = case
    signals = update_each(cls(**params), cls._conformance_stream(0, N))
    assert signals, "the conformance stream must exercise the alarm path"
    for s in signals:
        assert s.detector == cls.__name__
        assert s.kind == cls.kind
        assert s.first_index <= s.last_index < N
        assert s.n_observations == s.last_index - s.first_index + 1
        assert s.statistic >= s.threshold


@pytest.mark.parametrize("codec", ["json", "pickle"])
def test_state_round_trip(case: tuple[type[Detector[Any]], dict[str, Any]], codec: str) -> None:
    cls, params = case
    xs = cls._conformance_stream(1, N)
    reference = cls(**params)
    expected = update_each(reference, xs)
    for cut in (N // 10, N // 2):
        det = cls(**params)
        head = update_each(det, xs[:cut])
        if codec == "json":
            restored = cls(**params)
            restored.set_state(json.loads(json.dumps(det.get_state())))
        else:
            restored = pickle.loads(pickle.dumps(det))
        assert head + update_each(restored, xs[cut:]) == expected
        assert restored.get_state() == reference.get_state()


def test_reset_restores_start(case: tuple[type[Detector[Any]], dict[str, Any]]) -> None:
    cls, params = case
    det = cls(**params)
    fresh_state = json.dumps(det.get_state())
    update_each(det, cls._conformance_stream(2, N))
    det.reset()
    assert json.dumps(det.get_state()) == fresh_state
    clone = det.clone()
    assert clone.params() == det.params() == cls(**params).params()
    assert json.dumps(clone.get_state()) == fresh_state


def test_same_seed_same_result(case: tuple[type[Detector[Any]], dict[str, Any]]) -> None:
    cls, params = case
    a = update_each(cls(**params), cls._conformance_stream(3, N))
    b = update_each(cls(**params), cls._conformance_stream(3, N))
    assert a == b


def test_input_not_mutated(case: tuple[type[Detector[Any]], dict[str, Any]]) -> None:
    cls, params = case
    xs = cls._conformance_stream(4, N)
    before = copy.deepcopy(xs)
    det = cls(**params)
    update_each(det, xs)
    det.update_many(xs)
    assert xs == before


def test_update_many_equals_sequential(case: tuple[type[Detector[Any]], dict[str, Any]]) -> None:
    cls, params = case
    xs = cls._conformance_stream(5, N)
    seq, batch = cls(**params), cls(**params)
    expected = update_each(seq, xs)
    got = batch.update_many(xs[:7]) + batch.update_many(xs[7:])
    assert got == expected
    assert batch.get_state() == seq.get_state()


def test_state_is_json_compatible(case: tuple[type[Detector[Any]], dict[str, Any]]) -> None:
    cls, params = case
    det = cls(**params)
    update_each(det, cls._conformance_stream(6, N))
    state = det.get_state()
    assert json.loads(json.dumps(state)) == _as_read(state)


def _as_read(value: Any) -> Any:
    """``value`` as a JSON reader sees it: tuples (a state's :class:`~detectors.base.Frozen`
    references) are arrays, read back as lists."""
    if isinstance(value, dict):
        return {k: _as_read(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_read(v) for v in value]
    return value


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="known: "):
        registry.create("no_such_detector")


def test_alibi_backend_names_extra_and_licence() -> None:
    try:
        import alibi_detect  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("alibi-detect is installed; the error path cannot be exercised")
    with pytest.raises(ImportError, match=r"sentinel-ai-incidents\[alibi\].*Business Source"):
        registry.create("alibi_online_drift")


@pytest.mark.parametrize("name", sorted(registry.REGISTRY))
def test_learning_ends_once_the_baseline_is_known(name: str) -> None:
    """``learning`` ends once the baseline/reference is learned; never true forever."""
    cls = registry.REGISTRY[name]
    for params in cls._conformance_params():
        det = cls(**params)
        stream = cls._conformance_stream(0, 20_000)
        for x in stream:
            det.update(x)
        assert not det.learning, f"{name} still learning after {len(stream)} observations"
