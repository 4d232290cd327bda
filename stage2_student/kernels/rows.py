"""What the row kernels share: their fast-math flags, the rows per parallel task, the check of
preallocated outputs, and the one thread dispatch (``run_rows``).

Every kernel is a pair of Numba functions: ``rows(lo, hi, *args)`` fills rows lo..hi-1 of
its outputs, and ``rows_parallel(*args)`` runs it over ``CHUNK``-row chunks on Numba's
threads (each spells its arguments out: a parfor takes no ``*args`` holding a tuple, such as
the margin's constants). ``run_rows`` picks one of the two.

Numba caches each compiled kernel keyed on its own source file, and ``FASTMATH`` and ``CHUNK``
are compiled into the kernels: after changing either, touch ``buckets.py`` and ``groups.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

__all__ = ["FASTMATH", "CHUNK", "use_threads", "run_rows", "check_out"]

# Fast-math flags that are safe here: reassociation lets LLVM vectorise the sums,
# 'arcp'/'contract' allow reciprocal-multiply and FMA. 'ninf' (and 'nnan', 'afn') are
# deliberately absent: an empty tail is a real -inf and exp(-inf) must stay exactly 0.
FASTMATH = {"reassoc", "contract", "arcp", "nsz"}

CHUNK = 512  # rows per parallel task: amortises the call, keeps outputs in separate lines

# The process that imported the kernels. Numba's default threading layer here is GNU
# OpenMP, which kills a forked child that launches threads after its parent did (measured:
# "fork() called from a process already using GNU OpenMP, this is unsafe" and a hung Pool);
# DataLoader workers are such children. They call a kernel's `rows` directly instead: the
# workers are the parallelism there, and `rows` never touches the threading layer.
_IMPORT_PID = os.getpid()


def use_threads(parallel: bool | None) -> bool:
    """Whether a kernel runs on Numba's threads: ``parallel`` if given, else only in the
    process that imported the kernels (not in processes forked from it)."""
    return os.getpid() == _IMPORT_PID if parallel is None else parallel


def run_rows(rows: Callable, rows_parallel: Callable, n: int, args: tuple,
             parallel: bool | None) -> None:
    """Run a kernel over rows 0..n-1: ``rows_parallel(*args)`` where :func:`use_threads`
    allows threads, ``rows(0, n, *args)`` otherwise."""
    if use_threads(parallel):
        rows_parallel(*args)
    else:
        rows(0, n, *args)


def check_out(out, want: dict[str, tuple[tuple[int, ...], type]], maker: str) -> None:
    """Refuse preallocated outputs whose fields are not writeable C-contiguous arrays of the
    shape and dtype in ``want`` ({field: (shape, dtype)}); ``maker`` says how to make them."""
    for name, (shape, dtype) in want.items():
        arr = getattr(out, name)
        if (not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype
                or not arr.flags.c_contiguous or not arr.flags.writeable):
            raise ValueError(f"out.{name} must be a writeable C-contiguous {np.dtype(dtype)} "
                             f"array of shape {shape}; use {maker}")
