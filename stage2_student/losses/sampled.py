"""KD and DKD with an exact head and an unbiased sampled tail (``DistillConfig.tail =
"sampled"``), and the same inputs drawn from a live teacher (online mode).

A KL between the teacher's distribution ``q`` and the student's ``p`` over a set of classes
is ``sum_j q_j (log q_j - log p_j)``, linear in q. Split at the cache's top-k: the target
(KD only) and the k kept speakers are summed exactly; the tail's part
``sum_{j in tail} q_j f_j`` is ``Q_tail * mean_m f(j_m)`` over M classes drawn from q
restricted to the tail, whose expectation is the exact sum. The student's ``log p_j`` comes
from its own full logits (its normaliser over all classes, so exact), the teacher's
``log q_j`` and ``Q_tail`` from ``kernels.sampled_tail_probs`` (exact normaliser from the
cache). Value and gradient w.r.t. the student's logits are unbiased estimates of the
full-logit KD and NCKD (tests/stage2_student/losses/test_sampled_tail.py checks both).
DKD's TCKD is exact already and stays as it is. TRKD's and dual-group's tail terms are
masses or rankings, not sums of ``q_j f_j``: they have no sampled version (docs/sampled_tail.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from speaker.models.margin import LogitMargin
from stage2_student.kernels import SampledTail, TeacherBuckets, sampled_tail_probs, teacher_probs
from stage2_student.losses.buckets import check_teacher, no_autocast, on_device, wide
from stage2_student.losses.config import DistillBatch, DistillConfig, cached_inputs
from stage2_student.losses.kd import dkd_terms
from stage2_student.losses.registry import register_sampled
from store.tail import TailDraws, draw_tail_rows

__all__ = ["sampled_kl_rows", "sampled_kd_rows", "sampled_nckd_rows", "sampled_kd_loss",
           "sampled_dkd_loss", "sampled_from_logits"]


def sampled_kl_rows(log_p: Tensor, head_index: Tensor, head_q: Tensor, tail_index: Tensor,
                    tail_weight: Tensor, tail_logq: Tensor) -> Tensor:
    """Per row, the estimate of ``KL(q || p)``: exact over the head, sampled over the tail.

    Args:
        log_p: [B, C] the student's log-probabilities over every class (-huge where a
            class is outside the distribution, e.g. the target for NCKD).
        head_index, head_q: [B, h] the head's classes and their teacher probabilities.
        tail_index, tail_weight, tail_logq: [B, M] drawn classes (-1 = padding), their
            weights ``Q_tail * c_m / sum(c)`` and teacher log-probabilities.

    >>> log_p = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    >>> sampled_kl_rows(log_p, torch.tensor([[0]]), torch.tensor([[0.5]]), torch.tensor([[1, 2]]),
    ...                 torch.tensor([[0.25, 0.25]]), log_p[:, 1:])  # q = p: KL 0
    tensor([0.])
    """
    for name, x, like in (("head_q", head_q, head_index), ("tail_weight", tail_weight, tail_index),
                          ("tail_logq", tail_logq, tail_index)):
        if x.shape != like.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(like.shape)}")
    head = (torch.xlogy(head_q, head_q) - head_q * log_p.gather(1, head_index)).sum(dim=1)
    drawn = log_p.gather(1, tail_index.clamp(min=0))
    tail = torch.where(tail_weight > 0, tail_weight * (tail_logq - drawn), 0.0).sum(dim=1)
    return head + tail


def _student_log_probs(student_logits: Tensor, labels: Tensor, temperature: float,
                       nontarget: bool) -> Tensor:
    """log softmax of the student's logits / T over all classes, or over the non-targets
    (the target at the most negative finite float: probability 0, no NaN backward)."""
    z = wide(student_logits) / temperature
    if nontarget:
        z = z.scatter(1, labels.long().view(-1, 1), torch.finfo(z.dtype).min)
    return F.log_softmax(z, dim=1)


def sampled_kd_rows(student_logits: Tensor, labels: Tensor, topk_index: Tensor,
                    tail_index: Tensor, teacher_full: Tensor, tail_weight: Tensor,
                    tail_logp: Tensor, temperature: float) -> Tensor:
    """Per row ``T^2 * KL(teacher || student)`` over all C classes, estimated: target and
    k speakers exact (``teacher_full`` [B, k+2] of ``teacher_probs`` at k' = k), the tail
    from the draws (``SampledTail.full_weight``, ``.full_logp``)."""
    with no_autocast(student_logits):
        log_p = _student_log_probs(student_logits, labels, temperature, nontarget=False)
        k = topk_index.shape[1]
        check_teacher("teacher_full", teacher_full, (log_p.shape[0], k + 2))
        head = torch.cat([labels.long().view(-1, 1), topk_index.long()], dim=1)
        rows = sampled_kl_rows(log_p, head, teacher_full[:, :k + 1].to(log_p), tail_index.long(),
                               tail_weight.to(log_p), tail_logp.to(log_p))
        return temperature**2 * rows


def sampled_nckd_rows(student_logits: Tensor, labels: Tensor, topk_index: Tensor,
                      tail_index: Tensor, teacher_nontarget: Tensor, tail_weight: Tensor,
                      tail_logq: Tensor, temperature: float) -> Tensor:
    """Per row NCKD, ``T^2 * KL`` of the non-target distributions, estimated: k speakers
    exact (``teacher_nontarget`` [B, k+1] at k' = k), the tail from the draws
    (``SampledTail.nt_weight``, ``.nt_logq``); the student renormalised over its non-targets."""
    with no_autocast(student_logits):
        log_p = _student_log_probs(student_logits, labels, temperature, nontarget=True)
        k = topk_index.shape[1]
        check_teacher("teacher_nontarget", teacher_nontarget, (log_p.shape[0], k + 1))
        rows = sampled_kl_rows(log_p, topk_index.long(), teacher_nontarget[:, :k].to(log_p),
                               tail_index.long(), tail_weight.to(log_p), tail_logq.to(log_p))
        return temperature**2 * rows


def sampled_kd_loss(student_logits: Tensor, labels: Tensor, topk_index: Tensor,
                    tail_index: Tensor, teacher_full: Tensor, tail_weight: Tensor,
                    tail_logp: Tensor, temperature: float) -> Tensor:
    """Batch mean of :func:`sampled_kd_rows`."""
    return sampled_kd_rows(student_logits, labels, topk_index, tail_index, teacher_full,
                           tail_weight, tail_logp, temperature).mean()


def sampled_dkd_loss(student_logits: Tensor, labels: Tensor, topk_index: Tensor,
                     tail_index: Tensor, teacher_binary: Tensor, teacher_nontarget: Tensor,
                     tail_weight: Tensor, tail_logq: Tensor, alpha: float = 1.0,
                     beta: float = 2.0, temperature: float = 1.0) -> Tensor:
    """``alpha * TCKD + beta * NCKD``: TCKD exact (``dkd_terms``), NCKD with the sampled
    tail (:func:`sampled_nckd_rows`), batch mean."""
    tckd, _ = dkd_terms(student_logits, labels, topk_index, teacher_binary, teacher_nontarget,
                        temperature)
    nckd = sampled_nckd_rows(student_logits, labels, topk_index, tail_index, teacher_nontarget,
                             tail_weight, tail_logq, temperature).mean()
    return alpha * tckd + beta * nckd


def sampled_from_logits(teacher_logits: Tensor | np.ndarray, labels: Tensor | np.ndarray,
                        k: int, temperature: float, m: int,
                        rngs: Sequence[np.random.Generator], margin: LogitMargin | None = None,
                        ) -> tuple[np.ndarray, TeacherBuckets, TailDraws, SampledTail]:
    """Online mode: what a cache with a sampled tail gives, from a live teacher's logits.

    Row ``i`` is summarised as the dump does (target logit, top-k by descending logit,
    ``tail_lse``) and its tail drawn by ``tail.draw_tail`` with ``rngs[i]``, in float32
    without the cache's float16 rounding; the same kernels then give the teacher side. So
    with the generators a cache used (``tail.tail_rng(run_seed, row, t)``) and its float32
    columns, online and cached sampled losses are equal.

    Returns (topk_index [B, k] int64, TeacherBuckets at k' = k, TailDraws, SampledTail).
    """
    z = np.asarray(torch.as_tensor(teacher_logits).detach().cpu(), np.float32)
    labels = np.asarray(torch.as_tensor(labels).cpu(), np.int64)
    rows = np.arange(z.shape[0])
    others = z.copy()
    others[rows, labels] = -np.inf
    topk_index = np.argsort(-others, axis=1, kind="stable")[:, :k]
    draws, tail_lse = draw_tail_rows(z, labels, topk_index, temperature, m, rngs)
    tail_lse = tail_lse.astype(np.float32)
    teacher = teacher_probs(z[rows, labels], np.take_along_axis(z, topk_index, axis=1),
                            tail_lse, k, temperature, margin=margin, parallel=False)
    tail = sampled_tail_probs(teacher, tail_lse, draws.logit, draws.index, temperature,
                              parallel=False)
    return topk_index, teacher, draws, tail


def sampled_inputs(config: DistillConfig,
                   batch: DistillBatch) -> tuple[Tensor, TeacherBuckets, Tensor, SampledTail]:
    """(topk_index, teacher, tail_index, sampled) of a cached batch; refuses k' < k (the
    draws come from outside the cache's top-k, so every kept speaker must be in the head)."""
    index, teacher = cached_inputs(config, batch)
    if batch.tail_index is None or batch.sampled is None:
        raise ValueError(f"loss {config.loss!r} with tail 'sampled' needs tail_index and "
                         "sampled (kernels.sampled_tail_probs) in the batch")
    if index.shape[1] != batch.topk_index.shape[1]:
        raise ValueError(f"tail 'sampled' needs the teacher buckets at k' = k = "
                         f"{batch.topk_index.shape[1]}, got k' = {index.shape[1]}")
    return index, teacher, on_device(batch.tail_index, batch.student_logits), batch.sampled


def _kd_sampled(config: DistillConfig, batch: DistillBatch) -> Tensor:
    index, teacher, tail_index, tail = sampled_inputs(config, batch)
    s = batch.student_logits
    return config.options.weight * sampled_kd_loss(
        s, batch.labels, index, tail_index, on_device(teacher.full, s),
        on_device(tail.full_weight, s), on_device(tail.full_logp, s), config.temperature)


def _dkd_sampled(config: DistillConfig, batch: DistillBatch) -> Tensor:
    index, teacher, tail_index, tail = sampled_inputs(config, batch)
    s = batch.student_logits
    return sampled_dkd_loss(s, batch.labels, index, tail_index, on_device(teacher.binary, s),
                            on_device(teacher.nontarget, s), on_device(tail.nt_weight, s),
                            on_device(tail.nt_logq, s), config.alpha, config.beta,
                            config.temperature)


register_sampled("kd", _kd_sampled)
register_sampled("dkd", _dkd_sampled)
