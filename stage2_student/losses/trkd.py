"""Triage KD (TRKD, arXiv 2601.14699), cached and online, and its options.

Per row, the teacher's non-target speakers in descending order are split into a confusion set
(the smallest prefix holding a share >= tau of the non-target mass) and the background (the
rest). Loss, both terms at temperature T:

    T^2 * (lambda_M * KL([p_t, P_conf, P_back] || [q_t, Q_conf, Q_back])
           + lambda_F * KL(p restricted to the confusion set, renormalised || same for q)).

The student's groups are the teacher's classes. From the cache the confusion set is capped
at the k' kept speakers; when the cap binds, the tail is the background (counted per batch).
The teacher side runs in ``kernels.triage_probs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stage2_student.kernels import TeacherBuckets, triage_probs
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

__all__ = ["TriageOptions", "trkd_terms", "trkd_loss", "full_logit_trkd_loss"]

_TRKD = "arXiv 2601.14699 (TRKD)"


@dataclass(frozen=True)
class TriageOptions(LossOptions):
    """TRKD's options; the curriculum shape (linear in epochs) is ours.

    Defaults are the paper's (lambda_F = 8); the value the demo and ``make results`` use is
    chosen on the dev split by ``scripts/tune.py`` (docs/tuning.md), with the paper's default
    reported beside it. Earlier short-run measurements on test trials are kept as history in
    docs/recipe_history.md (superseded, not a justification).

    >>> TriageOptions(tau_epochs=10).tau(5.0)
    0.525
    """

    tau_start: float = option(1.0, "Share of the non-target mass the confusion set covers at "
                                    "the start of the tau curriculum.", _TRKD)
    tau_end: float = option(0.05, "Share the confusion set covers at the end of the "
                                   "curriculum (and after it).", _TRKD)
    tau_epochs: float | None = option(
        None, "Epochs over which tau falls linearly from tau_start to tau_end [default: the "
              "whole run].", "ours (the paper's curriculum shape is not public to us)")
    lambda_m: float = option(1.0, "Weight of the three-mass (target/confusion/background) KL.",
                              _TRKD)
    lambda_f: float = option(8.0, "Weight of the KL conditioned on the confusion set.", _TRKD)

    def __post_init__(self) -> None:
        for name in ("tau_start", "tau_end"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 < value <= 1.0):
                raise ValueError(f"trkd {name} must be in (0, 1], got {value}")
        if self.tau_epochs is not None and not (math.isfinite(self.tau_epochs)
                                                and self.tau_epochs > 0):
            raise ValueError(f"trkd tau_epochs must be > 0, got {self.tau_epochs}")
        if not (self.lambda_m >= 0 and self.lambda_f >= 0):
            raise ValueError(f"trkd lambda_m and lambda_f must be >= 0, got {self.lambda_m}, "
                             f"{self.lambda_f}")

    def tau(self, epoch: float) -> float:
        """tau at a (fractional) epoch: tau_start at 0, linear to tau_end at tau_epochs, then
        tau_end. Written as a convex combination, so both ends are exact."""
        if self.tau_epochs is None:
            raise ValueError("TriageOptions.tau_epochs is unset; use .for_run(epochs)")
        progress = min(max(epoch / self.tau_epochs, 0.0), 1.0)
        return (1.0 - progress) * self.tau_start + progress * self.tau_end

    def for_run(self, epochs: int) -> TriageOptions:
        return self if self.tau_epochs is not None else replace(self, tau_epochs=float(epochs))


def _group_lse(z: Tensor, member: Tensor) -> Tensor:
    """logsumexp over the members of each row of z -> [B, 1]; finite (~-3.4e38) when a row
    has none, so ``0 * log q`` stays 0 and no NaN reaches the backward pass."""
    floor = torch.finfo(z.dtype).min
    masked = torch.where(member, z, floor)
    return torch.cat([masked, masked.new_full((z.shape[0], 1), floor)], dim=1).logsumexp(
        dim=1, keepdim=True)


def trkd_terms(student_logits: Tensor, labels: Tensor, topk_index: Tensor, teacher_mass: Tensor,
               teacher_confusion: Tensor, confusion_size: Tensor,
               temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """(three-mass KL, confusion-set KL), each ``T^2 * KL`` batch mean.

    Args:
        student_logits: [B, C] (scale * cos); labels: [B].
        topk_index: [B, k'] the teacher's kept speakers in the cache's (descending) order.
        teacher_mass, teacher_confusion, confusion_size: ``triage_probs`` output
            ([B, 3], [B, k'], [B]); the confusion set is the first ``size`` kept speakers.
        temperature: T > 0.

    The student's background is its other kept speakers plus its tail (every class that is
    neither the target nor kept), so the result is exact TRKD wherever the cap did not bind.
    """
    with no_autocast(student_logits):
        z = bucket_logits(student_logits, labels, topk_index, temperature)
        k_prime = topk_index.shape[1]
        z_target, z_kept, z_tail = z[:, :1], z[:, 1:k_prime + 1], z[:, k_prime + 1:]
        if tuple(confusion_size.shape) != (z.shape[0],):
            raise ValueError(f"confusion_size has shape {tuple(confusion_size.shape)}, "
                             f"expected ({z.shape[0]},)")
        in_set = (torch.arange(k_prime, device=z.device)
                  < confusion_size.to(z.device).long().view(-1, 1))
        lse_set = _group_lse(z_kept, in_set)
        lse_back = _group_lse(torch.cat([z_kept, z_tail], dim=1),
                              F.pad(~in_set, (0, 1), value=True))  # + the tail
        log_mass = F.log_softmax(torch.cat([z_target, lse_set, lse_back], dim=1), dim=1)
        log_conf = torch.where(in_set, z_kept - lse_set, 0.0)  # outside the set p = 0
        check_teacher("teacher_mass", teacher_mass, log_mass.shape)
        check_teacher("teacher_confusion", teacher_confusion, log_conf.shape)
        t2 = temperature**2
        return (t2 * kl(teacher_mass.to(z), log_mass),
                t2 * kl(teacher_confusion.to(z), log_conf))


def trkd_loss(student_logits: Tensor, labels: Tensor, topk_index: Tensor, teacher_mass: Tensor,
              teacher_confusion: Tensor, confusion_size: Tensor, lambda_m: float = 1.0,
              lambda_f: float = 8.0, temperature: float = 1.0) -> Tensor:
    """Triage KD: ``lambda_m * three-mass KL + lambda_f * confusion-set KL`` (see
    :func:`trkd_terms`); defaults are the paper's (lambda_M = 1, lambda_F = 8)."""
    mass, conf = trkd_terms(student_logits, labels, topk_index, teacher_mass, teacher_confusion,
                            confusion_size, temperature)
    return lambda_m * mass + lambda_f * conf


def _trkd_from_buckets(student_logits: Tensor, labels: Tensor, index: Tensor,
                       teacher: TeacherBuckets, tau: float, options: TriageOptions,
                       temperature: float) -> tuple[Tensor, np.ndarray]:
    """-> (TRKD loss, capped [B]); the teacher side runs in the Numba kernel, single-threaded
    in the trainer (a parallel call would start an OpenMP team competing with torch)."""
    tri = triage_probs(teacher, tau, parallel=False)
    s = student_logits
    loss = trkd_loss(s, labels, index, on_device(tri.mass, s), on_device(tri.confusion, s),
                     on_device(tri.size, s), options.lambda_m, options.lambda_f, temperature)
    return loss, tri.capped


def full_logit_trkd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                         tau: float, options: TriageOptions | None = None,
                         temperature: float = 1.0) -> Tensor:
    """Online TRKD over all C classes (no cap: every non-target is a candidate)."""
    check_same(student_logits, teacher_logits)
    index, teacher = teacher_buckets_from_logits(teacher_logits, labels,
                                                 student_logits.shape[1] - 1, temperature)
    return _trkd_from_buckets(student_logits, labels, index, teacher, tau,
                              options or TriageOptions(), temperature)[0]


def _trkd_cached(config: DistillConfig, batch: DistillBatch) -> Tensor:
    index, teacher = cached_inputs(config, batch)
    tau = config.options.tau(batch.epoch)
    loss, capped = _trkd_from_buckets(batch.student_logits, batch.labels, index, teacher, tau,
                                      config.options, config.temperature)
    batch.stats.update(trkd_tau=tau, trkd_capped=float(capped.mean()) if capped.size else 0.0)
    return loss


def _trkd_online(config: DistillConfig, batch: DistillBatch) -> Tensor:
    tau = config.options.tau(batch.epoch)
    batch.stats.update(trkd_tau=tau, trkd_capped=0.0)  # full logits: nothing to cap
    return full_logit_trkd_loss(batch.student_logits, batch.teacher_logits, batch.labels, tau,
                                config.options, config.temperature)


register_loss("trkd", _trkd_cached, _trkd_online, options=TriageOptions)
