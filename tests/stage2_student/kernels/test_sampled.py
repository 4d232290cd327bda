"""The sampled-tail kernel against a plain per-row float64 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speaker.models.margin import LogitMargin
from stage2_student.kernels import SampledTail, sampled_tail_probs, teacher_probs


def _lse(x) -> float:
    x = [float(v) for v in x]
    m = max(x, default=-math.inf)
    return -math.inf if m == -math.inf else m + math.log(sum(math.exp(v - m) for v in x))


def reference_row(zt, topk, tail, ids, logit, count, t):
    """One row from the definitions: (nt_weight, nt_logq, full_weight, full_logp)."""
    lse_nt = _lse([*(float(z) / t for z in topk), float(tail)])
    lse_all = _lse([float(zt) / t, lse_nt])
    c = [float(n) if i >= 0 else 0.0 for i, n in zip(ids, count, strict=True)]
    total = sum(c)
    out = []
    for lse in (lse_nt, lse_all):
        mass = math.exp(float(tail) - lse) if tail > -math.inf else 0.0
        w = [mass * n / total if total > 0 else 0.0 for n in c]
        lp = [float(z) / t - lse if wi > 0 else 0.0 for z, wi in zip(logit, w, strict=True)]
        out += [w, lp]
    return out


def _rows(n=300, k=8, m=6, dtype=np.float16, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.normal(15, 5, n).astype(np.float32)
    topk = -np.sort(-rng.normal(5, 3, (n, k)), axis=1).astype(dtype)
    tail = rng.normal(6, 2, n).astype(np.float32)
    tail[:3] = -np.inf  # empty tails (k = C - 1) ...
    ids = rng.integers(0, 1000, (n, m))
    ids[:3] = -1  # ... have no draws
    ids[3:10, m // 2:] = -1  # unique ids with counts: padding
    logit = rng.normal(0, 3, (n, m)).astype(dtype)
    count = rng.integers(1, 5, (n, m)).astype(np.uint8)
    return target, topk, tail, ids, logit, count


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("counted", [False, True])
@pytest.mark.parametrize("t", [1.0, 4.0])
@pytest.mark.parametrize("parallel", [False, True])
def test_kernel_equals_float64_reference(dtype, counted, t, parallel):
    target, topk, tail, ids, logit, count = _rows(dtype=dtype)
    margin = LogitMargin("am", 0.2, 32.0)
    buckets = teacher_probs(target, topk, tail, topk.shape[1], t, margin=margin)
    got = sampled_tail_probs(buckets, tail, logit, ids, t, tail_count=count if counted else None,
                             parallel=parallel)
    ones = np.ones_like(count)
    for i in range(len(target)):
        zt = float(target[i]) - 32.0 * 0.2  # AM: s (cos - m)
        want = reference_row(zt, topk[i], tail[i], ids[i], logit[i],
                             count[i] if counted else ones[i], t)
        for name, ref in zip(("nt_weight", "nt_logq", "full_weight", "full_logp"), want,
                             strict=True):
            np.testing.assert_allclose(getattr(got, name)[i], ref, rtol=2e-6, atol=1e-6,
                                       err_msg=f"{name} row {i}")
    assert np.all(got.nt_weight[:3] == 0) and np.all(got.nt_logq[:3] == 0)


def test_parallel_and_serial_are_bitwise_equal_and_out_is_reused():
    target, topk, tail, ids, logit, _ = _rows(n=2000)
    buckets = teacher_probs(target, topk, tail, topk.shape[1], 2.0)
    serial = sampled_tail_probs(buckets, tail, logit, ids, 2.0, parallel=False)
    out = SampledTail.empty(2000, ids.shape[1])
    par = sampled_tail_probs(buckets, tail, logit, ids, 2.0, out=out, parallel=True)
    assert par is out
    for name in ("nt_weight", "nt_logq", "full_weight", "full_logp"):
        np.testing.assert_array_equal(getattr(par, name), getattr(serial, name))


def test_bad_inputs_are_refused():
    target, topk, tail, ids, logit, count = _rows(n=4)
    buckets = teacher_probs(target, topk, tail, topk.shape[1], 1.0)
    with pytest.raises(ValueError, match="must both be"):
        sampled_tail_probs(buckets, tail, logit[:, :2], ids, 1.0)
    with pytest.raises(ValueError, match="tail_lse must have shape"):
        sampled_tail_probs(buckets, tail[:2], logit, ids, 1.0)
    with pytest.raises(ValueError, match="tail_count must have shape"):
        sampled_tail_probs(buckets, tail, logit, ids, 1.0, tail_count=count[:, :1])
    with pytest.raises(ValueError, match="float16 or float32"):
        sampled_tail_probs(buckets, tail, logit.astype(np.float64), ids, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        sampled_tail_probs(buckets, tail, logit, ids, 0.0)
    with pytest.raises(ValueError, match=r"SampledTail.empty\(4, 6\)"):
        sampled_tail_probs(buckets, tail, logit, ids, 1.0, out=SampledTail.empty(4, 5))
