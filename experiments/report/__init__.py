"""docs/RESULTS.md and its plots, from the result files of ``make results`` alone: the header
(:mod:`.header`) and one module per section (:mod:`.losses`, :mod:`.online`,
:mod:`.speakers`, :mod:`.views`, :mod:`.confidence`, :mod:`.costs`, :mod:`.tail`); the noise rule behind
every verdict: :mod:`.stats`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.markdown import write_atomic
from experiments.report import (
    confidence,
    costs,
    header,
    losses,
    online,
    speakers,
    tail,
    views,
)
from experiments.report.page import Report
from experiments.runs import Layout, Run


def write_report(runs: list[Run], layout: Layout, settings: dict[str, Any],
                 path: Path) -> dict[str, Any]:
    """Write the report (and plots) from the kept results; -> the JSON summary."""
    page = Report(runs, layout, settings, path)
    for section in (header, losses, online, speakers, views, confidence, costs, tail):
        section.write(page)
    write_atomic(path, page.lines, page.summary)
    return page.summary
