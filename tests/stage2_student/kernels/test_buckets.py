"""Teacher-bucket kernels against a plain per-row float64 reference."""

from __future__ import annotations

import math
import multiprocessing
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speaker.models.margin import LogitMargin
from stage2_student.kernels import TeacherBuckets, teacher_probs

ATOL = 1e-6


def _lse(x: list[float]) -> float:
    """logsumexp of a python list in float64; -inf for an empty or all -inf list."""
    m = max(x, default=-math.inf)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(v - m) for v in x))


def _softmax(x: list[float]) -> list[float]:
    m = max(x)
    e = [math.exp(v - m) for v in x]
    s = sum(e)
    return [v / s for v in e]


def margin_target(zt: float, scale: float, kind: str, m: float) -> float:
    """The target logit with the margin, from the definitions (acos form for AAM)."""
    c = zt / scale
    if kind == "am":
        return scale * (c - m)
    theta = math.acos(min(max(c, -1.0), 1.0))
    if theta + m < math.pi:
        return scale * math.cos(theta + m)
    return scale * (c - (1.0 + math.cos(math.pi - m)))  # wespeaker's monotone fallback


def reference_row(zt, topk_row, tail, k_prime, t, margin=None):
    """One row, written straight from the definition."""
    z = [float(v) / t for v in topk_row]
    zt = float(zt)
    if margin is not None and margin.kind != "none":
        zt = margin_target(zt, margin.scale, margin.kind, margin.margin)
    tail_prime = _lse([float(tail), _lse(z[k_prime:])])
    full = _softmax([zt / t, *z[:k_prime], tail_prime])
    nontarget = _softmax([*z[:k_prime], tail_prime])
    binary = [full[0], sum(full[1:])]
    return binary, nontarget, full


def reference(target, topk, tail, k_prime, t, margin=None) -> TeacherBuckets:
    rows = [reference_row(target[i], topk[i], tail[i], k_prime, t, margin)
            for i in range(len(target))]
    return TeacherBuckets(*(np.array([r[j] for r in rows], np.float64).reshape(len(rows), -1)
                            for j in range(3)))


def _assert_close(got: TeacherBuckets, want: TeacherBuckets) -> None:
    for name in ("binary", "nontarget", "full"):
        g, w = getattr(got, name), getattr(want, name)
        assert g.dtype == np.float32, name
        assert np.isfinite(g).all(), name
        np.testing.assert_allclose(g, w, rtol=0, atol=ATOL, err_msg=name)


def _rows(seed, batch, k, magnitude, dtype, sort, tail_kind):
    """Random cache rows: logits of a given magnitude, some ties, several tail regimes."""
    rng = np.random.default_rng(seed)
    topk = rng.uniform(-magnitude, magnitude, (batch, k))
    if batch > 1:
        topk[0] = topk[0, 0]  # all-equal row
    topk = topk.astype(dtype)
    if sort:
        topk = -np.sort(-topk, axis=1)
    target = rng.uniform(-magnitude, magnitude, batch).astype(np.float32)
    if batch > 2:
        target[1] = magnitude  # target dominating by up to 2 * magnitude
        target[2] = -magnitude  # target negligible
    if tail_kind == "empty":
        tail = np.full(batch, -np.inf, np.float32)
    elif tail_kind == "dominant":
        tail = (np.max(topk.astype(np.float64), axis=1) + 50.0).astype(np.float32)
    else:
        tail = rng.uniform(-magnitude, magnitude, batch).astype(np.float32)
    return target, topk, tail


rows_params = dict(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 9),
    k=st.integers(1, 12),
    k_cut=st.floats(0, 1),
    t=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    magnitude=st.sampled_from([1.0, 32.0, 300.0, 1e4]),
    dtype=st.sampled_from([np.float16, np.float32]),
    sort=st.booleans(),
    tail_kind=st.sampled_from(["empty", "random", "dominant"]),
)


MARGINS = [None, LogitMargin("none", 0.0, 32.0), LogitMargin("aam", 0.2, 32.0),
           LogitMargin("aam", 0.5, 32.0), LogitMargin("am", 0.2, 32.0)]


@settings(max_examples=150, deadline=None)
@given(**rows_params, margin=st.sampled_from(MARGINS), parallel=st.booleans())
def test_kernel_matches_reference(seed, batch, k, k_cut, t, magnitude, dtype, sort, tail_kind,
                                  margin, parallel):
    target, topk, tail = _rows(seed, batch, k, magnitude, dtype, sort, tail_kind)
    if margin is not None:
        # A margin head's target logit is a cosine times the scale; |cos| = 1 exactly is
        # where the formula floors the sine (speaker/models/margin.py), so stay inside.
        inside = np.float32(margin.scale * (1 - 1e-6))
        target = np.clip(target, -inside, inside)
    k_prime = round(k_cut * k)
    got = teacher_probs(target, topk, tail, k_prime, t, margin=margin, parallel=parallel)
    _assert_close(got, reference(target, topk, tail, k_prime, t, margin))


def test_any_temperature_exact_at_extreme_logits():
    # z/T is formed in float64 in the kernel: a non-dyadic T at |z| = 1e4 stays exact.
    target, topk, tail = _rows(3, 16, 8, 1e4, np.float16, True, "random")
    for t in (0.3, 1.7, 3.0):
        _assert_close(teacher_probs(target, topk, tail, 5, t), reference(target, topk, tail, 5, t))


def test_one_minus_p_keeps_precision_when_target_dominates():
    # p_t = 1 - 1e-12: "1 - p" in float32 would give 0, the bucket sum gives 1e-12.
    topk = np.zeros((1, 1), np.float32)
    got = teacher_probs(np.array([12 * math.log(10)], np.float32), topk,
                        np.array([-np.inf], np.float32), 1, 1.0)
    assert got.binary[0, 0] == 1.0
    np.testing.assert_allclose(got.binary[0, 1], 1e-12, rtol=1e-5)
    np.testing.assert_allclose(got.nontarget[0], [1.0, 0.0])


@pytest.mark.parametrize("margin", [LogitMargin("aam", m, 32.0) for m in (0.1, 0.2, 0.5)]
                         + [LogitMargin("am", 0.2, 32.0)])
def test_margin_matches_the_definition_over_the_whole_cosine_range(margin):
    # 401 angles over (0, pi): the AAM fallback branch covers theta > pi - m.
    cos = np.cos(np.linspace(1e-3, math.pi - 1e-3, 401))
    t = 16.0  # |z/T| <= 2.4: probabilities stay sensitive to the target logit
    z = (32 * cos).astype(np.float32)  # the reference sees the same float32 logits
    want = [reference_row(zt, [0.0], -np.inf, 1, t, margin) for zt in z]
    got = teacher_probs(z, np.zeros((401, 1), np.float32),
                        np.full(401, -np.inf, np.float32), 1, t, margin=margin)
    np.testing.assert_allclose(got.full, np.array([w[2] for w in want]), atol=ATOL)
    if margin.kind == "aam":
        assert (cos < math.cos(math.pi - margin.margin)).sum() > 5  # the fallback was tested


def test_out_buffers_are_reused_and_rows_sum_to_one():
    target, topk, tail = _rows(0, 64, 10, 32.0, np.float16, True, "random")
    out = TeacherBuckets.empty(64, 4)
    got = teacher_probs(target, topk, tail, 4, 2.0, out=out)
    assert got is out
    for arr in (out.binary, out.nontarget, out.full):
        np.testing.assert_allclose(arr.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out.full[:, 1:] / out.binary[:, 1:], out.nontarget, atol=1e-6)


def _full_in_child(seed: int) -> np.ndarray:
    target, topk, tail = _rows(seed, 3000, 16, 32.0, np.float16, True, "random")
    return teacher_probs(target, topk, tail, 8, 2.0).full


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_works_in_a_worker_forked_after_the_parent_used_threads():
    # GNU OpenMP aborts a forked child that launches threads after its parent did; the
    # DataLoader-worker situation. The child must fall back to the single-thread kernel.
    parent = _full_in_child(7)  # also launches the parallel kernel in this process
    teacher_probs(*_rows(1, 4096, 16, 32.0, np.float16, True, "random"), 8, 2.0, parallel=True)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_full_in_child, (7,)).get(timeout=60)
    np.testing.assert_array_equal(child, parent)


def test_empty_batch_and_zero_k_prime():
    empty = teacher_probs(np.zeros(0, np.float32), np.zeros((0, 4), np.float16),
                          np.zeros(0, np.float32), 2, 1.0)
    assert empty.full.shape == (0, 4)
    target, topk, tail = _rows(1, 5, 6, 32.0, np.float32, True, "empty")
    got = teacher_probs(target, topk, tail, 0, 1.0)
    assert got.nontarget.shape == (5, 1)
    np.testing.assert_allclose(got.nontarget, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(topk_logit=np.zeros(3, np.float16)), "topk_logit must be 2-D"),
        (dict(topk_logit=np.zeros((3, 4), np.float64)), "float16 or float32"),
        (dict(topk_logit=np.zeros((3, 0), np.float16)), "k = 0"),
        (dict(target_logit=np.zeros(2, np.float32)), "target_logit must have shape"),
        (dict(tail_lse=np.zeros((3, 2), np.float32)), "one temperature column"),
        (dict(k_prime=5), r"k_prime=5 must be in \[0, k=4\]"),
        (dict(k_prime=-1), "k_prime=-1"),
        (dict(k_prime=2.0), "k_prime must be an int"),
        (dict(temperature=0.0), "temperature must be a positive"),
        (dict(temperature=float("nan")), "temperature must be a positive"),
        (dict(out=TeacherBuckets.empty(3, 3)), "out.nontarget must be"),
    ],
)
def test_bad_input_is_a_clear_value_error(kwargs, message):
    args = dict(target_logit=np.zeros(3, np.float32), topk_logit=np.zeros((3, 4), np.float16),
                tail_lse=np.zeros(3, np.float32), k_prime=2, temperature=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        teacher_probs(**args)
