"""TRKD and dual-group teacher-side kernels against a plain per-row numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stage2_student.kernels import (
    DualGroupBuckets,
    TeacherBuckets,
    TriageBuckets,
    dual_group_probs,
    teacher_probs,
    triage_probs,
)

# --- references: one row at a time, straight from the documented rules ----------------------

def triage_reference(binary: np.ndarray, nontarget: np.ndarray, tau: float):
    """(mass [B,3], confusion [B,k'], size [B], capped [B]) in float64.

    Confusion set: the first n kept speakers, n the smallest n >= 1 whose remaining share
    (kept speakers n.., plus the tail) is below 1 - tau; when even the tail alone exceeds
    1 - tau the set is capped at all k'. Sums are float64 over the float32 inputs and the
    budget is the float32 1 - tau the kernel compares with.
    """
    rows, width = nontarget.shape
    k_prime = width - 1
    budget = float(np.float32(1.0 - tau))
    mass, confusion = np.zeros((rows, 3)), np.zeros((rows, k_prime))
    size, capped = np.zeros(rows, np.int64), np.zeros(rows, bool)
    for i in range(rows):
        q = nontarget[i].astype(np.float64)
        capped[i] = q[k_prime] > budget
        n = k_prime
        if not capped[i]:
            n = next((m for m in range(1, k_prime + 1) if q[m:].sum() < budget), k_prime)
        share = q[:n].sum()
        if share > 0:  # all-zero kept shares (a tail holding everything): left at 0
            confusion[i, :n] = q[:n] / share
        mass[i] = [binary[i, 0], binary[i, 1] * share, binary[i, 1] * q[n:].sum()]
        size[i] = n
    return mass, confusion, size, capped


def dual_group_reference(full: np.ndarray, cap: float | None):
    """(primary [B,k'+1], binary [B,2], soften [B]) in float64."""
    k1 = full.shape[1] - 1
    primary, binary, soften = np.zeros((len(full), k1)), np.zeros((len(full), 2)), np.ones(len(full))
    for i, row in enumerate(full.astype(np.float64)):
        mass, rest = row[:k1].sum(), row[k1]
        primary[i] = row[:k1] / mass
        binary[i] = [mass, rest]
        if cap is not None and rest > 0:
            odds = math.log(mass / rest)
            if abs(odds) > cap:
                soften[i] = abs(odds) / cap
                low = 1.0 / (1.0 + math.exp(cap))
                binary[i] = [1.0 - low, low] if odds > 0 else [low, 1.0 - low]
    return primary, binary, soften


# --- inputs ----------------------------------------------------------------------------------

def dyadic_buckets(seed: int, rows: int, k_prime: int, zeros: bool) -> TeacherBuckets:
    """Non-target shares that are multiples of 2^-10 summing to 1, descending over the kept
    speakers (the cache's order), so that every sum is exact in float32 and float64 and
    the set is decided without rounding (ties with 1 - tau included)."""
    rng = np.random.default_rng(seed)
    nontarget = np.zeros((rows, k_prime + 1), np.float32)
    for i in range(rows):
        cuts = np.sort(rng.integers(0, 1025, k_prime))
        parts = np.diff(np.concatenate([[0], cuts, [1024]]))
        if zeros and k_prime > 1:
            parts[rng.integers(0, k_prime + 1)] += parts[-2]
            parts[-2] = 0  # a kept speaker with share 0 (float32 underflow)
        kept = -np.sort(-parts[:k_prime])
        nontarget[i] = np.concatenate([kept, parts[k_prime:]]) / 1024.0
    p_t = rng.uniform(0, 1, rows).astype(np.float32)
    binary = np.stack([p_t, 1 - p_t], axis=1).astype(np.float32)
    return TeacherBuckets(binary=binary, nontarget=nontarget, full=np.empty((rows, 0)))


def cache_buckets(seed: int, rows: int, k: int, k_prime: int, temperature: float,
                  spread: float = 4.0) -> TeacherBuckets:
    """Teacher buckets as training gets them: teacher_probs on float16 cache rows."""
    rng = np.random.default_rng(seed)
    topk = -np.sort(-rng.normal(0.0, spread, (rows, k)), axis=1).astype(np.float16)
    target = rng.normal(spread, spread, rows).astype(np.float32)
    tail = (rng.normal(0.0, spread, rows) / temperature + math.log(100)).astype(np.float32)
    return teacher_probs(target, topk, tail, k_prime, temperature)


def assert_triage_matches(got: TriageBuckets, want) -> None:
    mass, confusion, size, capped = want
    np.testing.assert_array_equal(got.size, size)
    np.testing.assert_array_equal(got.capped, capped)
    for name, value, ref in (("mass", got.mass, mass), ("confusion", got.confusion, confusion)):
        assert value.dtype == np.float32 and np.isfinite(value).all(), name
        np.testing.assert_allclose(value, ref, rtol=1e-6, atol=1e-7, err_msg=name)
    assert got.size.dtype == np.int32 and got.capped.dtype == np.bool_


TAUS = [1.0, 0.9, 0.75, 0.5, 0.25, 0.05, 1e-6]


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 40), k_prime=st.integers(0, 12),
       tau=st.sampled_from(TAUS), zeros=st.booleans(), parallel=st.booleans())
def test_triage_matches_reference_on_exact_shares(seed, rows, k_prime, tau, zeros, parallel):
    buckets = dyadic_buckets(seed, rows, k_prime, zeros)
    got = triage_probs(buckets, tau, parallel=parallel)
    assert_triage_matches(got, triage_reference(buckets.binary, buckets.nontarget, tau))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("k_prime", [1, 8, 32])
def test_triage_matches_reference_on_cache_rows(temperature, k_prime):
    buckets = cache_buckets(7, 700, 32, k_prime, temperature)
    for tau in TAUS:
        for parallel in (False, True):
            got = triage_probs(buckets, tau, parallel=parallel)
            assert_triage_matches(got, triage_reference(buckets.binary, buckets.nontarget, tau))


def test_triage_set_shrinks_with_tau_and_caps_when_k_prime_is_short():
    buckets = cache_buckets(3, 500, 32, 32, 2.0)
    sizes = [triage_probs(buckets, tau).size for tau in (1.0, 0.5, 0.2, 0.05)]
    for big, small in zip(sizes, sizes[1:], strict=False):
        assert (small <= big).all() and (small < big).any()
    # tau = 1 wants every non-target: capped wherever the tail has mass
    at_one = triage_probs(buckets, 1.0)
    np.testing.assert_array_equal(at_one.capped, buckets.nontarget[:, -1] > 0)
    assert at_one.capped.all() and (at_one.size == 32).all()
    # a short k' binds where the full set wanted more; capped rows keep all k'
    short = triage_probs(cache_buckets(3, 500, 32, 2, 2.0), 0.5)
    wanted = triage_probs(buckets, 0.5).size
    np.testing.assert_array_equal(short.capped, wanted > 2)
    assert short.capped.any() and not short.capped.all()
    np.testing.assert_array_equal(short.size, np.minimum(wanted, 2))


def test_triage_with_an_empty_tail_at_tau_one_is_not_capped():
    target = np.array([3.0, 0.0], np.float32)
    topk = np.array([[2.0, 1.0, -200.0], [5.0, 4.0, 3.0]], np.float32)  # -200: share 0
    buckets = teacher_probs(target, topk, np.full(2, -np.inf, np.float32), 3, 1.0)
    got = triage_probs(buckets, 1.0)
    assert not got.capped.any() and (got.size == 3).all()  # the zero share stays in
    np.testing.assert_allclose(got.mass[:, 2], 0.0, atol=0)
    np.testing.assert_allclose(got.mass.sum(axis=1), 1.0, rtol=1e-6)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 40), k=st.integers(1, 16),
       k_cut=st.floats(0, 1), t=st.sampled_from([0.5, 1.0, 2.0]),
       entropy=st.sampled_from([None, 0.05, 0.5, 0.95]), parallel=st.booleans())
def test_dual_group_matches_reference(seed, rows, k, k_cut, t, entropy, parallel):
    from stage2_student.losses import log_odds_at_entropy

    k_prime = round(k_cut * k)
    buckets = cache_buckets(seed, rows, k, k_prime, t, spread=8.0)
    cap = None if entropy is None else log_odds_at_entropy(entropy)
    got = dual_group_probs(buckets, cap, parallel=parallel)
    want = dual_group_reference(buckets.full, cap)
    for name, value, ref in zip(("primary", "binary", "soften"),
                                (got.primary, got.binary, got.soften), want, strict=True):
        assert value.dtype == np.float32 and np.isfinite(value).all(), name
        np.testing.assert_allclose(value, ref, rtol=2e-6, atol=1e-7, err_msg=name)
    if cap is not None:
        assert (got.soften >= 1).all()


def test_dual_group_softens_only_rows_beyond_the_cap_and_never_an_empty_group():
    target = np.array([10.0, 0.0], np.float32)
    topk = np.array([[0.0, -1.0], [0.0, -1.0]], np.float32)
    buckets = teacher_probs(target, topk, np.zeros(2, np.float32), 1, 1.0)
    got = dual_group_probs(buckets, log_odds_cap=2.0)
    odds = np.log(buckets.full[:, :2].sum(axis=1) / buckets.full[:, 2])
    assert odds[0] > 2.0 and abs(odds[1]) < 2.0
    np.testing.assert_allclose(got.soften, [odds[0] / 2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(got.binary[0], [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))],
                               rtol=1e-6)
    np.testing.assert_allclose(got.binary[1], [1 - buckets.full[1, 2], buckets.full[1, 2]],
                               rtol=1e-6)
    off = dual_group_probs(buckets)
    np.testing.assert_array_equal(off.soften, 1.0)
    np.testing.assert_allclose(got.primary, off.primary, rtol=0, atol=0)
    # k' = k and an empty tail: no rest group, nothing to soften
    whole = teacher_probs(target, topk, np.full(2, -np.inf, np.float32), 2, 1.0)
    got = dual_group_probs(whole, log_odds_cap=2.0)
    np.testing.assert_array_equal(got.soften, 1.0)
    np.testing.assert_array_equal(got.binary[:, 1], 0.0)


def test_out_buffers_are_reused_and_checked():
    buckets = cache_buckets(0, 10, 6, 4, 1.0)
    out = TriageBuckets.empty(10, 4)
    assert triage_probs(buckets, 0.5, out=out) is out
    groups = DualGroupBuckets.empty(10, 4)
    assert dual_group_probs(buckets, 1.0, out=groups) is groups
    with pytest.raises(ValueError, match=r"TriageBuckets.empty\(10, 4\)"):
        triage_probs(buckets, 0.5, out=TriageBuckets.empty(10, 3))
    with pytest.raises(ValueError, match=r"DualGroupBuckets.empty\(10, 4\)"):
        dual_group_probs(buckets, out=DualGroupBuckets.empty(9, 4))


def test_empty_batch_and_bad_input():
    empty = cache_buckets(0, 0, 4, 2, 1.0)
    assert triage_probs(empty, 0.5).mass.shape == (0, 3)
    assert dual_group_probs(empty).primary.shape == (0, 3)
    buckets = cache_buckets(0, 3, 4, 2, 1.0)
    for tau in (0.0, 1.5, math.nan):
        with pytest.raises(ValueError, match="tau must be in"):
            triage_probs(buckets, tau)
    with pytest.raises(ValueError, match="log_odds_cap"):
        dual_group_probs(buckets, -1.0)
    bad = TeacherBuckets(binary=buckets.binary, nontarget=buckets.nontarget[:2],
                         full=buckets.full)
    with pytest.raises(ValueError, match="teacher.nontarget"):
        triage_probs(bad, 0.5)
