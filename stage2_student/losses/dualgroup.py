"""Dual-group KD (after Gan et al., ICASSP 2025), cached and online, and its options.

The primary group (target + the teacher's top-k' speakers) carries the discrimination, the
rest enters only through a binary primary-vs-rest term:

    T^2 * (w_P * KL(p restricted to the primary group || q restricted to it)
           + w_B * KL([P_primary, P_rest] || [Q_primary, Q_rest])).

Exact from any top-k cache with k' <= k (the rest's mass is the tail bucket). The paper's
adaptive logit softening is known to us only from its abstract; the softening here is
ours: see ``kernels.dual_group_probs`` (the teacher side) and
``DualGroupOptions.binary_entropy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from stage2_student.kernels import TeacherBuckets, dual_group_probs
from stage2_student.losses.buckets import (
    bucket_logits,
    check_same,
    check_teacher,
    kl,
    no_autocast,
    on_device,
    teacher_buckets_from_logits,
)
from stage2_student.losses.config import DistillBatch, DistillConfig, cached_inputs
from stage2_student.losses.registry import LossOptions, option, register_loss

__all__ = ["DualGroupOptions", "log_odds_at_entropy", "dual_group_terms", "dual_group_loss",
           "full_logit_dual_group_loss"]

_OURS_DG = "ours (only the paper's abstract is public to us)"


def _binary_entropy_bits(x: float) -> float:
    """Entropy in bits of the binary distribution sigmoid(+-x): in nats it is
    log(1 + e^-|x|) + |x| * sigmoid(-|x|), a form without log(0) at any |x|."""
    x = abs(x)
    return (math.log1p(math.exp(-x)) + x / (1.0 + math.exp(x))) / math.log(2.0)


def log_odds_at_entropy(bits: float) -> float:
    """The log-odds x > 0 whose binary distribution sigmoid(+-x) has entropy ``bits``.

    >>> x = log_odds_at_entropy(0.5)
    >>> round(x, 4), round(_binary_entropy_bits(x), 12)
    (2.0905, 0.5)
    """
    if not 0.0 < bits < 1.0:
        raise ValueError(f"binary entropy must be in (0, 1) bits, got {bits}")
    lo, hi = 0.0, 60.0  # entropy falls from 1 bit at 0 to ~1e-24 bits at 60
    for _ in range(100):  # bisection to float64 resolution
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _binary_entropy_bits(mid) > bits else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class DualGroupOptions(LossOptions):
    """Dual-group KD's options. The primary group's size is k' (``DistillConfig.topk``)."""

    primary_weight: float = option(1.0, "Weight of the KL over the primary group (target + "
                                         "top-k' speakers).", _OURS_DG)
    binary_weight: float = option(1.0, "Weight of the binary primary-vs-rest KL.", _OURS_DG)
    binary_entropy: float | None = option(
        None, "Adaptive softening, off unless given: per row, a temperature on the binary "
              "term's log-odds that raises the teacher's binary entropy to this many bits "
              "(0 < H < 1) where it is lower; that row's binary KL is then weighted by the "
              "temperature squared.", _OURS_DG)

    def __post_init__(self) -> None:
        if not (self.primary_weight >= 0 and self.binary_weight >= 0):
            raise ValueError(f"dualgroup weights must be >= 0, got {self.primary_weight}, "
                             f"{self.binary_weight}")
        if self.binary_entropy is not None and not 0.0 < self.binary_entropy < 1.0:
            raise ValueError(f"dualgroup binary_entropy must be in (0, 1) bits, "
                             f"got {self.binary_entropy}")

    def log_odds_cap(self) -> float | None:
        """The teacher log-odds magnitude the softening caps rows at (None: off)."""
        return None if self.binary_entropy is None else log_odds_at_entropy(self.binary_entropy)


def dual_group_terms(student_logits: Tensor, labels: Tensor, topk_index: Tensor,
                     teacher_primary: Tensor, teacher_binary: Tensor,
                     soften: Tensor | None = None,
                     temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """(primary-group KL, binary KL), each ``T^2 * KL`` batch mean.

    Args:
        student_logits: [B, C]; labels: [B]; topk_index: [B, k'] the primary speakers.
        teacher_primary, teacher_binary, soften: ``dual_group_probs`` output
            ([B, k'+1], [B, 2], [B]). ``soften`` divides the student's binary log-odds per
            row (the teacher's are already softened) and weights that row's KL by its
            square, as T^2 does for T; None: no softening.
        temperature: T > 0.
    """
    with no_autocast(student_logits):
        z = bucket_logits(student_logits, labels, topk_index, temperature)
        k1 = topk_index.shape[1] + 1
        z_primary, z_rest = z[:, :k1], z[:, k1:]
        lse_primary = z_primary.logsumexp(dim=1, keepdim=True)
        log_primary = z_primary - lse_primary
        odds = lse_primary - z_rest  # the student's binary log-odds (huge if no rest group)
        weight = 1.0
        if soften is not None:
            check_teacher("soften", soften, (z.shape[0],))
            soften = soften.to(z).view(-1, 1)
            odds, weight = odds / soften, soften**2
        log_binary = torch.cat([F.logsigmoid(odds), F.logsigmoid(-odds)], dim=1)
        check_teacher("teacher_primary", teacher_primary, log_primary.shape)
        check_teacher("teacher_binary", teacher_binary, log_binary.shape)
        p_binary = teacher_binary.to(z)
        rows = (torch.xlogy(p_binary, p_binary) - p_binary * log_binary).sum(dim=1, keepdim=True)
        t2 = temperature**2
        return (t2 * kl(teacher_primary.to(z), log_primary),
                t2 * (weight * rows).sum() / z.shape[0])


def dual_group_loss(student_logits: Tensor, labels: Tensor, topk_index: Tensor,
                    teacher_primary: Tensor, teacher_binary: Tensor, soften: Tensor | None = None,
                    primary_weight: float = 1.0, binary_weight: float = 1.0,
                    temperature: float = 1.0) -> Tensor:
    """Dual-group KD: ``primary_weight * primary KL + binary_weight * binary KL`` (see
    :func:`dual_group_terms`)."""
    primary, binary = dual_group_terms(student_logits, labels, topk_index, teacher_primary,
                                       teacher_binary, soften, temperature)
    return primary_weight * primary + binary_weight * binary


def _dual_group_from_buckets(student_logits: Tensor, labels: Tensor, index: Tensor,
                             teacher: TeacherBuckets, options: DualGroupOptions,
                             temperature: float) -> Tensor:
    """The teacher side in the Numba kernel (single-threaded in the trainer, as for TRKD)."""
    cap = options.log_odds_cap()
    groups = dual_group_probs(teacher, cap, parallel=False)
    s = student_logits
    return dual_group_loss(s, labels, index, on_device(groups.primary, s), on_device(groups.binary, s),
                           None if cap is None else on_device(groups.soften, s),
                           options.primary_weight, options.binary_weight, temperature)


def full_logit_dual_group_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                               k_prime: int, options: DualGroupOptions | None = None,
                               temperature: float = 1.0) -> Tensor:
    """Online dual-group KD: the primary group is the live teacher's top-k' speakers."""
    check_same(student_logits, teacher_logits)
    if not 0 <= k_prime <= student_logits.shape[1] - 1:
        raise ValueError(f"k'={k_prime} must be in [0, C-1={student_logits.shape[1] - 1}]")
    index, teacher = teacher_buckets_from_logits(teacher_logits, labels, k_prime, temperature)
    return _dual_group_from_buckets(student_logits, labels, index, teacher,
                                    options or DualGroupOptions(), temperature)


def _dual_group_cached(config: DistillConfig, batch: DistillBatch) -> Tensor:
    index, teacher = cached_inputs(config, batch)
    return _dual_group_from_buckets(batch.student_logits, batch.labels, index, teacher,
                                    config.options, config.temperature)


def _dual_group_online(config: DistillConfig, batch: DistillBatch) -> Tensor:
    k_prime = config.topk
    if k_prime is None and batch.topk_index is not None:
        k_prime = batch.topk_index.shape[1]  # in training: the cache's k, as cached mode
    if k_prime is None:
        raise ValueError("online dualgroup needs the primary group's size: set topk")
    return full_logit_dual_group_loss(batch.student_logits, batch.teacher_logits, batch.labels,
                                      k_prime, config.options, config.temperature)


register_loss("dualgroup", _dual_group_cached, _dual_group_online, options=DualGroupOptions)
