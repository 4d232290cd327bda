"""Writing a Markdown report atomically (:mod:`store.atomic`): a killed run never leaves
half a page behind."""

from __future__ import annotations

import json
from pathlib import Path

from store.atomic import atomic_write_text


def write_atomic(path: Path, lines: list[str], summary: dict | None = None) -> None:
    """Write ``lines`` to ``path`` (a Markdown report) atomically, closed by ``summary`` as
    the JSON line the command prints last, when given."""
    if summary is not None:
        lines = [*lines, "## Summary (the script's last line)", "", "```json",
                 json.dumps(summary), "```", ""]
    atomic_write_text(path, "\n".join(lines))
