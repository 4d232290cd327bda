"""Where the repository's folders are: the experiments read and write docs/ there, and run
its entry points in scripts/ (an editable install keeps the package in the checkout)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCRIPTS = ROOT / "scripts"
