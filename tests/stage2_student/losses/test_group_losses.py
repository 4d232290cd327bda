"""TRKD and dual-group KD: cached == a direct full-logit implementation (value and gradient),
the tau curriculum, the cap and its counter, options and dispatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from stage1_teacher.soft_labels import summarize_logits
from stage2_student.kernels import teacher_probs
from stage2_student.losses import (
    DistillBatch,
    DistillConfig,
    DualGroupOptions,
    TriageOptions,
    distill_loss,
    full_logit_dual_group_loss,
    full_logit_trkd_loss,
    loss_options,
)

TOL = dict(rtol=1e-5, atol=1e-5)
# Softening weights a row's binary KL by t^2 = (|l| / x*)^2 (hundreds at 0.1 bit and |l| ~ 80
# nats), which scales the float32 rounding of the teacher's log-odds by as much.
SOFTENED_TOL = dict(rtol=1e-3, atol=1e-3)
# A short cache folds entries k'..k-1 into the tail in the kernel's float32 (fast-math): with
# lambda_F = 8 at T = 4 the KL's cancellation leaves up to ~6e-5 relative against float64
# (found by Hypothesis: seed 1, one row of 10 classes, tau 0.2, k' = 7 of k = 9).
CAPPED_TOL = dict(rtol=2e-4, atol=1e-5)


# --- direct full-logit implementations, from the formulas of issue 13 (float64, per row) ---

def _kl(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """sum p log(p / q) over the entries with p > 0."""
    keep = p > 0
    return (p[keep] * (p[keep].log() - log_q[keep])).sum()


def _teacher_order(teacher_row: torch.Tensor, label: int) -> list[int]:
    """Non-target classes, most probable first."""
    return [j for j in torch.argsort(teacher_row, descending=True).tolist() if j != label]


def trkd_reference(student, teacher, labels, tau, lambda_m, lambda_f, t, cap=None):
    """-> (loss, number of rows whose confusion set was capped, min |rest share - (1-tau)|).

    Confusion set: the smallest prefix of the sorted non-targets whose share of the
    non-target mass is >= tau (checked as: what is left is <= 1 - tau). With ``cap`` it is
    cut to its first ``cap`` classes, the rest joining the background.
    """
    total, capped, closest = 0.0, 0, math.inf
    for i in range(len(labels)):
        y = int(labels[i])
        p = torch.softmax(teacher[i].double() / t, dim=0)
        log_q = torch.log_softmax(student[i].double() / t, dim=0)
        order = _teacher_order(teacher[i], y)
        share = p[order] / p[order].sum()
        left = [float(share[m:].sum()) for m in range(len(order) + 1)]
        n = next(m for m in range(1, len(order) + 1) if left[m] <= 1.0 - tau)
        closest = min([closest, *(abs(v - (1.0 - tau)) for v in left[1:-1])])
        if cap is not None and n > cap:
            n, capped = cap, capped + 1
        conf, back = order[:n], order[n:]
        p3 = torch.stack([p[y], p[conf].sum(), p[back].sum()])
        log_q3 = torch.stack([log_q[y], log_q[conf].logsumexp(0),
                              log_q[back].logsumexp(0) if back else torch.tensor(-math.inf)])
        p_conf = p[conf] / p[conf].sum()
        log_q_conf = log_q[conf] - log_q[conf].logsumexp(0)
        total = total + t**2 * (lambda_m * _kl(p3, log_q3) + lambda_f * _kl(p_conf, log_q_conf))
    return total / len(labels), capped, closest


def _binary_entropy_bits(x: float) -> float:
    p = 1.0 / (1.0 + math.exp(-x))
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def dual_group_reference(student, teacher, labels, k_prime, t, entropy_bits=None,
                         w_primary=1.0, w_binary=1.0):
    """Primary group: target + the teacher's top-k' non-targets. KL over it, renormalised,
    plus a binary KL on (primary, rest) masses. Softening (ours): where the teacher's binary
    log-odds l exceed x* in magnitude, with entropy(sigmoid(x*)) = entropy_bits, both
    sides' log-odds are divided by |l| / x* and that row's binary KL is weighted by its
    square."""
    x_star = None if entropy_bits is None else brentq(
        lambda x: _binary_entropy_bits(x) - entropy_bits, 1e-9, 30.0, xtol=1e-14)
    total = 0.0
    for i in range(len(labels)):
        y = int(labels[i])
        p = torch.softmax(teacher[i].double() / t, dim=0)
        log_q = torch.log_softmax(student[i].double() / t, dim=0)
        order = _teacher_order(teacher[i], y)
        primary, rest = [y, *order[:k_prime]], order[k_prime:]
        p_primary = p[primary] / p[primary].sum()
        log_q_primary = log_q[primary] - log_q[primary].logsumexp(0)
        term = w_primary * _kl(p_primary, log_q_primary)
        if rest:  # with no rest group both binary distributions are (1, 0): KL 0
            odds_t = float(p[primary].sum().log() - p[rest].sum().log())
            odds_s = log_q[primary].logsumexp(0) - log_q[rest].logsumexp(0)
            # A group mass below float32's smallest normal is 0 in the kernels (the cache's
            # probabilities are float32): such a row has nothing to soften.
            representable = min(p[primary].sum(), p[rest].sum()) >= np.finfo(np.float32).tiny
            soften = (1.0 if x_star is None or not representable
                      else max(1.0, abs(odds_t) / x_star))
            pt = torch.sigmoid(torch.tensor([odds_t, -odds_t], dtype=torch.float64) / soften)
            log_qb = torch.nn.functional.logsigmoid(torch.stack([odds_s, -odds_s]) / soften)
            term = term + w_binary * soften**2 * _kl(pt, log_qb)
        total = total + t**2 * term
    return total / len(labels)


# --- the cached path: cache rows from the dump's reduction, buckets from the kernels -------

def cached_batch(teacher, student, labels, k, k_prime, t, epoch=0.0) -> DistillBatch:
    """What training sees: summarize_logits (stage 1), float16 top-k, teacher_probs."""
    rows = summarize_logits(teacher, labels, k, (t,))
    buckets = teacher_probs(rows.target_logit, rows.topk_logit.astype(np.float16),
                            rows.tail_lse[:, 0], k_prime, t)
    return DistillBatch(student_logits=student, labels=labels,
                        topk_index=rows.topk_index, teacher=buckets, epoch=epoch)


def random_case(seed: int, batch: int, classes: int, spread: float):
    """Teacher logits exactly representable in float16 (so the cache loses nothing)."""
    gen = torch.Generator().manual_seed(seed)
    teacher = (torch.randn(batch, classes, generator=gen) * spread).half().float()
    student = torch.randn(batch, classes, generator=gen) * spread
    labels = torch.randint(0, classes, (batch,), generator=gen)
    return teacher, student.requires_grad_(), labels


def has_ties(teacher) -> bool:
    """Whether any row has two equal logits (float16 rounding makes some): TRKD's sorted
    prefix and dual-group's top-k' are then ambiguous, and the cache and the reference may
    order the pair apart."""
    return any(len(row.unique()) < len(row) for row in teacher)


def value_and_grad(fn, student):
    student.grad = None
    value = fn()
    value.backward()
    return value.detach().double(), student.grad.clone()


def trkd_config(tau: float, t: float, lambda_m=1.0, lambda_f=8.0, topk=None) -> DistillConfig:
    """A config whose curriculum sits at ``tau`` for every epoch."""
    return DistillConfig(loss="trkd", temperature=t, topk=topk, options=TriageOptions(
        tau_start=tau, tau_end=tau, tau_epochs=1.0, lambda_m=lambda_m, lambda_f=lambda_f))


case = dict(seed=st.integers(0, 2**31), batch=st.integers(1, 6), classes=st.integers(2, 30),
            spread=st.sampled_from([1.0, 4.0, 12.0]), t=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
TAUS = st.sampled_from([1.0, 0.9, 0.5, 0.2, 0.05])


@settings(max_examples=60, deadline=None)
@given(**case, tau=TAUS, lambdas=st.sampled_from([(1.0, 8.0), (0.5, 2.0)]))
def test_trkd_cached_at_k_c_minus_1_equals_full_logit_trkd(seed, batch, classes, spread, t,
                                                           tau, lambdas):
    teacher, student, labels = random_case(seed, batch, classes, spread)
    want, want_grad = value_and_grad(
        lambda: trkd_reference(student, teacher, labels, tau, *lambdas, t)[0], student)
    closest = trkd_reference(student, teacher, labels, tau, *lambdas, t)[2]
    assume(closest > 1e-4)  # a share within float32 rounding of 1 - tau decides the set
    assume(not has_ties(teacher))  # tied speakers at the set's edge: either one is "the" set
    config = trkd_config(tau, t, *lambdas)
    parts = cached_batch(teacher, student, labels, classes - 1, classes - 1, t)
    got, grad = value_and_grad(lambda: distill_loss(config, parts, epoch=0.5), student)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(grad, want_grad, **TOL)
    assert parts.stats == {"trkd_tau": tau, "trkd_capped": 0.0}
    online, online_grad = value_and_grad(
        lambda: full_logit_trkd_loss(student, teacher, labels, tau, config.options, t), student)
    torch.testing.assert_close(online, want, **TOL)
    torch.testing.assert_close(online_grad, want_grad, **TOL)


@settings(max_examples=60, deadline=None)
@given(**case, tau=TAUS, k_cut=st.floats(0, 1), kp_cut=st.floats(0, 1))
@example(seed=1, batch=1, classes=10, spread=1.0, t=4.0, tau=0.2, k_cut=1.0, kp_cut=0.75)
def test_trkd_from_a_short_cache_equals_the_capped_definition(seed, batch, classes, spread, t,
                                                              tau, k_cut, kp_cut):
    # k < C-1 and k' <= k: exact TRKD where the cap does not bind, the capped definition
    # where it does, and the counter says where.
    teacher, student, labels = random_case(seed, batch, classes, spread)
    k = max(1, round(k_cut * (classes - 1)))
    k_prime = round(kp_cut * k)
    want, want_grad = value_and_grad(
        lambda: trkd_reference(student, teacher, labels, tau, 1.0, 8.0, t, cap=k_prime)[0],
        student)
    _, capped, closest = trkd_reference(student, teacher, labels, tau, 1.0, 8.0, t, cap=k_prime)
    assume(closest > 1e-4)
    assume(not has_ties(teacher))
    parts = cached_batch(teacher, student, labels, k, k_prime, t)
    got, grad = value_and_grad(lambda: distill_loss(trkd_config(tau, t), parts, 0.0), student)
    torch.testing.assert_close(got, want, **CAPPED_TOL)
    torch.testing.assert_close(grad, want_grad, **CAPPED_TOL)
    assert parts.stats["trkd_capped"] == capped / batch


def test_cap_binds_and_is_counted_when_tau_wants_more_than_k_prime():
    # A flat teacher over 40 classes: tau = 0.9 wants ~35 non-targets, k' = 4 holds ~4/39.
    teacher, student, labels = random_case(11, 8, 40, 0.3)
    want, capped, _ = trkd_reference(student, teacher, labels, 0.9, 1.0, 8.0, 1.0, cap=4)
    assert capped == 8
    parts = cached_batch(teacher, student, labels, 10, 4, 1.0)
    got = distill_loss(trkd_config(0.9, 1.0), parts, 0.0)
    torch.testing.assert_close(got.double(), want.detach(), **TOL)
    assert parts.stats["trkd_capped"] == 1.0
    uncapped = trkd_reference(student, teacher, labels, 0.9, 1.0, 8.0, 1.0)[0]
    assert abs(float(uncapped.detach() - want.detach())) > 1e-3  # the cap changes the loss: the test can fail
    # the same rows at a tau the 4 kept speakers can serve: no cap
    parts = cached_batch(teacher, student, labels, 10, 4, 1.0)
    distill_loss(trkd_config(0.05, 1.0), parts, 0.0)
    assert parts.stats["trkd_capped"] == 0.0


def test_tau_curriculum_ends_and_shape():
    options = TriageOptions(tau_epochs=8.0)
    assert options.tau(0.0) == 1.0 and options.tau(8.0) == 0.05
    assert options.tau(-1.0) == 1.0 and options.tau(20.0) == 0.05
    assert options.tau(2.0) == pytest.approx(1.0 - 0.95 / 4)  # linear in epochs
    custom = TriageOptions(tau_start=0.7, tau_end=0.3, tau_epochs=3.0)
    assert custom.tau(0.0) == 0.7 and custom.tau(3.0) == 0.3
    taus = [options.tau(e / 4) for e in range(33)]
    assert all(a > b for a, b in zip(taus, taus[1:32], strict=False))
    assert TriageOptions().for_run(12).tau_epochs == 12.0  # default: the whole run
    assert TriageOptions(tau_epochs=3.0).for_run(12).tau_epochs == 3.0
    with pytest.raises(ValueError, match="for_run"):
        TriageOptions().tau(1.0)


def test_distill_loss_follows_the_curriculum():
    teacher, student, labels = random_case(2, 6, 25, 4.0)
    config = DistillConfig(loss="trkd", temperature=2.0, options=TriageOptions(tau_epochs=4.0))
    for epoch, tau in ((0.0, 1.0), (4.0, 0.05), (9.0, 0.05)):
        parts = cached_batch(teacher, student, labels, 24, 24, 2.0)
        got = distill_loss(config, parts, epoch)
        want = trkd_reference(student, teacher, labels, tau, 1.0, 8.0, 2.0)[0]
        torch.testing.assert_close(got.detach().double(), want.detach(), **TOL)
        assert parts.stats["trkd_tau"] == tau


@settings(max_examples=60, deadline=None)
@given(**case, kp_cut=st.floats(0, 1), entropy=st.sampled_from([None, 0.1, 0.5, 0.9]),
       weights=st.sampled_from([(1.0, 1.0), (2.0, 0.5)]))
def test_dual_group_cached_at_k_c_minus_1_equals_full_logit(seed, batch, classes, spread, t,
                                                            kp_cut, entropy, weights):
    # The cache holds every class; the primary group is any k' <= C-1 of them.
    teacher, student, labels = random_case(seed, batch, classes, spread)
    assume(not has_ties(teacher))
    k_prime = round(kp_cut * (classes - 1))
    want, want_grad = value_and_grad(lambda: dual_group_reference(
        student, teacher, labels, k_prime, t, entropy, *weights), student)
    options = DualGroupOptions(primary_weight=weights[0], binary_weight=weights[1],
                               binary_entropy=entropy)
    config = DistillConfig(loss="dualgroup", temperature=t, options=options)
    parts = cached_batch(teacher, student, labels, classes - 1, k_prime, t)
    got, grad = value_and_grad(lambda: distill_loss(config, parts, 1.0), student)
    tol = TOL if entropy is None else SOFTENED_TOL
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(grad, want_grad, **tol)
    online, online_grad = value_and_grad(lambda: full_logit_dual_group_loss(
        student, teacher, labels, k_prime, options, t), student)
    torch.testing.assert_close(online, want, **tol)
    torch.testing.assert_close(online_grad, want_grad, **tol)


@settings(max_examples=40, deadline=None)
@given(**case, k_cut=st.floats(0, 1), kp_cut=st.floats(0, 1),
       entropy=st.sampled_from([None, 0.5]))
def test_dual_group_is_exact_from_a_short_cache(seed, batch, classes, spread, t, k_cut, kp_cut,
                                                entropy):
    # The rest group's mass is the tail bucket: no approximation for any k' <= k < C-1.
    teacher, student, labels = random_case(seed, batch, classes, spread)
    assume(not has_ties(teacher))  # tied speakers at the group's edge: either one is "the" group
    k = max(1, round(k_cut * (classes - 1)))
    k_prime = round(kp_cut * k)
    want, want_grad = value_and_grad(lambda: dual_group_reference(
        student, teacher, labels, k_prime, t, entropy), student)
    config = DistillConfig(loss="dualgroup", temperature=t,
                           options=DualGroupOptions(binary_entropy=entropy))
    parts = cached_batch(teacher, student, labels, k, k_prime, t)
    got, grad = value_and_grad(lambda: distill_loss(config, parts, 1.0), student)
    tol = TOL if entropy is None else SOFTENED_TOL
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(grad, want_grad, **tol)


def test_softening_changes_only_confident_rows():
    teacher, student, labels = random_case(4, 6, 20, 12.0)
    plain = dual_group_reference(student, teacher, labels, 3, 1.0)
    soft = dual_group_reference(student, teacher, labels, 3, 1.0, entropy_bits=0.5)
    assert abs(float((plain - soft).detach())) > 1e-3  # the reference's softening is not a no-op
    wide = dual_group_reference(student, teacher, labels, 3, 1.0, entropy_bits=1e-9)
    torch.testing.assert_close(wide, plain)  # a cap no row reaches changes nothing


def test_losses_stay_finite_with_bf16_students_and_an_empty_tail():
    teacher, student, labels = random_case(0, 4, 12, 12.0)
    half = student.detach().bfloat16().requires_grad_()
    for config in (trkd_config(1.0, 0.5),
                   DistillConfig(loss="dualgroup", temperature=0.5,
                                 options=DualGroupOptions(binary_entropy=0.3))):
        parts = cached_batch(teacher, half, labels, 11, 11, 0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = distill_loss(config, parts, 0.0)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        half.grad = None
        loss.backward()
        assert torch.isfinite(half.grad.float()).all()


def test_zero_kept_speakers():
    # k' = 0: TRKD's confusion set is empty (all capped), dual-group's primary is the target.
    teacher, student, labels = random_case(3, 5, 9, 4.0)
    parts = cached_batch(teacher, student, labels, 4, 0, 1.0)
    got = distill_loss(trkd_config(0.5, 1.0), parts, 0.0)
    want = trkd_reference(student, teacher, labels, 0.5, 1.0, 8.0, 1.0, cap=0)
    torch.testing.assert_close(got.detach().double(), want[0].detach(), **TOL)
    assert parts.stats["trkd_capped"] == 1.0
    parts = cached_batch(teacher, student, labels, 4, 0, 1.0)
    got = distill_loss(DistillConfig(loss="dualgroup"), parts, 0.0)
    want = dual_group_reference(student, teacher, labels, 0, 1.0)
    torch.testing.assert_close(got.detach().double(), want.detach(), **TOL)


# --- options in DistillConfig ----------------------------------------------------------------

def test_config_keeps_each_losses_own_options():
    assert DistillConfig(loss="trkd").options == TriageOptions()
    assert DistillConfig(loss="dualgroup").options == DualGroupOptions()
    assert DistillConfig(loss="dkd").options is None
    assert loss_options("trkd") is TriageOptions and loss_options("dkd") is None
    # config.json read back: a mapping becomes the loss's dataclass
    read = DistillConfig(loss="trkd", options={"tau_end": 0.1, "tau_epochs": 5.0})
    assert read.options == TriageOptions(tau_end=0.1, tau_epochs=5.0)
    with pytest.raises(ValueError, match="takes TriageOptions"):
        DistillConfig(loss="trkd", options=DualGroupOptions())
    with pytest.raises(ValueError, match="no options of its own"):
        DistillConfig(loss="dkd", options=TriageOptions())
    with pytest.raises(ValueError, match="unknown trkd option"):
        DistillConfig(loss="trkd", options={"tau": 0.1})


@pytest.mark.parametrize(("make", "message"), [
    (lambda: TriageOptions(tau_end=0.0), "tau_end must be in"),
    (lambda: TriageOptions(tau_start=1.5), "tau_start must be in"),
    (lambda: TriageOptions(tau_epochs=0.0), "tau_epochs"),
    (lambda: TriageOptions(lambda_f=-1.0), "lambda_m and lambda_f"),
    (lambda: DualGroupOptions(binary_entropy=1.0), "binary_entropy"),
    (lambda: DualGroupOptions(binary_weight=-1.0), "weights"),
])
def test_bad_options_are_value_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_online_dual_group_needs_a_primary_size():
    teacher, student, labels = random_case(0, 3, 8, 4.0)
    online = DistillBatch(student, labels, teacher_logits=teacher)
    with pytest.raises(ValueError, match="set topk"):
        distill_loss(DistillConfig(loss="dualgroup"), online, 0.0)
    got = distill_loss(DistillConfig(loss="dualgroup", topk=3), online, 0.0)
    torch.testing.assert_close(got.detach().double(),
                               dual_group_reference(student, teacher, labels, 3, 1.0).detach(),
                               **TOL)
