"""The docstring examples of the library run as doctests (scikit-image style: examples that run)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sum_core

# Modules that run code on import (the CLI entry point) are not collected.
_SKIP = {"sum_core.cli.__main__"}

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(sum_core.__path__, prefix="sum_core.")
    if info.name not in _SKIP
)


def test_every_module_is_collected():
    assert "sum_core.predictor" in MODULES and "sum_core.api" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"
