"""KD and DKD (decoupled KD with emphasized non-target knowledge), cached and online, and
KD's own options.

Cached: against the teacher buckets over ``[target, k' speakers, tail]`` (see ``buckets``).
Online: over all C classes, DKD as mdistiller's ``dkd_loss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from stage2_student.losses.buckets import (
    bucket_logits,
    check_same,
    check_teacher,
    kl,
    no_autocast,
    on_device,
    student_buckets,
    wide,
)
from stage2_student.losses.config import DistillBatch, DistillConfig, cached_inputs
from stage2_student.losses.registry import LossOptions, option, register_loss

__all__ = ["KDOptions", "kd_loss", "dkd_terms", "dkd_loss", "full_logit_kd_loss",
           "full_logit_dkd_loss"]

# mdistiller's gt-mask trick: subtracting 1000 from the target's logit/T drops it from the
# non-target softmax without -inf (0 * -inf would make kl_div NaN). Exact in float32 as
# long as the logits/T of a row span less than ~900, i.e. |s/T| < 450 (s=32: T > 0.08).
_GT_OFFSET = 1000.0


@dataclass(frozen=True)
class KDOptions(LossOptions):
    """Plain KD's options."""

    weight: float = option(1.0, "Weight of the KD term (3 matches the total weight of DKD "
                                "at alpha 1, beta 2: the control that separates decoupling "
                                "from more KD weight).", "Hinton et al. 2015 (weight 1)")

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"kd weight must be >= 0, got {self.weight}")


def kd_loss(student_logits: Tensor, labels: Tensor, topk_index: Tensor, teacher_full: Tensor,
            temperature: float) -> Tensor:
    """``T^2 * KL(teacher || student)`` over the k'+2 buckets, batch mean.

    ``teacher_full`` is ``TeacherBuckets.full`` ([B, k'+2], same column order).
    """
    with no_autocast(student_logits):
        log_s = student_buckets(student_logits, labels, topk_index, temperature)
        check_teacher("teacher_full", teacher_full, log_s.shape)
        return temperature**2 * kl(teacher_full.to(log_s), log_s)


def dkd_terms(student_logits: Tensor, labels: Tensor, topk_index: Tensor, teacher_binary: Tensor,
              teacher_nontarget: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD), each ``T^2 * KL`` batch mean, against cached teacher buckets.

    TCKD compares [p_t, 1-p_t]; NCKD compares the non-target distributions over the k'
    speakers plus tail, the student's renormalised from its non-target logits alone (so it
    stays exact when the student is very sure of the target).
    """
    with no_autocast(student_logits):
        z = bucket_logits(student_logits, labels, topk_index, temperature)
        z_target, z_non = z[:, :1], z[:, 1:]
        lse_non = z_non.logsumexp(dim=1, keepdim=True)
        lse_all = torch.logaddexp(z_target, lse_non)
        log_binary = torch.cat([z_target - lse_all, lse_non - lse_all], dim=1)
        log_non = z_non - lse_non
        check_teacher("teacher_binary", teacher_binary, log_binary.shape)
        check_teacher("teacher_nontarget", teacher_nontarget, log_non.shape)
        t2 = temperature**2
        tckd = t2 * kl(teacher_binary.to(z), log_binary)
        nckd = t2 * kl(teacher_nontarget.to(z), log_non)
        return tckd, nckd


def dkd_loss(student_logits: Tensor, labels: Tensor, topk_index: Tensor, teacher_binary: Tensor,
             teacher_nontarget: Tensor, alpha: float = 1.0, beta: float = 2.0,
             temperature: float = 1.0) -> Tensor:
    """Decoupled KD with emphasized non-target knowledge: ``alpha*TCKD + beta*NCKD``.

    Defaults are the paper's (alpha=1, beta=2, T=1). See :func:`dkd_terms`.
    """
    tckd, nckd = dkd_terms(student_logits, labels, topk_index, teacher_binary,
                           teacher_nontarget, temperature)
    return alpha * tckd + beta * nckd


def full_logit_kd_loss(student_logits: Tensor, teacher_logits: Tensor,
                       temperature: float) -> Tensor:
    """Online KD over all C classes: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean."""
    check_same(student_logits, teacher_logits)
    with no_autocast(student_logits):
        log_s = F.log_softmax(wide(student_logits) / temperature, dim=1)
        log_t = F.log_softmax(wide(teacher_logits).to(log_s) / temperature, dim=1)
        return temperature**2 * F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)


def full_logit_dkd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                        alpha: float = 1.0, beta: float = 2.0,
                        temperature: float = 1.0) -> Tensor:
    """Online DKD over all C classes, as mdistiller's ``dkd_loss``.

    TCKD on [p_t, 1-p_t] from the gt mask (``cat_mask``), taken in log space so that a
    saturated target probability gives no ``log(0)``; NCKD with the gt-mask trick
    (``logits/T - 1000 * gt_mask``).
    """
    check_same(student_logits, teacher_logits)
    with no_autocast(student_logits):
        zs = wide(student_logits) / temperature
        zt = wide(teacher_logits).to(zs) / temperature
        gt_mask = torch.zeros_like(zs, dtype=torch.bool).scatter_(
            1, labels.long().view(-1, 1), True)
        t2 = temperature**2
        tckd = t2 * F.kl_div(_binary_log_probs(zs, gt_mask), _binary_log_probs(zt, gt_mask),
                             reduction="batchmean", log_target=True)
        log_s_non = F.log_softmax(zs - _GT_OFFSET * gt_mask, dim=1)
        p_t_non = F.softmax(zt - _GT_OFFSET * gt_mask, dim=1)
        nckd = t2 * F.kl_div(log_s_non, p_t_non, reduction="batchmean")
        return alpha * tckd + beta * nckd


def _binary_log_probs(z: Tensor, gt_mask: Tensor) -> Tensor:
    """log [sum p over gt_mask, sum p over the rest] for p = softmax(z) (mdistiller cat_mask)."""
    log_p = F.log_softmax(z, dim=1)
    # -inf is safe here: logsumexp's backward weights it by exp(-inf) = 0 and masked_fill
    # then zeroes the masked gradients.
    target = log_p.masked_fill(~gt_mask, -math.inf).logsumexp(dim=1, keepdim=True)
    other = log_p.masked_fill(gt_mask, -math.inf).logsumexp(dim=1, keepdim=True)
    return torch.cat([target, other], dim=1)


def _kd_cached(config: DistillConfig, batch: DistillBatch) -> Tensor:
    index, teacher = cached_inputs(config, batch)
    return config.options.weight * kd_loss(batch.student_logits, batch.labels, index,
                                           on_device(teacher.full, batch.student_logits),
                                           config.temperature)


def _kd_online(config: DistillConfig, batch: DistillBatch) -> Tensor:
    return config.options.weight * full_logit_kd_loss(batch.student_logits, batch.teacher_logits,
                                                      config.temperature)


def _dkd_cached(config: DistillConfig, batch: DistillBatch) -> Tensor:
    index, teacher = cached_inputs(config, batch)
    s = batch.student_logits
    return dkd_loss(s, batch.labels, index, on_device(teacher.binary, s),
                    on_device(teacher.nontarget, s), config.alpha, config.beta,
                    config.temperature)


def _dkd_online(config: DistillConfig, batch: DistillBatch) -> Tensor:
    return full_logit_dkd_loss(batch.student_logits, batch.teacher_logits, batch.labels,
                               config.alpha, config.beta, config.temperature)


register_loss("kd", _kd_cached, _kd_online, options=KDOptions)
register_loss("dkd", _dkd_cached, _dkd_online)
