"""Teacher-side bucket probabilities from the cache, as parallel Numba kernels.

A cache row holds the teacher's target logit ``z_t`` (no margin), its top-k non-target
logits ``z_1..z_k`` (sorted descending by the cache; the kernel does not rely on the order;
usually float16) and ``tail_lse`` = logsumexp of
``z_i / T`` over the remaining non-target speakers. For a temperature ``T`` and any
``k' <= k`` this module returns, per row,

* ``full``      = softmax([z_t/T, z_1/T .. z_k'/T, L_tail'])       shape [B, k'+2]
* ``binary``    = [p_t, 1 - p_t]                                   shape [B, 2]
* ``nontarget`` = softmax([z_1/T .. z_k'/T, L_tail'])              shape [B, k'+1]

with ``L_tail' = logaddexp(tail_lse, logsumexp(z_{k'+1..k} / T))`` (entries past k' are
folded into the tail). ``1 - p_t`` is the sum of the non-target buckets, never ``1 - p``,
so it keeps full relative precision when ``p_t`` is close to 1.

Precision: the kernel's own error is float32 rounding (about 1e-7 relative; tested to 1e-6
absolute against a float64 reference). The cache's float16 top-k logits are not the
teacher's: each is off by up to 2^-11 |z| (0.016 at |z| = 32), so every log-probability
here is off by up to 2^-10 max|z| / T against the teacher's full logits (see
tests/stage2_student/losses/test_kd_logits.py for the bound this gives on a loss).

With ``margin`` (the ``--kd-logits margin`` convention) the target logit first gets the
teacher head's margin, by the formula in :mod:`speaker.models.margin`.

How the kernel stays stable without a single ``log``: per row it takes
``M = max(z_1/T .. z_k/T, tail_lse)`` and ``m = max(z_t/T, M)``, forms
``e_j = exp(z_j/T - M)`` (all <= 1, the largest is 1, so the non-target normaliser is
>= 1 and never underflows even when the target dominates by thousands of nats), and
rescales once by ``exp(M - m)`` for the distribution that includes the target.
An empty tail is ``tail_lse = -inf`` and contributes ``exp(-inf) = 0``.

Speed: three short passes per row (max, exp-sum, normalise) over data in L1, float16 read
directly, outputs written once into preallocated arrays, no libm calls (so the loops are
vectorised). Rows are split over ``numba.set_num_threads`` threads and the GIL is released,
so a loader thread can run it while the trainer computes; in forked worker processes the
same kernel runs single-threaded (see ``parallel``). See scripts/bench_kernels.py.

Example::

    >>> import numpy as np
    >>> b = teacher_probs(np.array([3.0], np.float32), np.array([[2.0, 1.0]], np.float16),
    ...                   np.array([-np.inf], np.float32), k_prime=1, temperature=1.0)
    >>> b.full.round(4), b.nontarget.round(4)
    (array([[0.6652, 0.2447, 0.09  ]], dtype=float32), array([[0.7311, 0.2689]], dtype=float32))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from speaker.models.margin import LogitMargin, target_cos
from stage2_student.kernels.rows import CHUNK, FASTMATH, check_out, run_rows

__all__ = ["TeacherBuckets", "teacher_probs"]

_NO_MARGIN = LogitMargin("none", 0.0, 1.0).constants()[0]


@dataclass(frozen=True)
class TeacherBuckets:
    """Teacher probabilities for one batch (float32, C-contiguous numpy arrays).

    binary:    [B, 2]     (p_target, 1 - p_target)
    nontarget: [B, k'+1]  renormalised non-target distribution (k' speakers, then tail)
    full:      [B, k'+2]  (target, k' speakers, tail)
    """

    binary: np.ndarray
    nontarget: np.ndarray
    full: np.ndarray

    @classmethod
    def empty(cls, batch: int, k_prime: int) -> TeacherBuckets:
        """Preallocated outputs for ``teacher_probs(..., out=...)`` (reuse across batches)."""
        return cls(
            binary=np.empty((batch, 2), np.float32),
            nontarget=np.empty((batch, k_prime + 1), np.float32),
            full=np.empty((batch, k_prime + 2), np.float32),
        )


@intrinsic
def _half_bits_to_f32(typingctx, bits):
    """Reinterpret uint16 bits as IEEE half and widen to float32 (vcvtph2ps with F16C).

    Numba has no CPU float16 type, so float16 arrays reach the kernel as a uint16 view.
    """
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def _int_bits_to_f32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


_EXP_MIN = np.float32(-87.33654)  # log(smallest normal float32)


@njit(fastmath=FASTMATH, cache=True)
def _exp_nonpos(d):
    """exp(d) for float32 d <= 0, in plain arithmetic so that LLVM vectorises the loops.

    libm's expf is an opaque call that keeps every loop scalar (and Numba has no SVML
    here). Cephes' expf: 2^n * P(r), r = d - n ln2 in two parts, |r| <= ln2/2; measured
    max relative error 1.2e-7 (2 ulp) on [-87.3, 0]. Below -87.3, -inf included, the
    result is exactly 0 (the true value is < 1.2e-38).
    """
    x = max(d, _EXP_MIN)
    n = np.float32(math.floor(x * np.float32(1.44269504) + np.float32(0.5)))
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    two_n = _int_bits_to_f32((np.int64(n) + 127) << 23)  # n in [-126, 0]: a normal float
    return p * two_n if d >= _EXP_MIN else np.float32(0.0)


def _as_f32(x):
    """An element of a cached logit array as float32 (float16 arrive as uint16 bits)."""
    return np.float32(x)


@overload(_as_f32)
def _as_f32_overload(x):
    if x == types.uint16:
        return lambda x: _half_bits_to_f32(x)
    if isinstance(x, types.Float):
        return lambda x: np.float32(x)
    return None


def _order_key(x):
    """A value whose order is the float order of x: an int32 for float16 bits.

    The row max over float16 bits then is an integer max, which vectorises (a float max
    with NaN semantics does not, and costs ~40% of the kernel when scalar).
    """
    return x


@overload(_order_key)
def _order_key_overload(x):
    if x == types.uint16:
        def key(x):
            v = np.int32(x)
            return v - (v >> 15) * (2 * v - 0x8000)  # sign-magnitude -> two's complement

        return key
    if isinstance(x, types.Float):
        return lambda x: x
    return None


def _from_order_key(key, like):
    """Inverse of :func:`_order_key`, as float32 (``like`` picks the encoding)."""
    return np.float32(key)


@overload(_from_order_key)
def _from_order_key_overload(key, like):
    if like == types.uint16:
        def value(key, like):
            neg = np.int32(key < 0)
            return _half_bits_to_f32(np.uint16(key + neg * (0x8000 - 2 * key)))

        return value
    if isinstance(like, types.Float):
        return lambda key, like: np.float32(key)
    return None


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _rows(lo, hi, target, topk, tail, k_prime, inv_t, scale, margin, binary, nontarget, full):
    """Rows lo..hi-1 of the outputs; ``topk`` is float32, or float16 bits as uint16.

    Exponent arguments are formed in float64 (z/T is then exact for any T even at
    |z| = 1e4) and rounded to float32 only for the exp, where a relative error of 6e-8
    in an argument d <= 0 moves exp(d) by at most 2.2e-8.
    """
    k = topk.shape[1]
    for i in range(lo, hi):
        # Pass 1: M = max over every non-target bucket (all k, folded ones included);
        # the order of the top-k is not relied on.
        kmax = _order_key(topk[i, 0])
        for j in range(1, k):
            key = _order_key(topk[i, j])
            kmax = key if key > kmax else kmax
        big = max(_from_order_key(kmax, topk[i, 0]) * inv_t, np.float64(tail[i]))
        # Pass 2: e_j = exp(z_j/T - M) <= 1; kept ones go to the output row as scratch.
        s_kept = np.float32(0.0)
        for j in range(k_prime):
            e = _exp_nonpos(np.float32(_as_f32(topk[i, j]) * inv_t - big))
            nontarget[i, j] = e
            s_kept += e
        e_tail = _exp_nonpos(np.float32(tail[i] - big))
        for j in range(k_prime, k):
            e_tail += _exp_nonpos(np.float32(_as_f32(topk[i, j]) * inv_t - big))
        s_nt = s_kept + e_tail  # >= 1: the maximal bucket contributes exp(0)
        # Target, with the teacher head's margin when the KD convention asks for it
        # (``margin`` is LogitMargin.constants(); code 2 = no margin).
        zt = np.float64(target[i])
        if margin[0] != _NO_MARGIN:
            zt = scale * target_cos(zt / scale, *margin)
        ut = zt * inv_t
        top = max(ut, big)
        e_t = _exp_nonpos(np.float32(ut - top))
        rescale = _exp_nonpos(np.float32(big - top))  # non-target mass relative to target's
        total = e_t + s_nt * rescale
        r_total = np.float32(1.0) / total
        r_nt = np.float32(1.0) / s_nt
        c_full = rescale * r_total
        binary[i, 0] = e_t * r_total
        binary[i, 1] = s_nt * c_full  # 1 - p_t as the non-target mass, not 1 - p
        full[i, 0] = e_t * r_total
        # Pass 3: normalise in place (multiplications only).
        for j in range(k_prime):
            e = nontarget[i, j]
            nontarget[i, j] = e * r_nt
            full[i, j + 1] = e * c_full
        nontarget[i, k_prime] = e_tail * r_nt
        full[i, k_prime + 1] = e_tail * c_full


@njit(parallel=True, cache=True, nogil=True)
def _rows_parallel(target, topk, tail, k_prime, inv_t, scale, margin, binary, nontarget, full):
    n = topk.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        _rows(c * CHUNK, min(n, (c + 1) * CHUNK), target, topk, tail, k_prime, inv_t, scale,
              margin, binary, nontarget, full)



def _check_inputs(target_logit, topk_logit, tail_lse, k_prime, temperature):
    topk_logit = np.asarray(topk_logit)
    if topk_logit.ndim != 2:
        raise ValueError(f"topk_logit must be 2-D [B, k], got shape {topk_logit.shape}")
    if topk_logit.dtype not in (np.float16, np.float32):
        raise ValueError(f"topk_logit must be float16 or float32, got {topk_logit.dtype}")
    n, k = topk_logit.shape
    if k < 1:
        raise ValueError("topk_logit has k = 0 columns; the cache needs at least one non-target")
    target_logit = np.ascontiguousarray(target_logit, dtype=np.float32)
    tail_lse = np.ascontiguousarray(tail_lse, dtype=np.float32)
    if target_logit.shape != (n,):
        raise ValueError(f"target_logit must have shape ({n},) to match topk_logit {topk_logit.shape}, "
                         f"got {target_logit.shape}")
    if tail_lse.shape != (n,):
        raise ValueError(f"tail_lse must have shape ({n},) (one temperature column: pass "
                         f"tail_lse[:, reader.temperature_index(T)]), got {tail_lse.shape}")
    if isinstance(k_prime, bool) or not isinstance(k_prime, int | np.integer):
        raise ValueError(f"k_prime must be an int, got {k_prime!r}")
    if not 0 <= k_prime <= k:
        raise ValueError(f"k_prime={k_prime} must be in [0, k={k}] (the cache keeps k={k})")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    return target_logit, np.ascontiguousarray(topk_logit), tail_lse, int(k_prime)


def teacher_probs(
    target_logit: np.ndarray,
    topk_logit: np.ndarray,
    tail_lse: np.ndarray,
    k_prime: int,
    temperature: float,
    margin: LogitMargin | None = None,
    out: TeacherBuckets | None = None,
    parallel: bool | None = None,
) -> TeacherBuckets:
    """Teacher bucket probabilities for a batch of cache rows (parallel over rows).

    Args:
        target_logit: float32 [B], teacher logit of the true speaker, without margin.
        topk_logit: float16 or float32 [B, k], top-k non-target logits (the cache sorts
            them descending; any order works). float16 is read directly, not copied.
        tail_lse: float32 [B], logsumexp(z_i / T) over the other non-targets for *this*
            temperature (``-inf`` for an empty tail, i.e. k = C - 1).
        k_prime: speakers kept, 0 <= k' <= k; entries k'..k-1 are folded into the tail.
        temperature: T > 0, must match the tail_lse column.
        margin: the teacher head's margin (kind, m, scale), applied to the target logit
            first (``--kd-logits margin``); None: the cached ``scale * cos`` as it is.
        out: optional preallocated outputs (``TeacherBuckets.empty(B, k')``) to reuse.
        parallel: split rows over ``numba.get_num_threads()`` threads. None (default):
            yes in the process that imported this module, no in processes forked from it
            (e.g. DataLoader workers), where Numba's OpenMP layer would abort.

    Returns:
        TeacherBuckets(binary [B,2], nontarget [B,k'+1], full [B,k'+2]), float32.

    Raises:
        ValueError: on a shape, dtype, k' or temperature that does not fit.

    Example::

        buckets = teacher_probs(block.target_logit, block.topk_logit,
                                block.tail_lse[:, reader.temperature_index(2.0)], 32, 2.0)
    """
    target_logit, topk_logit, tail_lse, k_prime = _check_inputs(
        target_logit, topk_logit, tail_lse, k_prime, temperature)
    n = topk_logit.shape[0]
    if out is None:
        out = TeacherBuckets.empty(n, k_prime)
    else:
        check_out(out, {"binary": ((n, 2), np.float32),
                        "nontarget": ((n, k_prime + 1), np.float32),
                        "full": ((n, k_prime + 2), np.float32)},
                  f"TeacherBuckets.empty({n}, {k_prime})")
    if n == 0:
        return out
    margin = LogitMargin("none", 0.0, 1.0) if margin is None else margin
    # Numba has no CPU float16: pass the bits, the kernel widens them with F16C.
    topk = topk_logit.view(np.uint16) if topk_logit.dtype == np.float16 else topk_logit
    args = (target_logit, topk, tail_lse, k_prime, 1.0 / float(temperature), float(margin.scale),
            margin.constants(), out.binary, out.nontarget, out.full)
    run_rows(_rows, _rows_parallel, n, args, parallel)
    return out
