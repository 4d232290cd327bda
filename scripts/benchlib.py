"""What every benchmark and experiment script shares: naming the machine it ran on and
writing its report atomically (a killed run never leaves half a page in docs/).

The scripts run as files (``python scripts/bench_dump.py``), so this module is imported
as ``benchlib`` from their own folder.

Example::

    >>> cores() >= 1 and bool(cpu_name())
    True
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from store.atomic import atomic_write_text


def cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1/5/15-minute load averages, e.g. ``"0.46 / 0.80 / 1.16"``: how much other work
    shared the cores (above their count, wall times are inflated)."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def write_atomic(path: Path, lines: list[str], summary: dict | None = None) -> None:
    """Write ``lines`` to ``path`` (a Markdown report) atomically (:mod:`store.atomic`),
    closed by ``summary`` as the JSON line the script prints last, when given."""
    if summary is not None:
        lines = [*lines, "## Summary (the script's last line)", "", "```json",
                 json.dumps(summary), "```", ""]
    atomic_write_text(path, "\n".join(lines))
