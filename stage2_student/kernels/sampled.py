"""The sampled tail's teacher side: per drawn class, its weight and the teacher's
log-probability, as a Numba kernel over the teacher buckets.

Input per row at temperature T: the teacher buckets at k' = k (``buckets.teacher_probs``,
whose last column is the exact tail mass: ``Q_tail`` of the non-target distribution,
``P_tail`` of the full one), the cache's ``tail_lse`` column and the row's draws (class ids,
teacher logits ``z_m``, optional counts; see ``store.tail.TailDraws``). Output, [B, M] each:

* ``nt_weight[m]  = Q_tail * c_m / sum(c)``  and ``nt_logq[m]   = log Q_tail + z_m/T - tail_lse``
* ``full_weight[m] = P_tail * c_m / sum(c)`` and ``full_logp[m] = log P_tail + z_m/T - tail_lse``

with ``c_m`` the column's count (1 per draw with replacement, 0 for an id of -1). The
log-probabilities are exact (the normaliser is the cache's); only the choice of the
classes is random. Where a weight is 0 (padding, an empty tail, a tail mass that
underflowed float32) its log-probability is written as 0, so ``weight * (...)`` stays 0.
``losses.sampled`` turns these into the unbiased tail terms of KD and NCKD.

Precision: float32 rounding of the bucket probabilities (relative 1e-7) plus the float16
rounding of the stored logits (``|z|`` 2^-11), as for the buckets.

Example::

    >>> import numpy as np
    >>> from stage2_student.kernels import teacher_probs
    >>> b = teacher_probs(np.array([3.0], np.float32), np.array([[2.0]], np.float16),
    ...                   np.array([1.0], np.float32), k_prime=1, temperature=1.0)
    >>> s = sampled_tail_probs(b, np.array([1.0], np.float32), np.array([[0.0, 0.0]], np.float32),
    ...                        np.array([[7, 7]]), temperature=1.0)
    >>> s.nt_weight.round(4), s.nt_logq.round(4)  # Q_tail = 0.2689 split over two draws
    (array([[0.1345, 0.1345]], dtype=float32), array([[-2.3133, -2.3133]], dtype=float32))
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from stage2_student.kernels.buckets import TeacherBuckets, _as_f32, teacher_probs
from stage2_student.kernels.rows import CHUNK, FASTMATH, check_out, run_rows

__all__ = ["SampledTail", "sampled_tail_probs", "bench_sampled"]


@dataclass(frozen=True)
class SampledTail:
    """The teacher side of a sampled tail for one batch, float32 [B, M] each.

    nt_weight, nt_logq:     weight and log-probability of each column in the teacher's
                            non-target distribution (NCKD)
    full_weight, full_logp: the same in its full distribution (KD)
    """

    nt_weight: np.ndarray
    nt_logq: np.ndarray
    full_weight: np.ndarray
    full_logp: np.ndarray

    @classmethod
    def empty(cls, batch: int, m: int) -> SampledTail:
        """Preallocated outputs for ``sampled_tail_probs(..., out=...)``."""
        return cls(*(np.empty((batch, m), np.float32) for _ in range(4)))


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _rows(lo, hi, nontarget, full, tail, index, count, use_count, logit, inv_t,
          nt_weight, nt_logq, full_weight, full_logp):
    """Rows lo..hi-1; ``logit`` is float32, or float16 bits as uint16. ``count`` is only
    read when ``use_count`` (else every id >= 0 is one draw)."""
    m = index.shape[1]
    last = nontarget.shape[1] - 1
    for i in range(lo, hi):
        total = np.float32(0.0)
        for j in range(m):
            c = np.float32(count[i, j]) if use_count else np.float32(1.0)
            c = c if index[i, j] >= 0 else np.float32(0.0)
            nt_weight[i, j] = c  # scratch: the column's count
            total += c
        r = np.float32(1.0) / total if total > 0 else np.float32(0.0)
        q_tail = nontarget[i, last]
        p_tail = full[i, last + 1]
        # log-probability of a drawn class = log(tail mass) + its log-share of the tail
        off_q = math.log(q_tail) - np.float64(tail[i]) if q_tail > 0 else 0.0
        off_p = math.log(p_tail) - np.float64(tail[i]) if p_tail > 0 else 0.0
        for j in range(m):
            share = nt_weight[i, j] * r
            u = np.float64(_as_f32(logit[i, j])) * inv_t
            nt_weight[i, j] = q_tail * share
            full_weight[i, j] = p_tail * share
            nt_logq[i, j] = np.float32(u + off_q) if nt_weight[i, j] > 0 else np.float32(0.0)
            full_logp[i, j] = np.float32(u + off_p) if full_weight[i, j] > 0 else np.float32(0.0)


@njit(parallel=True, cache=True, nogil=True)
def _rows_parallel(nontarget, full, tail, index, count, use_count, logit, inv_t,
                   nt_weight, nt_logq, full_weight, full_logp):
    n = index.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        _rows(c * CHUNK, min(n, (c + 1) * CHUNK), nontarget, full, tail, index, count, use_count,
              logit, inv_t, nt_weight, nt_logq, full_weight, full_logp)


def sampled_tail_probs(teacher: TeacherBuckets, tail_lse: np.ndarray, tail_logit: np.ndarray,
                       tail_index: np.ndarray, temperature: float,
                       tail_count: np.ndarray | None = None, out: SampledTail | None = None,
                       parallel: bool | None = None) -> SampledTail:
    """Weights and teacher log-probabilities of a batch's drawn tail classes.

    Args:
        teacher: ``teacher_probs(...)`` of the same rows at the same T with **k' = k** (the
            draws come from outside the cache's top-k; a smaller k' would fold kept
            speakers into the tail mass).
        tail_lse: float32 [B], the cache's ``tail_lse`` column of T.
        tail_logit: float16 or float32 [B, M], the drawn classes' teacher logits.
        tail_index: int [B, M], the drawn classes (-1: padding).
        temperature: T > 0, the column the draws and ``tail_lse`` were made at.
        tail_count: None (M draws with replacement) or [B, M] non-negative counts.
        out: optional preallocated outputs (``SampledTail.empty(B, M)``).
        parallel: as ``teacher_probs``.

    Raises:
        ValueError: on shapes or a temperature that do not fit.
    """
    nontarget = np.ascontiguousarray(teacher.nontarget, np.float32)
    full = np.ascontiguousarray(teacher.full, np.float32)
    tail_lse = np.ascontiguousarray(tail_lse, np.float32)
    tail_index = np.ascontiguousarray(tail_index)
    tail_logit = np.ascontiguousarray(tail_logit)
    n = nontarget.shape[0]
    if tail_index.ndim != 2 or tail_index.shape[0] != n or tail_logit.shape != tail_index.shape:
        raise ValueError(f"tail_index {tail_index.shape} and tail_logit {tail_logit.shape} must "
                         f"both be [B={n}, M]")
    if tail_lse.shape != (n,):
        raise ValueError(f"tail_lse must have shape ({n},), got {tail_lse.shape}")
    if tail_logit.dtype not in (np.float16, np.float32):
        raise ValueError(f"tail_logit must be float16 or float32, got {tail_logit.dtype}")
    if tail_count is not None and np.shape(tail_count) != tail_index.shape:
        raise ValueError(f"tail_count must have shape {tail_index.shape}, got "
                         f"{np.shape(tail_count)}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    m = tail_index.shape[1]
    if out is None:
        out = SampledTail.empty(n, m)
    else:
        check_out(out, {name: ((n, m), np.float32) for name in
                        ("nt_weight", "nt_logq", "full_weight", "full_logp")},
                  f"SampledTail.empty({n}, {m})")
    if n == 0 or m == 0:
        return out
    count = tail_index if tail_count is None else np.ascontiguousarray(tail_count)
    logit = tail_logit.view(np.uint16) if tail_logit.dtype == np.float16 else tail_logit
    args = (nontarget, full, tail_lse, tail_index, count, tail_count is not None, logit,
            1.0 / float(temperature), out.nt_weight, out.nt_logq, out.full_weight, out.full_logp)
    run_rows(_rows, _rows_parallel, n, args, parallel)
    return out


def bench_sampled(rows: int = 262_144, k: int = 32, m: int = 32, threads: int = 2,
                  repeats: int = 5) -> dict[str, float]:
    """Rows per second of ``teacher_probs`` (k' = k), of ``sampled_tail_probs`` and of the
    two in a row, on synthetic float16 rows, best of ``repeats``, on ``threads`` threads.

    An informal measurement (no test asserts a timing); e.g. ``bench_sampled(threads=2)``.
    """
    rng = np.random.default_rng(0)
    target = rng.normal(20, 4, rows).astype(np.float32)
    topk = -np.sort(-rng.normal(8, 3, (rows, k)), axis=1).astype(np.float16)
    tail_lse = rng.normal(9, 1, rows).astype(np.float32)
    index = rng.integers(0, 5994, (rows, m)).astype(np.int16)
    logit = rng.normal(0, 3, (rows, m)).astype(np.float16)
    buckets, out = TeacherBuckets.empty(rows, k), SampledTail.empty(rows, m)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        def best(fn) -> float:
            fn()  # compile / warm
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return rows / min(times)

        def heads():
            teacher_probs(target, topk, tail_lse, k, 2.0, out=buckets, parallel=True)

        def draws():
            sampled_tail_probs(buckets, tail_lse, logit, index, 2.0, out=out, parallel=True)

        return {"teacher_probs": best(heads), "sampled_tail_probs": best(draws),
                "both": best(lambda: (heads(), draws()))}
    finally:
        numba.set_num_threads(before)
