"""The bucket distributions the logit losses compare, and the checks and conversions they share.

Cached mode compares the student with the teacher on the buckets the cache keeps,
``[target, k' speakers, tail]``: the student's tail is the logsumexp of its own logits over
every class that is neither the target nor one of the k' speakers. Online mode (a live
teacher) uses all C classes. With k' = C - 1 the two coincide (tested) up to the cache's
float16 rounding of the top-k logits: |error| <= 2^-11 |z| per logit (0.016 at |z| = 32), so
each teacher log-probability moves by at most 2^-10 max|z| / T. On a 40-class test case
the cached losses were 2e-6 to 3.4e-5 of the loss from the full-logit ones
(tests/stage2_student/losses/test_kd_logits.py, which checks the worst-case bound this gives).

All losses are computed in (at least) float32 with autocast disabled, whatever the
student's dtype, and use ``batchmean`` reduction and the ``T^2`` gradient scaling of
Hinton et al.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stage2_student.kernels import TeacherBuckets

__all__ = ["student_buckets", "teacher_buckets_from_logits"]


def wide(x: Tensor) -> Tensor:
    """x in float32, or float64 if it already is (never narrower than float32)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def no_autocast(x: Tensor) -> torch.autocast:
    """A context with autocast off on x's device type (the losses run in float32 or wider)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def kl(p: Tensor, log_q: Tensor) -> Tensor:
    """sum_rows KL(p || q) / B with ``0 * log 0 = 0`` and no gradient through p.

    p may contain exact zeros (an empty tail, an underflowed bucket); ``log_q`` is finite
    everywhere (see :func:`bucket_logits`), so the ``p * log_q`` term is 0, never NaN.
    """
    return (torch.xlogy(p, p) - p * log_q).sum() / p.shape[0]


def bucket_logits(logits: Tensor, labels: Tensor, topk_index: Tensor,
                  temperature: float) -> Tensor:
    """Unnormalised student log-masses [B, k'+2] of (target, k' speakers, tail) at T."""
    if logits.ndim != 2:
        raise ValueError(f"student logits must be [B, C], got shape {tuple(logits.shape)}")
    b, c = logits.shape
    if labels.shape != (b,):
        raise ValueError(f"labels must have shape ({b},), got {tuple(labels.shape)}")
    if topk_index.ndim != 2 or topk_index.shape[0] != b or topk_index.shape[1] > c - 1:
        raise ValueError(f"topk_index must be [B={b}, k'] with k' <= C-1={c - 1}, "
                         f"got {tuple(topk_index.shape)}")
    z = wide(logits) / temperature
    labels = labels.long().view(b, 1)
    index = topk_index.long()
    z_target = z.gather(1, labels)
    z_kept = z.gather(1, index)
    # Tail = logsumexp over the classes left after removing target and kept speakers.
    # Removed entries become the most negative finite float, not -inf: an empty tail then
    # gets a finite log-mass ~ -3.4e38 (exp -> 0) and no 0 * inf NaN in the backward pass.
    floor = torch.finfo(z.dtype).min
    rest = z.scatter(1, labels, floor).scatter(1, index, floor)
    z_tail = rest.logsumexp(dim=1, keepdim=True)
    return torch.cat([z_target, z_kept, z_tail], dim=1)


def student_buckets(logits: Tensor, labels: Tensor, topk_index: Tensor,
                    temperature: float) -> Tensor:
    """Student log-probabilities over [target, k' speakers, tail] at temperature T.

    Args:
        logits: [B, C] student KD logits (``scale * cos``, with or without the margin on
            the target, per ``DistillConfig.kd_logits``); any float dtype.
        labels: [B] target class per row.
        topk_index: [B, k'] the teacher's kept non-target classes (must exclude the label
            and be distinct within a row, as the cache guarantees).
        temperature: T > 0.

    Returns:
        [B, k'+2] log-probabilities (float32 or wider) whose exp sums to 1 per row; an empty
        tail (k' = C-1) has log-probability ~ -3.4e38 rather than -inf.

    >>> student_buckets(torch.zeros(1, 4), torch.tensor([0]), torch.tensor([[2]]), 1.0).exp()
    tensor([[0.2500, 0.2500, 0.5000]])
    """
    with no_autocast(logits):
        return F.log_softmax(bucket_logits(logits, labels, topk_index, temperature), dim=1)


def teacher_buckets_from_logits(teacher_logits: Tensor, labels: Tensor, k_prime: int,
                                temperature: float) -> tuple[Tensor, TeacherBuckets]:
    """What the cache and ``teacher_probs`` give, from a live teacher's full logits:
    (topk_index [B, k'] in descending order, TeacherBuckets of float tensors at T)."""
    with no_autocast(teacher_logits):
        z = wide(teacher_logits).detach() / temperature
        labels = labels.long().view(-1, 1).to(z.device)
        others = z.scatter(1, labels, -math.inf)
        kept, index = others.topk(k_prime, dim=1)
        tail = others.scatter(1, index, -math.inf).logsumexp(dim=1, keepdim=True)
        non = torch.cat([kept, tail], dim=1)  # an empty tail is -inf: probability 0
        log_full = F.log_softmax(torch.cat([z.gather(1, labels), non], dim=1), dim=1)
        binary = torch.cat([log_full[:, :1], log_full[:, 1:].logsumexp(dim=1, keepdim=True)],
                           dim=1).exp()
        return index, TeacherBuckets(binary=binary, nontarget=F.softmax(non, dim=1),
                                     full=log_full.exp())


def on_device(x: Tensor | np.ndarray, like: Tensor) -> Tensor:
    """x as a tensor on ``like``'s device (cached inputs arrive as numpy arrays)."""
    return torch.as_tensor(x, device=like.device)


def check_same(student_logits: Tensor, teacher_logits: Tensor) -> None:
    """Refuse full logits that are not both [B, C] with the same C."""
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must both be [B, C] with the same C "
                         "(student head and teacher must share the label map)")


def check_teacher(name: str, teacher: Tensor, shape: torch.Size) -> None:
    """Refuse a teacher-side tensor whose shape is not the student side's."""
    if tuple(teacher.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(teacher.shape)}, expected {tuple(shape)}: "
                         "teacher buckets and topk_index must use the same k'")
