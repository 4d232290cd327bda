"""Every ``>>>`` example in the packages' docstrings runs and prints what it shows: an example
that drifted from the code fails here."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("speaker", "store", "stage1_teacher", "stage2_student", "experiments")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"


def test_examples_are_found() -> None:
    """The collection above is not empty by accident: a module known to hold examples."""
    finder = doctest.DocTestFinder()
    tests = finder.find(importlib.import_module("experiments.recipes"))
    assert sum(len(t.examples) for t in tests) >= 2
