"""experiments.bench.kernels: its numpy baseline computes what the kernel computes."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.bench.kernels import K, numpy_buckets, synthetic_rows
from stage2_student.kernels import teacher_probs


@pytest.mark.parametrize("k_prime,t", [(64, 2.0), (32, 2.0), (0, 1.0), (7, 0.5)])
def test_numpy_baseline_matches_the_kernel(k_prime: int, t: float):
    # The kernel is tested against a float64 per-row reference (tests/stage2_student).
    target, topk, tail = synthetic_rows(2000, K, seed=3)
    # One thread: starting Numba's OpenMP team here would change torch's CPU arithmetic in
    # later tests of this process (tests/speaker/test_dataset.py compares waves bit for bit).
    want = teacher_probs(target, topk, tail, k_prime, t, parallel=False)
    got = numpy_buckets(target, topk, tail, k_prime, t)
    for name in ("binary", "nontarget", "full"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=0, atol=1e-6,
                                   err_msg=name)
