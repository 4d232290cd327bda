"""The docs cannot drift from the code: docs/ARCHITECTURE.md names every module the repository
tracks, and no page (generated or written) carries a path of the machine that wrote it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from experiments.markdown import _ABSOLUTE, portable

REPO = Path(__file__).resolve().parents[1]


def tracked(*patterns: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return out.stdout.split()


def test_architecture_lists_every_module():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    modules = [f for f in tracked("*.py") if not f.startswith("tests/")]
    missing = [f for f in modules if f"`{f}`" not in text]
    assert missing == [], f"docs/ARCHITECTURE.md does not list {missing}"


def test_architecture_lists_every_test_file():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    tests = [f for f in tracked("tests/*.py") if not f.endswith("__init__.py")]
    missing = [f for f in tests if f"`{f}`" not in text]
    assert missing == [], f"docs/ARCHITECTURE.md does not list {missing}"


def test_no_page_holds_an_absolute_path():
    pages = [f for f in tracked("*.md") if not f.startswith("docs/results/runs/")]
    found = {f: m.group(0) for f in pages
             for m in [_ABSOLUTE.search((REPO / f).read_text())] if m}
    assert found == {}


def test_portable_paths():
    assert portable("in /a/b/c/d.png and /x", Path("/a/b")) == "in c/d.png and /x"
    assert portable("see /data/vox/train, rows/s", Path("/srv")) == "see .../vox/train, rows/s"
