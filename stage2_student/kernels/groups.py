"""TRKD's and dual-group KD's teacher side: the teacher buckets (``buckets.teacher_probs``,
whatever target-logit convention produced them) regrouped per row, as Numba kernels.

Same conventions as the bucket kernel: float32 in and out, preallocated outputs, inner loops
without libm, rows split in chunks over Numba threads when asked (``rows.run_rows``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from stage2_student.kernels.buckets import TeacherBuckets
from stage2_student.kernels.rows import CHUNK, FASTMATH, check_out, run_rows

__all__ = ["TriageBuckets", "triage_probs", "DualGroupBuckets", "dual_group_probs"]

_F32_TINY = np.float32(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class TriageBuckets:
    """TRKD's teacher side for one batch at one tau (float32 unless noted, C-contiguous).

    mass:      [B, 3]  (target, confusion set, background) probabilities
    confusion: [B, k'] the teacher's distribution conditioned on the confusion set, which is
               the first ``size`` kept speakers (columns from ``size`` on are 0)
    size:      [B]     int32, 1..k' (0 when k' = 0)
    capped:    [B]     bool: the set wanted more than the k' kept speakers
    """

    mass: np.ndarray
    confusion: np.ndarray
    size: np.ndarray
    capped: np.ndarray

    @classmethod
    def empty(cls, batch: int, k_prime: int) -> TriageBuckets:
        """Preallocated outputs for ``triage_probs(..., out=...)``."""
        return cls(mass=np.empty((batch, 3), np.float32),
                   confusion=np.empty((batch, k_prime), np.float32),
                   size=np.empty(batch, np.int32), capped=np.empty(batch, np.bool_))


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _triage_rows(lo, hi, binary, nontarget, budget, mass, confusion, size, capped):
    """Rows lo..hi-1. The confusion set is the smallest prefix (cache order: descending)
    of the kept speakers whose share of the non-target mass reaches tau, found from the
    back: the background is the tail plus the longest run of last kept speakers whose
    share stays below budget = 1 - tau. The suffix form needs no total (a prefix sum
    compared with tau * total would hinge on rounding at tau = 1), and the strict '<' keeps
    every kept speaker in the set at tau = 1, as the definition does, even one whose float32
    share underflowed to 0. (It differs from '>= tau' only where a prefix's share equals tau
    to the last bit; the set then takes one more speaker.)"""
    k_prime = confusion.shape[1]
    for i in range(lo, hi):
        rest = nontarget[i, k_prime]  # the tail, with speakers k'..k-1 folded in
        bound = rest > budget  # even all k' kept speakers are short of tau
        n = k_prime
        if not bound:
            while n > 1 and rest + nontarget[i, n - 1] < budget:
                n -= 1
                rest += nontarget[i, n]
        s_conf = np.float32(0.0)
        for j in range(n):
            s_conf += nontarget[i, j]
        r_conf = np.float32(1.0) / s_conf if s_conf > 0 else np.float32(0.0)
        for j in range(n):
            confusion[i, j] = nontarget[i, j] * r_conf
        for j in range(n, k_prime):
            confusion[i, j] = 0.0
        # Group masses as shares of 1 - p_t (kept at full relative precision by the
        # bucket kernel), not as sums of the full distribution's small entries.
        mass[i, 0] = binary[i, 0]
        mass[i, 1] = binary[i, 1] * s_conf
        mass[i, 2] = binary[i, 1] * rest
        size[i] = n
        capped[i] = bound


@njit(parallel=True, cache=True, nogil=True)
def _triage_parallel(binary, nontarget, budget, mass, confusion, size, capped):
    n = binary.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        _triage_rows(c * CHUNK, min(n, (c + 1) * CHUNK), binary, nontarget, budget, mass,
                     confusion, size, capped)


def _as_rows(name: str, x, n: int | None, width: int | None) -> np.ndarray:
    """A [n, width] float32 C-contiguous copy-if-needed of a bucket array (numpy or tensor)."""
    if hasattr(x, "detach"):  # a torch tensor (online mode builds buckets with torch)
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or (n is not None and x.shape[0] != n) or (width is not None
                                                              and x.shape[1] != width):
        want = f"[{'B' if n is None else n}, {'k' if width is None else width}]"
        raise ValueError(f"{name} must be {want}, got shape {x.shape}")
    return x


def triage_probs(teacher: TeacherBuckets, tau: float, out: TriageBuckets | None = None,
                 parallel: bool | None = None) -> TriageBuckets:
    """TRKD's three masses and confusion-set distribution from teacher buckets at ``tau``.

    Args:
        teacher: ``teacher_probs`` output (only ``binary`` and ``nontarget`` are read; numpy
            or torch). Its kept speakers must be in the cache's descending order.
        tau: 0 < tau <= 1, the share of the non-target mass the confusion set covers.
        out: optional preallocated outputs (``TriageBuckets.empty(B, k')``).
        parallel: as in :func:`teacher_probs`.

    Returns:
        TriageBuckets. Where even the k' kept speakers hold less than tau of the non-target
        mass, the set is capped at k' (``capped``) and the tail alone is the background.

    >>> from stage2_student.kernels import teacher_probs
    >>> b = teacher_probs(np.array([3.0], np.float32), np.array([[2.0, 1.0]], np.float16),
    ...                   np.array([-np.inf], np.float32), k_prime=2, temperature=1.0)
    >>> t = triage_probs(b, tau=0.5)
    >>> t.size, t.mass.round(4), t.confusion
    (array([1], dtype=int32), array([[0.6652, 0.2447, 0.09  ]], dtype=float32), array([[1., 0.]], dtype=float32))
    """
    if not (math.isfinite(tau) and 0.0 < tau <= 1.0):
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    binary = _as_rows("teacher.binary", teacher.binary, None, 2)
    n = binary.shape[0]
    nontarget = _as_rows("teacher.nontarget", teacher.nontarget, n, None)
    k_prime = nontarget.shape[1] - 1
    if out is None:
        out = TriageBuckets.empty(n, k_prime)
    else:
        check_out(out, {"mass": ((n, 3), np.float32),
                                "confusion": ((n, k_prime), np.float32),
                                "size": ((n,), np.int32), "capped": ((n,), np.bool_)},
                          f"TriageBuckets.empty({n}, {k_prime})")
    if n == 0:
        return out
    args = (binary, nontarget, np.float32(1.0 - tau), out.mass, out.confusion, out.size,
            out.capped)
    run_rows(_triage_rows, _triage_parallel, n, args, parallel)
    return out


@dataclass(frozen=True)
class DualGroupBuckets:
    """Dual-group KD's teacher side for one batch (float32, C-contiguous).

    primary: [B, k'+1] the teacher's distribution restricted to (target, k' speakers)
    binary:  [B, 2]    (primary mass, rest mass), softened where ``soften`` > 1
    soften:  [B]       per-row temperature of the binary term (1: not softened)
    """

    primary: np.ndarray
    binary: np.ndarray
    soften: np.ndarray

    @classmethod
    def empty(cls, batch: int, k_prime: int) -> DualGroupBuckets:
        """Preallocated outputs for ``dual_group_probs(..., out=...)``."""
        return cls(primary=np.empty((batch, k_prime + 1), np.float32),
                   binary=np.empty((batch, 2), np.float32), soften=np.empty(batch, np.float32))


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _dual_group_rows(lo, hi, full, cap, soft_low, soft_high, primary, binary, soften):
    """Rows lo..hi-1; ``cap`` > 0 turns on the softening (see :func:`dual_group_probs`)."""
    k1 = primary.shape[1]
    for i in range(lo, hi):
        s = np.float32(0.0)
        for j in range(k1):
            s += full[i, j]
        # A subnormal group mass (only a lone target far below the rest gives one) has no
        # float32 reciprocal: 1/s is inf. Treat it as 0, as teacher_probs' exp already does
        # below the smallest normal; a one-entry group's KL is 0 either way.
        r = np.float32(1.0) / s if s >= _F32_TINY else np.float32(0.0)
        for j in range(k1):
            primary[i, j] = full[i, j] * r
        rest = full[i, k1]
        t = np.float32(1.0)
        p_primary, p_rest = s, rest
        if cap > 0 and rest >= _F32_TINY and s >= _F32_TINY:
            # One log per row, outside the vectorised loops.
            odds = np.float32(math.log(s / rest))  # the teacher's binary log-odds
            if abs(odds) > cap:
                t = abs(odds) / cap
                p_primary, p_rest = (soft_high, soft_low) if odds > 0 else (soft_low, soft_high)
        binary[i, 0] = p_primary
        binary[i, 1] = p_rest
        soften[i] = t


@njit(parallel=True, cache=True, nogil=True)
def _dual_group_parallel(full, cap, soft_low, soft_high, primary, binary, soften):
    n = full.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        _dual_group_rows(c * CHUNK, min(n, (c + 1) * CHUNK), full, cap, soft_low, soft_high,
                         primary, binary, soften)


def dual_group_probs(teacher: TeacherBuckets, log_odds_cap: float | None = None,
                     out: DualGroupBuckets | None = None,
                     parallel: bool | None = None) -> DualGroupBuckets:
    """Dual-group KD's primary distribution and binary masses from teacher buckets.

    The primary group is the target plus the k' kept speakers; the rest (tail) enters only
    through the binary (primary, rest) masses.

    Adaptive softening (ours: the paper's rule is not public): with ``log_odds_cap`` = c > 0,
    a row whose binary log-odds ``l = log(primary / rest)`` exceed c in magnitude gets the
    temperature ``t = |l| / c``, which sets its binary distribution to ``sigmoid(+-c)``;
    rows within the cap keep t = 1. Rows with a zero group mass (no rest group, or a mass
    below float32's smallest normal, which the cache's float32 probabilities cannot hold)
    are not softened: there is nothing to soften, and the student's empty group could not
    follow.

    Args:
        teacher: ``teacher_probs`` output (only ``full`` is read; numpy or torch).
        log_odds_cap: c > 0, or None (default) for no softening.
        out: optional preallocated outputs (``DualGroupBuckets.empty(B, k')``).
        parallel: as in :func:`teacher_probs`.

    >>> from stage2_student.kernels import teacher_probs
    >>> b = teacher_probs(np.array([3.0], np.float32), np.array([[2.0, 1.0]], np.float16),
    ...                   np.array([-np.inf], np.float32), k_prime=1, temperature=1.0)
    >>> d = dual_group_probs(b, log_odds_cap=1.0)
    >>> d.primary.round(4), d.binary.round(4), d.soften.round(4)
    (array([[0.7311, 0.2689]], dtype=float32), array([[0.7311, 0.2689]], dtype=float32), array([2.3133], dtype=float32))
    """
    if log_odds_cap is not None and not (math.isfinite(log_odds_cap) and log_odds_cap > 0):
        raise ValueError(f"log_odds_cap must be a positive finite number or None, "
                         f"got {log_odds_cap}")
    full = _as_rows("teacher.full", teacher.full, None, None)
    n, k_prime = full.shape[0], full.shape[1] - 2
    if k_prime < 0:
        raise ValueError(f"teacher.full must have k'+2 >= 2 columns, got shape {full.shape}")
    if out is None:
        out = DualGroupBuckets.empty(n, k_prime)
    else:
        check_out(out, {"primary": ((n, k_prime + 1), np.float32),
                                "binary": ((n, 2), np.float32), "soften": ((n,), np.float32)},
                          f"DualGroupBuckets.empty({n}, {k_prime})")
    if n == 0:
        return out
    cap = 0.0 if log_odds_cap is None else float(log_odds_cap)
    soft_low = 1.0 / (1.0 + math.exp(cap))  # sigmoid(-c), and its complement without 1 - x
    args = (full, np.float32(cap), np.float32(soft_low), np.float32(1.0 / (1.0 + math.exp(-cap))),
            out.primary, out.binary, out.soften)
    run_rows(_dual_group_rows, _dual_group_parallel, n, args, parallel)
    return out
