"""Every ``>>>`` example in the packages' docstrings (and the demo's shared recipes) runs and
prints what it shows: an example that drifted from the code fails here."""

from __future__ import annotations

import doctest
import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("speaker", "store", "stage1_teacher", "stage2_student")
SCRIPTS = ("recipes",)  # scripts/ modules with examples that other scripts import


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names + [f"scripts/{name}" for name in SCRIPTS]


def _import(name: str):
    if not name.startswith("scripts/"):
        return importlib.import_module(name)
    scripts = str(REPO / "scripts")
    sys.path.insert(0, scripts)  # as the scripts import each other: by their file name
    try:
        return importlib.import_module(name.removeprefix("scripts/"))
    finally:
        sys.path.remove(scripts)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_hold(name: str) -> None:
    module = _import(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"


def test_examples_are_found() -> None:
    """The collection above is not empty by accident: a module known to hold examples."""
    finder = doctest.DocTestFinder()
    tests = finder.find(_import("scripts/recipes"))
    assert sum(len(t.examples) for t in tests) >= 2
