"""Which distillation term a run adds to CE (``DistillConfig``), what one batch gives it
(``DistillBatch``), and the warm-up wrapper that applies a registered loss (``distill_loss``).

Which logits both sides use is ``DistillConfig.kd_logits``: ``"margin"`` (the paper's code,
the default) gives the student's margin logits (its head's output for CE, with the margin
ramped as training goes) and the teacher's ``scale * cos`` with its own head's margin on
the target (the kernel applies it to the cached target; online, ``LogitMargin.apply``);
``"cosine"`` gives ``scale * cos`` without margin on both sides. NCKD does not depend on
the choice (the target is not among the non-targets); TCKD and KD do.

How the non-target classes outside the cache's top-k enter is ``DistillConfig.tail``:
``"exact-bucket"`` (the default) as one bucket with their exact mass; ``"sampled"`` each
through the cache's sampled tail, an unbiased estimate of the full-logit loss (KD and DKD's
NCKD only; see ``losses.sampled`` and docs/sampled_tail.md). Online mode always uses all C
classes, the sampled estimate's expectation.

The CE term with the AAM margin is the trainer's head's job; the losses return only the
distillation part.

Example (cached DKD, the paper's setting)::

    cfg = DistillConfig(loss="dkd", alpha=1.0, beta=2.0, temperature=1.0, warmup_epochs=5)
    t = reader.temperature_index(cfg.temperature)
    margin = LogitMargin(teacher.margin_kind, teacher.margin, teacher.scale)  # reader.spec.teacher
    buckets = teacher_probs(block.target_logit, block.topk_logit, block.tail_lse[:, t], 32, 1.0,
                            margin=margin)
    batch = DistillBatch(student_logits=head(emb, labels), labels=labels,
                         topk_index=block.topk_index, teacher=buckets)
    loss = ce + distill_loss(cfg, batch, epoch=2.5)   # KD weight 0.5 during warm-up
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from stage2_student.kernels import SampledTail, TeacherBuckets
from stage2_student.losses.buckets import on_device
from stage2_student.losses.registry import (
    LossOptions,
    loss_names,
    register_loss,
    registered_loss,
)

__all__ = ["KdLogits", "TailMode", "DistillConfig", "DistillBatch", "distill_loss",
           "cached_inputs"]

KdLogits = Literal["cosine", "margin"]
TailMode = Literal["exact-bucket", "sampled"]


@dataclass(frozen=True)
class DistillConfig:
    """Which distillation term to add to CE, and its hyper-parameters.

    loss: a registered loss (``loss_names()``); "ce" is no distillation, "dkd" is
        alpha*TCKD + beta*NCKD.
    topk: k' speakers kept from the cache (None = all k the cache holds).
    warmup_epochs: the KD term's weight ramps linearly 0 -> 1 over this many epochs.
    kd_logits: ``"margin"`` (both sides with their head's margin on the target, as the
        paper's code) or ``"cosine"`` (``scale * cos`` on both sides); see the module doc.
    tail: ``"exact-bucket"`` or ``"sampled"`` (the cache's sampled tail, for losses
        registered with a sampled version); see the module doc.

    >>> DistillConfig(loss="dkd", warmup_epochs=4).weight(1.0)
    0.25
    """

    loss: str = "dkd"
    alpha: float = 1.0
    beta: float = 2.0
    temperature: float = 1.0
    topk: int | None = None
    warmup_epochs: float = 0.0
    kd_logits: KdLogits = "margin"
    options: LossOptions | None = None  # the loss's own options (see loss_options)
    tail: TailMode = "exact-bucket"

    def __post_init__(self) -> None:
        registered_loss(self.loss)  # refuses an unknown name
        object.__setattr__(self, "options", _resolve_options(self.loss, self.options))
        if self.kd_logits not in get_args(KdLogits):
            raise ValueError(f"kd_logits must be one of {', '.join(get_args(KdLogits))}, "
                             f"got {self.kd_logits!r}")
        if self.tail not in get_args(TailMode):
            raise ValueError(f"tail must be one of {', '.join(get_args(TailMode))}, "
                             f"got {self.tail!r}")
        if self.tail == "sampled" and registered_loss(self.loss).sampled is None:
            sampled = [name for name in loss_names() if registered_loss(name).sampled]
            raise ValueError(f"loss {self.loss!r} has no sampled-tail version (tail "
                             f"'sampled' applies to {', '.join(sampled)})")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got {self.alpha}, {self.beta}")
        if self.topk is not None and self.topk < 0:
            raise ValueError(f"topk must be >= 0 or None, got {self.topk}")
        if not self.warmup_epochs >= 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")

    def weight(self, epoch: float) -> float:
        """Weight of the KD term at a (fractional) epoch: ``min(epoch / warmup, 1)``."""
        if self.loss == "ce":
            return 0.0
        if self.warmup_epochs == 0:
            return 1.0
        return min(max(epoch, 0.0) / self.warmup_epochs, 1.0)


def _resolve_options(loss: str, options: LossOptions | Mapping | None) -> LossOptions | None:
    """The options DistillConfig keeps: the class's defaults when none are given, a mapping
    (config.json read back) turned into the loss's class, anything else refused."""
    cls = registered_loss(loss).options
    if cls is None:
        if options is not None:
            raise ValueError(f"loss {loss!r} has no options of its own, got {options!r}")
        return None
    if options is None:
        return cls()
    if isinstance(options, Mapping):
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown {loss} option(s) {unknown}")
        return cls(**options)
    if type(options) is not cls:
        raise ValueError(f"loss {loss!r} takes {cls.__name__}, got {type(options).__name__}")
    return options


@dataclass
class DistillBatch:
    """What a distillation term may need for one batch.

    ``student_logits`` and the teacher's side follow the config's ``kd_logits``. Cached mode
    sets ``topk_index`` (the cache's [B, k] or [B, k'], any int dtype, numpy or torch) and
    ``teacher`` (``kernels.TeacherBuckets`` at the config's temperature and k'); online mode
    sets ``teacher_logits`` [B, C]. ``emb`` needs both embeddings. With
    ``DistillConfig.tail = "sampled"`` cached mode also sets ``tail_index`` ([B, M] drawn
    classes) and ``sampled`` (``kernels.sampled_tail_probs`` of them), with ``teacher`` at
    k' = k.
    Numpy inputs are moved to the student's device.
    """

    student_logits: Tensor
    labels: Tensor
    topk_index: Tensor | np.ndarray | None = None
    teacher: TeacherBuckets | None = None  # its fields may be numpy arrays or tensors
    teacher_logits: Tensor | None = None
    student_emb: Tensor | None = None
    teacher_emb: Tensor | np.ndarray | None = None
    tail_index: Tensor | np.ndarray | None = None
    sampled: SampledTail | None = None  # its fields may be numpy arrays or tensors
    epoch: float = 0.0  # fractional epoch of this step, set by distill_loss (TRKD's tau)
    stats: dict[str, float] = field(default_factory=dict)  # per-batch numbers a loss reports


def distill_loss(config: DistillConfig, batch: DistillBatch, epoch: float) -> Tensor:
    """The weighted distillation term ``config.weight(epoch) * loss`` for one batch.

    Online mode when ``batch.teacher_logits`` is set, cached mode otherwise (the sampled
    tail's version under ``config.tail = "sampled"``). Add it to the CE (AAM) loss; for
    ``loss="ce"`` it is a zero scalar.
    """
    loss = registered_loss(config.loss)
    batch.epoch = epoch
    if batch.teacher_logits is not None:
        term = loss.online
    else:
        term = loss.sampled if config.tail == "sampled" else loss.cached
    return config.weight(epoch) * term(config, batch)


def cached_inputs(config: DistillConfig, batch: DistillBatch) -> tuple[Tensor, TeacherBuckets]:
    """(topk_index[:, :k'], teacher) with k' taken from the teacher buckets."""
    if batch.topk_index is None or batch.teacher is None:
        raise ValueError(f"loss {config.loss!r} from the cache needs topk_index and teacher "
                         "buckets (or teacher_logits for online mode)")
    k_prime = batch.teacher.full.shape[1] - 2
    if config.topk is not None and config.topk != k_prime:
        raise ValueError(f"teacher buckets have k'={k_prime} but the config asks topk={config.topk}")
    if batch.topk_index.shape[1] < k_prime:
        raise ValueError(f"topk_index has {batch.topk_index.shape[1]} columns, fewer than "
                         f"k'={k_prime}")
    return on_device(batch.topk_index[:, :k_prime], batch.student_logits), batch.teacher


def _ce_only(config: DistillConfig, batch: DistillBatch) -> Tensor:
    """No distillation: a zero scalar."""
    return batch.student_logits.new_zeros((), dtype=torch.float32)


register_loss("ce", _ce_only, _ce_only, uses_teacher_buckets=False)
