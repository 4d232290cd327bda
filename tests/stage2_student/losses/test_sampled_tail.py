"""KD and NCKD with a sampled tail: unbiased (value and gradient) against the full-logit
losses, consistent at large M, exact when every tail class is listed with its weight; online
draws equal cached ones; the ``tail`` switch and its refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stage1_teacher.soft_labels import summarize_logits
from stage2_student.kernels import sampled_tail_probs, teacher_probs
from stage2_student.losses import (
    DistillBatch,
    DistillConfig,
    distill_loss,
    dkd_loss,
    full_logit_dkd_loss,
    full_logit_kd_loss,
    sampled_dkd_loss,
    sampled_from_logits,
)
from stage2_student.losses.sampled import sampled_kd_rows, sampled_nckd_rows
from store.tail import TailDraws, as_counts, draw_tail, tail_rng

K = 8


def _logits(c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A teacher and a student row over c classes (float64), target 0, the teacher fairly
    sure of it and with a spread-out tail."""
    g = torch.Generator().manual_seed(seed)
    teacher = 2.0 * torch.randn(1, c, generator=g, dtype=torch.float64)
    student = 2.0 * torch.randn(1, c, generator=g, dtype=torch.float64)
    teacher[0, 0] += 6.0
    return teacher, student, 0


def _full(kind: str, student: torch.Tensor, teacher: torch.Tensor, label: int,
          t: float) -> tuple[float, np.ndarray]:
    """The full-logit loss of one row and its gradient w.r.t. the student's logits."""
    s = student.clone().requires_grad_(True)
    labels = torch.tensor([label])
    if kind == "kd":
        loss = full_logit_kd_loss(s, teacher, t)
    else:  # NCKD alone
        loss = full_logit_dkd_loss(s, teacher, labels, alpha=0.0, beta=1.0, temperature=t)
    loss.backward()
    return float(loss.detach()), s.grad[0].numpy()


def _estimates(kind: str, student: torch.Tensor, topk, teacher, draws, tail, label: int,
               t: float) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate row: the sampled estimate and its gradient w.r.t. the student's logits
    (the student row repeated, so row r's gradient is replicate r's)."""
    r = draws.index.shape[0]
    s = student.repeat(r, 1).requires_grad_(True)
    labels = torch.full((r,), label)
    index, tail_index = torch.as_tensor(topk), torch.as_tensor(draws.index)
    if kind == "kd":
        rows = sampled_kd_rows(s, labels, index, tail_index, torch.as_tensor(teacher.full),
                               torch.as_tensor(tail.full_weight), torch.as_tensor(tail.full_logp), t)
    else:
        rows = sampled_nckd_rows(s, labels, index, tail_index, torch.as_tensor(teacher.nontarget),
                                 torch.as_tensor(tail.nt_weight), torch.as_tensor(tail.nt_logq), t)
    rows.sum().backward()
    return rows.detach().numpy(), s.grad.numpy()


def _replicates(c: int, t: float, m: int, reps: int, seed: int):
    teacher, student, label = _logits(c, seed)
    rngs = [tail_rng(seed, r, 0) for r in range(reps)]
    inputs = sampled_from_logits(teacher.repeat(reps, 1), torch.full((reps,), label), K, t, m,
                                 rngs)
    return teacher, student, label, inputs


@pytest.mark.parametrize("kind", ["kd", "nckd"])
@pytest.mark.parametrize(("c", "t"), [(50, 1.0), (200, 2.0), (500, 4.0)])
def test_mean_of_independent_draws_is_the_full_logit_loss_and_gradient(kind, c, t):
    """Unbiased, not merely close: over 2,000 independent draws of M = 16, the mean estimate
    and the mean gradient (in 32 directions) are within 4 Monte-Carlo standard errors (from
    the draws) of the full-logit value, plus float32 rounding of the teacher side."""
    reps = 2000
    teacher, student, label, (topk, buckets, draws, tail) = _replicates(c, t, 16, reps, seed=c)
    value, grad = _full(kind, student, teacher, label, t)
    est, grads = _estimates(kind, student, topk, buckets, draws, tail, label, t)
    assert est.std() > 1e-3 * abs(value)  # the draws really vary: the test has teeth
    se = est.std(ddof=1) / np.sqrt(reps)
    assert abs(est.mean() - value) <= 4 * se + 1e-5 * t**2, (est.mean(), value, se)
    # The gradient through 32 random directions: any linear functional of an unbiased
    # estimate is unbiased, and its standard error, pooled over many classes, is well
    # estimated from the draws (a rare class's own is not: drawn once where 5 were
    # expected, its sample spread understates its error).
    dirs = np.random.default_rng(c).normal(size=(c, 32))
    proj, want = grads @ dirs, grad @ dirs
    g_se = proj.std(axis=0, ddof=1) / np.sqrt(reps)
    g_err = np.abs(proj.mean(axis=0) - want)
    assert np.all(g_err <= 4 * g_se + 1e-6 * t**2 * np.sqrt(c)), np.max(g_err / g_se)


@pytest.mark.parametrize("kind", ["kd", "nckd"])
def test_many_draws_converge_and_counts_are_the_same_estimate(kind):
    """M = 200,000 draws in one row: within 4 standard errors of the full-logit value (the
    error derived from the per-draw terms); the same draws as unique ids with counts give
    the same estimate."""
    c, t, m = 300, 4.0, 200_000
    teacher, student, label, (topk, buckets, draws, tail) = _replicates(c, t, m, 1, seed=5)
    value, _ = _full(kind, student, teacher, label, t)
    est, _ = _estimates(kind, student, topk, buckets, draws, tail, label, t)
    # per-draw terms f_m = log q_m - log p_m, weighted by the tail mass
    log_p = torch.log_softmax(student / t, dim=1)
    weight, logq = (tail.full_weight, tail.full_logp) if kind == "kd" else (tail.nt_weight,
                                                                          tail.nt_logq)
    if kind == "nckd":
        log_p = torch.log_softmax(student.scatter(1, torch.tensor([[label]]), -1e300) / t, dim=1)
    f = logq[0].astype(np.float64) - log_p[0, draws.index[0]].numpy()
    se = t**2 * weight[0].sum() * f.std() / np.sqrt(m)
    assert abs(est[0] - value) <= 4 * se + 1e-5 * t**2, (est[0], value, se)
    assert se < 0.01 * value  # a tight check, not a vacuous one
    counted = as_counts(draws)
    tail_c = sampled_tail_probs(buckets, _tail_lse(teacher, topk, label, t), counted.logit,
                                counted.index, t, tail_count=counted.count)
    est_c, _ = _estimates(kind, student, topk, buckets, counted, tail_c, label, t)
    np.testing.assert_allclose(est_c, est, rtol=1e-6)


def _tail_lse(teacher: torch.Tensor, topk: np.ndarray, label: int, t: float) -> np.ndarray:
    member = np.ones(teacher.shape[1], bool)
    member[label], member[topk[0]] = False, False
    return np.array([torch.logsumexp(teacher[0, member] / t, 0)], np.float32)


@pytest.mark.parametrize("kind", ["kd", "nckd"])
@pytest.mark.parametrize("t", [1.0, 4.0])
def test_every_tail_class_with_its_weight_is_the_full_logit_loss(kind, t):
    """The degenerate representation: each tail class once, counted by its teacher weight
    exp(z_j/T - tail_lse) (real-valued counts). No randomness left: equal to float32 rounding."""
    teacher, student, label = _logits(120, seed=9)
    topk, buckets, _, _ = sampled_from_logits(teacher, torch.tensor([label]), K, t, 0, [tail_rng(0, 0, 0)])
    member = np.ones(teacher.shape[1], bool)
    member[label], member[topk[0]] = False, False
    ids = np.flatnonzero(member)[None]
    z = teacher[0, ids[0]].numpy()
    lse = _tail_lse(teacher, topk, label, t)
    draws = TailDraws(ids, z[None].astype(np.float32), np.exp(z / t - lse[0])[None])
    tail = sampled_tail_probs(buckets, lse, draws.logit, draws.index, t, tail_count=draws.count)
    est, grad = _estimates(kind, student, topk, buckets, draws, tail, label, t)
    value, full_grad = _full(kind, student, teacher, label, t)
    np.testing.assert_allclose(est[0], value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad[0], full_grad, atol=1e-6 * t**2)


def test_online_draws_equal_the_cached_ones():
    """A dump's columns (``summarize_logits``) and draws (``draw_tail`` with ``tail_rng``)
    give the same draws and losses as ``sampled_from_logits`` on the live logits."""
    b, c, t, m, run_seed, t_index = 16, 100, 2.0, 16, 3, 1
    g = torch.Generator().manual_seed(1)
    teacher = 3.0 * torch.randn(b, c, generator=g)
    student = 3.0 * torch.randn(b, c, generator=g, dtype=torch.float64)
    labels = torch.randint(0, c, (b,), generator=g)
    rngs = [tail_rng(run_seed, row, t_index) for row in range(b)]
    topk_o, buckets_o, draws_o, tail_o = sampled_from_logits(teacher, labels, K, t, m, rngs)
    cols = summarize_logits(teacher, labels, K, [1.0, t])  # the dump's columns
    drawn = [draw_tail(teacher[i].numpy(), int(labels[i]), cols.topk_index[i], t, m,
                       tail_rng(run_seed, i, t_index)) for i in range(b)]
    index = np.stack([d.index for d in drawn])
    logit = np.stack([d.logit for d in drawn]).astype(np.float16)  # as a cache stores them
    np.testing.assert_array_equal(cols.topk_index, topk_o)
    np.testing.assert_array_equal(index, draws_o.index)
    buckets_c = teacher_probs(cols.target_logit, cols.topk_logit, cols.tail_lse[:, 1], K, t)
    tail_c = sampled_tail_probs(buckets_c, cols.tail_lse[:, 1], logit, index, t)
    for kind, (w, lp) in {"kd": ("full_weight", "full_logp"),
                          "nckd": ("nt_weight", "nt_logq")}.items():
        rows = sampled_kd_rows if kind == "kd" else sampled_nckd_rows
        teach = "full" if kind == "kd" else "nontarget"
        online, cached = (rows(student, labels, torch.as_tensor(tk), torch.as_tensor(ix),
                               torch.as_tensor(getattr(bk, teach)),
                               torch.as_tensor(getattr(tl, w)), torch.as_tensor(getattr(tl, lp)), t)
                          for tk, ix, bk, tl in ((topk_o, draws_o.index, buckets_o, tail_o),
                                                 (cols.topk_index, index, buckets_c, tail_c)))
        # float16 draw logits: each log-probability within 2^-11 |z| / T
        bound = 2**-11 * float(teacher.abs().max()) / t * t**2
        np.testing.assert_allclose(cached.numpy(), online.numpy(), rtol=0, atol=bound + 1e-5)


def _cached_batch(tail: str, k_prime: int | None = None):
    b, c, t, m = 6, 40, 2.0, 8
    g = torch.Generator().manual_seed(2)
    teacher, student = 3.0 * torch.randn(b, c, generator=g), 3.0 * torch.randn(b, c, generator=g)
    labels = torch.randint(0, c, (b,), generator=g)
    topk, buckets, draws, sampled = sampled_from_logits(
        teacher, labels, K, t, m, [tail_rng(0, r, 0) for r in range(b)])
    if k_prime is not None:  # a batch whose teacher buckets fold kept speakers into the tail
        cols = summarize_logits(teacher, labels, K, [t])
        buckets = teacher_probs(cols.target_logit, cols.topk_logit, cols.tail_lse[:, 0],
                                k_prime, t)
    batch = DistillBatch(student_logits=student, labels=labels, topk_index=topk, teacher=buckets,
                         tail_index=draws.index, sampled=sampled)
    return DistillConfig(loss="dkd", temperature=t, tail=tail), batch


def test_the_switch_picks_the_sampled_loss_and_the_default_is_unchanged():
    config, batch = _cached_batch("sampled")
    s, lab = batch.student_logits, batch.labels
    idx, tb, tail = torch.as_tensor(batch.topk_index), batch.teacher, batch.sampled
    want = sampled_dkd_loss(s, lab, idx, torch.as_tensor(batch.tail_index),
                            torch.as_tensor(tb.binary), torch.as_tensor(tb.nontarget),
                            torch.as_tensor(tail.nt_weight), torch.as_tensor(tail.nt_logq),
                            temperature=2.0)
    assert torch.equal(distill_loss(config, batch, epoch=1.0), want)
    exact = DistillConfig(loss="dkd", temperature=2.0)
    assert exact.tail == "exact-bucket"
    assert torch.equal(distill_loss(exact, batch, epoch=1.0),
                       dkd_loss(s, lab, idx, torch.as_tensor(tb.binary),
                                torch.as_tensor(tb.nontarget), temperature=2.0))
    kd = DistillConfig(loss="kd", temperature=2.0, tail="sampled")
    assert torch.isfinite(distill_loss(kd, batch, epoch=1.0))


@pytest.mark.parametrize("loss", ["ce", "emb", "trkd", "dualgroup"])
def test_sampled_tail_is_refused_for_losses_without_one(loss):
    with pytest.raises(ValueError, match=f"loss '{loss}' has no sampled-tail version.*kd, dkd"):
        DistillConfig(loss=loss, tail="sampled")
    with pytest.raises(ValueError, match="tail must be one of exact-bucket, sampled"):
        DistillConfig(loss="dkd", tail="bucket")


def test_sampled_tail_refuses_missing_draws_and_folded_heads():
    config, batch = _cached_batch("sampled", k_prime=4)
    with pytest.raises(ValueError, match="k' = k = 8, got k' = 4"):
        distill_loss(config, batch, epoch=1.0)
    config, batch = _cached_batch("sampled")
    batch.sampled = None
    with pytest.raises(ValueError, match="needs tail_index and sampled"):
        distill_loss(config, batch, epoch=1.0)
