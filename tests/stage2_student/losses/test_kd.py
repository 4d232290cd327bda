"""Distillation losses: cached == online when nothing is in the tail, mdistiller's DKD, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stage2_student.kernels import TeacherBuckets, teacher_probs
from stage2_student.losses import (
    DistillBatch,
    DistillConfig,
    distill_loss,
    dkd_loss,
    dkd_terms,
    embedding_kd_loss,
    full_logit_dkd_loss,
    full_logit_kd_loss,
    kd_loss,
    loss_names,
    student_buckets,
)

TOL = dict(rtol=1e-5, atol=1e-5)


# --- mdistiller's DKD, re-implemented verbatim from mdistiller/distillers/DKD.py -----------
# (only change: size_average=False, deprecated in torch, is spelled reduction="sum")
def _get_gt_mask(logits, target):
    target = target.reshape(-1)
    mask = torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), 1).bool()
    return mask


def _get_other_mask(logits, target):
    target = target.reshape(-1)
    mask = torch.ones_like(logits).scatter_(1, target.unsqueeze(1), 0).bool()
    return mask


def cat_mask(t, mask1, mask2):
    t1 = (t * mask1).sum(dim=1, keepdims=True)
    t2 = (t * mask2).sum(1, keepdims=True)
    rt = torch.cat([t1, t2], dim=1)
    return rt


def mdistiller_dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature):
    gt_mask = _get_gt_mask(logits_student, target)
    other_mask = _get_other_mask(logits_student, target)
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    pred_student = cat_mask(pred_student, gt_mask, other_mask)
    pred_teacher = cat_mask(pred_teacher, gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd_loss = (
        F.kl_div(log_pred_student, pred_teacher, reduction="sum")
        * (temperature**2)
        / target.shape[0]
    )
    pred_teacher_part2 = F.softmax(
        logits_teacher / temperature - 1000.0 * gt_mask, dim=1
    )
    log_pred_student_part2 = F.log_softmax(
        logits_student / temperature - 1000.0 * gt_mask, dim=1
    )
    nckd_loss = (
        F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum")
        * (temperature**2)
        / target.shape[0]
    )
    return alpha * tckd_loss + beta * nckd_loss
# ---------------------------------------------------------------------------------------------


def make_cache(teacher_logits: torch.Tensor, labels: torch.Tensor, k: int, temperature: float):
    """What the dump would store for these rows: top-k non-targets, float32, tail at T."""
    t = teacher_logits.double()
    masked = t.scatter(1, labels.view(-1, 1), -torch.inf)
    order = masked.argsort(dim=1, descending=True)[:, : t.shape[1] - 1]  # drop the target
    topk_index, rest_index = order[:, :k], order[:, k:]
    tail = (t.gather(1, rest_index) / temperature).logsumexp(dim=1)
    return dict(
        target_logit=t.gather(1, labels.view(-1, 1))[:, 0].float().numpy(),
        topk_logit=t.gather(1, topk_index).float().numpy(),
        tail_lse=tail.float().numpy(),
        topk_index=topk_index,
    )


def random_case(seed: int, batch: int, classes: int, spread: float):
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(batch, classes, generator=gen) * spread
    student = torch.randn(batch, classes, generator=gen) * spread
    labels = torch.randint(0, classes, (batch,), generator=gen)
    return teacher, student.requires_grad_(), labels


def grad_of(loss_fn, student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    student.grad = None
    loss = loss_fn()
    loss.backward()
    return loss.detach(), student.grad.clone()


case_params = dict(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 6),
    classes=st.integers(2, 40),
    spread=st.sampled_from([1.0, 5.0, 16.0]),
    t=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
)


@settings(max_examples=40, deadline=None)
@given(**case_params)
def test_cached_equals_online_when_tail_is_empty(seed, batch, classes, spread, t):
    teacher, student, labels = random_case(seed, batch, classes, spread)
    cache = make_cache(teacher, labels, classes - 1, t)  # k = C - 1: nothing in the tail
    assert np.isneginf(cache["tail_lse"]).all()
    b = teacher_probs(cache["target_logit"], cache["topk_logit"], cache["tail_lse"],
                      classes - 1, t)
    index = cache["topk_index"]

    kd_c, g_kd_c = grad_of(lambda: kd_loss(student, labels, index, torch.from_numpy(b.full), t),
                           student)
    kd_o, g_kd_o = grad_of(lambda: full_logit_kd_loss(student, teacher, t), student)
    torch.testing.assert_close(kd_c, kd_o, **TOL)
    torch.testing.assert_close(g_kd_c, g_kd_o, **TOL)

    def cached_dkd():
        return dkd_loss(student, labels, index, torch.from_numpy(b.binary),
                        torch.from_numpy(b.nontarget), alpha=1.0, beta=2.0, temperature=t)

    dkd_c, g_dkd_c = grad_of(cached_dkd, student)
    dkd_o, g_dkd_o = grad_of(lambda: full_logit_dkd_loss(student, teacher, labels, 1.0, 2.0, t),
                             student)
    torch.testing.assert_close(dkd_c, dkd_o, **TOL)
    torch.testing.assert_close(g_dkd_c, g_dkd_o, **TOL)
    assert torch.isfinite(g_kd_c).all() and torch.isfinite(g_dkd_c).all()


@settings(max_examples=40, deadline=None)
@given(**case_params, alpha=st.sampled_from([0.5, 1.0]), beta=st.sampled_from([1.0, 2.0, 8.0]))
def test_dkd_equals_mdistiller(seed, batch, classes, spread, t, alpha, beta):
    teacher, student, labels = random_case(seed, batch, classes, spread)
    want = mdistiller_dkd_loss(student, teacher, labels, alpha, beta, t)
    assume(torch.isfinite(want))  # its log(softmax) gives log(0) at large logit spreads
    online = full_logit_dkd_loss(student, teacher, labels, alpha, beta, t)
    torch.testing.assert_close(online, want, **TOL)
    cache = make_cache(teacher, labels, classes - 1, t)
    b = teacher_probs(cache["target_logit"], cache["topk_logit"], cache["tail_lse"],
                      classes - 1, t)
    cached = dkd_loss(student, labels, cache["topk_index"], torch.from_numpy(b.binary),
                      torch.from_numpy(b.nontarget), alpha, beta, t)
    torch.testing.assert_close(cached, want, **TOL)


def test_dkd_stays_finite_where_mdistiller_overflows():
    teacher, student, labels = random_case(5, 5, 191, 16.0)
    assert not torch.isfinite(mdistiller_dkd_loss(student, teacher, labels, 1.0, 8.0, 0.5))
    online = full_logit_dkd_loss(student, teacher, labels, 1.0, 8.0, 0.5)
    online.backward()
    assert torch.isfinite(online) and torch.isfinite(student.grad).all()
    cache = make_cache(teacher, labels, 190, 0.5)
    b = teacher_probs(cache["target_logit"], cache["topk_logit"], cache["tail_lse"], 190, 0.5)
    cached = dkd_loss(student, labels, cache["topk_index"], torch.from_numpy(b.binary),
                      torch.from_numpy(b.nontarget), 1.0, 8.0, 0.5)
    torch.testing.assert_close(cached, online, **TOL)


@settings(max_examples=30, deadline=None)
@given(**case_params, k_cut=st.floats(0, 1), kp_cut=st.floats(0, 1))
def test_cached_buckets_with_tail_match_aggregated_full_softmax(seed, batch, classes, spread, t,
                                                                 k_cut, kp_cut):
    # k < C-1 and k' <= k: the teacher's and the student's folded buckets are the
    # full-softmax probabilities summed over the same classes.
    teacher, student, labels = random_case(seed, batch, classes, spread)
    k = max(1, round(k_cut * (classes - 1)))
    k_prime = round(kp_cut * k)
    cache = make_cache(teacher, labels, k, t)
    b = teacher_probs(cache["target_logit"], cache["topk_logit"], cache["tail_lse"], k_prime, t)
    index = cache["topk_index"][:, :k_prime]

    def aggregate(logits):
        p = F.softmax(logits.double() / t, dim=1)
        p_target = p.gather(1, labels.view(-1, 1))
        p_kept = p.gather(1, index)
        p_tail = 1.0 - p_target - p_kept.sum(dim=1, keepdim=True)
        return torch.cat([p_target, p_kept, p_tail.clamp_min(0)], dim=1)

    torch.testing.assert_close(torch.from_numpy(b.full).double(), aggregate(teacher),
                               rtol=1e-5, atol=1e-6)
    got = student_buckets(student, labels, index, t).exp().double()
    torch.testing.assert_close(got, aggregate(student), rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(**case_params, k_cut=st.floats(0, 1))
def test_student_buckets_sum_to_one_and_kd_is_a_divergence(seed, batch, classes, spread, t,
                                                           k_cut):
    teacher, student, labels = random_case(seed, batch, classes, spread)
    k_prime = round(k_cut * (classes - 1))
    index = make_cache(teacher, labels, classes - 1, t)["topk_index"][:, :k_prime]
    log_s = student_buckets(student, labels, index, t)
    assert log_s.shape == (batch, k_prime + 2)
    torch.testing.assert_close(log_s.exp().sum(dim=1), torch.ones(batch), rtol=0, atol=1e-6)

    same = log_s.exp().detach()
    assert abs(float(kd_loss(student, labels, index, same, t).detach())) < 1e-6
    other = F.softmax(torch.randn(batch, k_prime + 2), dim=1)
    assert float(kd_loss(student, labels, index, other, t).detach()) >= 0

    p_t = same[:, :1]
    binary = torch.cat([p_t, same[:, 1:].sum(dim=1, keepdim=True)], dim=1)
    # renormalised in log space: a sure student's non-target masses may all underflow to 0
    nontarget = F.softmax(log_s[:, 1:].detach(), dim=1)
    tckd, nckd = dkd_terms(student, labels, index, binary, nontarget, t)
    assert abs(float(tckd.detach())) < 1e-5 and abs(float(nckd.detach())) < 1e-5


def test_empty_tail_gives_finite_gradients_and_fp32_under_autocast():
    teacher, student, labels = random_case(0, 4, 6, 16.0)
    cache = make_cache(teacher, labels, 5, 1.0)
    b = teacher_probs(cache["target_logit"], cache["topk_logit"], cache["tail_lse"], 5, 1.0)
    half = student.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_s = student_buckets(half, labels, cache["topk_index"], 1.0)
        loss = dkd_loss(half, labels, cache["topk_index"], torch.from_numpy(b.binary),
                        torch.from_numpy(b.nontarget))
    assert log_s.dtype == torch.float32 and loss.dtype == torch.float32
    assert log_s[:, -1].max() < -1e38  # empty tail: exp -> 0, but finite
    loss.backward()
    assert torch.isfinite(half.grad.float()).all()


def test_embedding_kd_loss():
    a = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    assert float(embedding_kd_loss(a, 2 * a)) == pytest.approx(0.0, abs=1e-7)
    assert float(embedding_kd_loss(a, -a)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="embed_dim"):
        embedding_kd_loss(a, torch.zeros(2, 3))


def test_bucket_shape_mismatches_are_value_errors():
    student, labels, index = torch.zeros(2, 5), torch.tensor([0, 1]), torch.tensor([[1], [2]])
    with pytest.raises(ValueError, match="teacher_full"):
        kd_loss(student, labels, index, torch.full((2, 4), 0.25), 1.0)
    with pytest.raises(ValueError, match="topk_index"):
        student_buckets(student, labels, torch.zeros(2, 5, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="same C"):
        full_logit_kd_loss(student, torch.zeros(2, 6), 1.0)


# --- config + dispatch -----------------------------------------------------------------------

def test_weight_warms_up_linearly():
    cfg = DistillConfig(loss="dkd", warmup_epochs=4)
    assert [cfg.weight(e) for e in (0.0, 1.0, 2.0, 4.0, 9.0)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert DistillConfig(loss="kd").weight(0.0) == 1.0
    assert DistillConfig(loss="ce").weight(5.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(loss="xe"), "unknown loss"), (dict(temperature=0), "temperature"),
     (dict(beta=-1), "alpha and beta"), (dict(topk=-1), "topk"),
     (dict(warmup_epochs=-1), "warmup")],
)
def test_bad_config_is_a_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig(**kwargs)


def _batches(seed: int = 0, k: int = 6, k_prime: int = 4, t: float = 2.0):
    teacher, student, labels = random_case(seed, 5, 12, 8.0)
    cache = make_cache(teacher, labels, k, t)
    buckets = teacher_probs(cache["target_logit"], cache["topk_logit"].astype(np.float16),
                            cache["tail_lse"], k_prime, t)
    emb = torch.randn(5, 3)
    cached = DistillBatch(student_logits=student, labels=labels,
                          topk_index=cache["topk_index"].numpy().astype(np.int16),
                          teacher=buckets, student_emb=emb, teacher_emb=emb.numpy() * 2)
    online = DistillBatch(student_logits=student, labels=labels, teacher_logits=teacher)
    return cached, online, cache["topk_index"][:, :k_prime]


def test_distill_loss_dispatches_to_the_pure_functions():
    cached, online, index = _batches()
    cfg = dict(alpha=0.5, beta=3.0, temperature=2.0, warmup_epochs=2)
    t = cached.teacher
    want = {
        "kd": kd_loss(cached.student_logits, cached.labels, index, torch.from_numpy(t.full), 2.0),
        "dkd": dkd_loss(cached.student_logits, cached.labels, index, torch.from_numpy(t.binary),
                        torch.from_numpy(t.nontarget), 0.5, 3.0, 2.0),
        "emb": torch.tensor(0.0),
        "ce": torch.tensor(0.0),
    }
    # TRKD and dual-group are dispatched in test_group_losses.py
    assert set(want) | {"trkd", "dualgroup"} == set(loss_names())
    for name, value in want.items():
        got = distill_loss(DistillConfig(loss=name, **cfg), cached, epoch=1.0)
        torch.testing.assert_close(got, 0.5 * value if name != "ce" else value, **TOL)
    online_kd = distill_loss(DistillConfig(loss="kd", temperature=2.0), online, epoch=3.0)
    torch.testing.assert_close(online_kd, full_logit_kd_loss(online.student_logits,
                                                             online.teacher_logits, 2.0))
    online_dkd = distill_loss(DistillConfig(loss="dkd", **cfg), online, epoch=3.0)
    torch.testing.assert_close(online_dkd, full_logit_dkd_loss(
        online.student_logits, online.teacher_logits, online.labels, 0.5, 3.0, 2.0))
    got = distill_loss(DistillConfig(loss="dkd", **cfg), cached, epoch=5.0)
    got.backward()
    assert torch.isfinite(cached.student_logits.grad).all()


def test_distill_loss_reports_missing_inputs():
    cached, online, _ = _batches()
    with pytest.raises(ValueError, match="needs topk_index and teacher"):
        distill_loss(DistillConfig(loss="kd"), DistillBatch(online.student_logits, online.labels),
                     epoch=1.0)
    with pytest.raises(ValueError, match="student_emb and teacher_emb"):
        distill_loss(DistillConfig(loss="emb"), online, epoch=1.0)
    with pytest.raises(ValueError, match="topk=8"):
        distill_loss(DistillConfig(loss="dkd", topk=8), cached, epoch=1.0)
    short = DistillBatch(cached.student_logits, cached.labels, cached.topk_index[:, :2],
                         cached.teacher)
    with pytest.raises(ValueError, match="fewer than k'=4"):
        distill_loss(DistillConfig(loss="dkd"), short, epoch=1.0)
    assert isinstance(cached.teacher, TeacherBuckets)


def test_kd_weight_scales_the_kd_term_in_both_modes():
    from stage2_student.losses import KDOptions

    teacher, student, labels = random_case(3, 4, 9, 4.0)
    cache = make_cache(teacher, labels, 8, 2.0)
    buckets = teacher_probs(cache["target_logit"], cache["topk_logit"], cache["tail_lse"], 8, 2.0)
    for make in (lambda: DistillBatch(student_logits=student, labels=labels,
                                      topk_index=cache["topk_index"], teacher=buckets),
                 lambda: DistillBatch(student_logits=student, labels=labels,
                                      teacher_logits=teacher)):
        one = distill_loss(DistillConfig(loss="kd", temperature=2.0), make(), 1.0)
        three = distill_loss(DistillConfig(loss="kd", temperature=2.0,
                                           options=KDOptions(weight=3.0)), make(), 1.0)
        assert float(one) > 0
        torch.testing.assert_close(three, 3.0 * one)
