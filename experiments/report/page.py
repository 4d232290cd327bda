"""The report being written: read access to the finished runs, its lines, its JSON summary
and its plots (paths relative to the page)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from experiments.runs import Layout, Run


class Results:
    """Read access to the finished runs of a plan."""

    def __init__(self, runs: list[Run], layout: Layout) -> None:
        self.runs = {r.name: r for r in runs}
        self.layout = layout
        self.res = {r.name: layout.result(r.name) for r in runs}

    def get(self, name: str) -> dict | None:
        """The result of run ``name`` (None: not finished)."""
        return self.res.get(name)

    def seeds(self, pattern: str) -> list[dict]:
        """Results of ``pattern.format(seed=s)`` for every planned seed, in seed order."""
        out = []
        for s in range(10):
            r = self.res.get(pattern.format(seed=s))
            if r is not None:
                out.append(r)
        return out


def plot(path: Path, draw) -> None:
    """A 5 x 3.5 in figure drawn by ``draw(ax)``, saved atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from store.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.5))
    draw(ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


class Report:
    """The page under way: ``lines`` and ``summary`` (the JSON line) grow section by section."""

    def __init__(self, runs: list[Run], layout: Layout, settings: dict[str, Any],
                 path: Path) -> None:
        self.r = Results(runs, layout)
        self.layout, self.settings, self.path = layout, settings, path
        self.plots = layout.results / "plots"
        self.summary: dict[str, Any] = {}
        self.lines: list[str] = []

    def rel(self, p: Path) -> str:
        """``p`` relative to the page's folder (the page holds no absolute path)."""
        return os.path.relpath(p, self.path.parent)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)
