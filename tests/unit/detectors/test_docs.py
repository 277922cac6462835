"""The examples in the detectors' docstrings run and give the figures they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import detectors

MODULES = [m.name for m in pkgutil.iter_modules(detectors.__path__, "detectors.")]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
