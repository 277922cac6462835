"""The cases that every registered detector must pass: each detector of
``detectors.registry`` with each of its conformance parameter sets (found automatically,
so a new detector is checked without editing the suites that use them)."""

from __future__ import annotations

from typing import Any

import pytest

from detectors import registry
from detectors.base import Detector, Signal

CASES = [
    pytest.param((cls, params), id=f"{name}-{i}")
    for name, cls in registry.REGISTRY.items()
    for i, params in enumerate(cls._conformance_params())
]


def update_each(det: Detector[Any], xs: list[Any]) -> list[Signal]:
    """The signals of ``det.update`` called on each of ``xs`` in turn."""
    return [s for x in xs if (s := det.update(x)) is not None]
