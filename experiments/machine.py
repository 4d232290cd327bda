"""The machine a measurement ran on: its CPU, usable cores, memory, software and load.

Example::

    >>> cores() >= 1 and bool(cpu_name())
    True
    >>> "cores usable" in machine()
    True
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from types import ModuleType


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


def machine(*libraries: ModuleType) -> str:
    """One line: CPU, usable cores, memory, OS, Python, torch and its device, then the
    version of each of ``libraries`` (e.g. ``numpy``, ``zarr``) a measurement depends on."""
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    device = (f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available()
              else "CPU only")
    versions = "".join(f", {lib.__name__} {lib.__version__}" for lib in libraries)
    return (f"{cpu_name()}, {cores()} cores usable, {mem:.0f} GiB, {platform.system()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, {device}"
            f"{versions}")
