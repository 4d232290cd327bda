"""Embedding KD, the baseline that needs no logits: ``mean(1 - cos)`` between the student's
and the teacher's embeddings (cached or live alike)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from stage2_student.losses.buckets import no_autocast, on_device, wide
from stage2_student.losses.config import DistillBatch, DistillConfig
from stage2_student.losses.registry import register_loss

__all__ = ["embedding_kd_loss"]


def embedding_kd_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """Embedding-KD baseline: ``mean(1 - cos(student_emb, teacher_emb))``.

    >>> import torch
    >>> float(embedding_kd_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])))
    1.0
    """
    if student_emb.shape != teacher_emb.shape:
        raise ValueError(f"student embedding {tuple(student_emb.shape)} and teacher embedding "
                         f"{tuple(teacher_emb.shape)} differ; embedding KD needs equal sizes "
                         "(choose a student embed_dim equal to the cache's embedding size)")
    with no_autocast(student_emb):
        cos = F.cosine_similarity(wide(student_emb), wide(teacher_emb).to(student_emb.device),
                                  dim=1)
        return (1.0 - cos).mean()


def _emb(config: DistillConfig, batch: DistillBatch) -> Tensor:
    if batch.student_emb is None or batch.teacher_emb is None:
        raise ValueError("loss 'emb' needs student_emb and teacher_emb (a cache with embeddings)")
    return embedding_kd_loss(batch.student_emb, on_device(batch.teacher_emb, batch.student_emb))


register_loss("emb", _emb, _emb, uses_teacher_buckets=False)
