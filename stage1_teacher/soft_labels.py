"""Reduce full teacher logits to what the cache keeps per row.

For each row: the target logit, the top-k non-target classes sorted by logit and
their logits, and ``tail_lse[:, j] = logsumexp(z_i / T_j)`` over the non-targets
that are not in the top-k (``-inf`` when nothing is left). With these, the
teacher's target probability at any grid temperature, and its non-target distribution on
the k kept classes plus one tail bucket, are exact up to the float16 rounding the store
applies to the top-k logits (|error| <= 2^-11 |z|, see store/FORMAT.md); what merging the
rest into one bucket loses is measured in docs/topk_coverage.md.

Example::

    rows = summarize_logits(logits, labels, k=32, temperatures=(1.0, 2.0, 4.0))
    rows.topk_logit.shape   # (B, 32)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from store import RowBlock

FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class SoftLabels:
    target_logit: np.ndarray  # float32 [B]
    topk_index: np.ndarray  # int32 [B, k]
    topk_logit: np.ndarray  # float32 [B, k] (the store rounds to its topk dtype)
    tail_lse: np.ndarray  # float32 [B, len(temperatures)]

    def columns(self) -> dict[str, np.ndarray]:
        """The store's soft-label columns of a :class:`~store.RowBlock` (top-k logits
        rounded to float16, the store's dtype)."""
        return {"target_logit": self.target_logit, "topk_index": self.topk_index,
                "topk_logit": self.topk_logit.astype(np.float16), "tail_lse": self.tail_lse}


def summarize_logits(
    logits: torch.Tensor, labels: torch.Tensor, k: int, temperatures: Sequence[float]
) -> SoftLabels:
    """Top-k non-target summary of float32 ``logits`` [B, C] for integer ``labels`` [B]."""
    num_classes = logits.shape[1]
    if not 1 <= k <= num_classes - 1:
        raise ValueError(f"k={k} must be in [1, {num_classes - 1}] for {num_classes} classes")
    logits = logits.float()
    rows = torch.arange(logits.shape[0], device=logits.device)
    target = logits[rows, labels]
    others = logits.clone()
    others[rows, labels] = -torch.inf
    topk_logit, topk_index = others.topk(k, dim=1, sorted=True)
    others.scatter_(1, topk_index, -torch.inf)
    tail = torch.stack([torch.logsumexp(others / t, dim=1) for t in temperatures], dim=1)
    return SoftLabels(
        target_logit=target.cpu().numpy(),
        topk_index=topk_index.to(torch.int32).cpu().numpy(),
        topk_logit=topk_logit.cpu().numpy(),
        tail_lse=tail.cpu().numpy(),
    )


def rows_of_logits(logits: torch.Tensor, labels: torch.Tensor, k: int,
                   temperatures: Sequence[float]) -> RowBlock:
    """The cache rows of full ``logits`` with no crop behind them (row i is utterance i,
    start 0, seed 0): what tests and measurements compare with the full logits.

    >>> rows_of_logits(torch.eye(3) * 5, torch.tensor([0, 1, 2]), 1, (1.0,)).topk_index.shape
    (3, 1)
    """
    n = len(labels)
    return RowBlock(utt=np.arange(n, dtype=np.int32), start=np.zeros(n, np.int64),
                    seed=np.zeros(n, np.uint64), label=labels.numpy().astype(np.int32),
                    **summarize_logits(logits, labels, k, temperatures).columns())
