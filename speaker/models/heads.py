"""Additive angular margin (AAM, "ArcFace") softmax head and wespeaker's margin ramp.

The head holds the class weight matrix -- the classifier that parameter counts exclude.
:meth:`AAMSoftmax.forward` gives the margin logits that CE trains on;
:meth:`AAMSoftmax.cosine_logits` gives ``scale * cos`` without margin, which is what the
teacher dump stores. Students are distilled on either (``--kd-logits``); the margin formula
itself lives in :mod:`speaker.models.margin`.

Example:
    >>> import torch
    >>> head = AAMSoftmax(embed_dim=8, num_classes=5)
    >>> emb, labels = torch.randn(3, 8), torch.tensor([0, 4, 2])
    >>> head(emb, labels).shape, head.cosine_logits(emb).shape
    (torch.Size([3, 5]), torch.Size([3, 5]))
    >>> sched = MarginScheduler(increase_start_epoch=2, fix_start_epoch=4, head=head)
    >>> sched.step(0.5), sched.step(3.0), head.margin
    (0.0, 0.2, 0.2)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speaker.models.margin import LogitMargin, target_cos


class AAMSoftmax(nn.Module):
    """wespeaker's ``ArcMarginProduct`` with ``easy_margin=False``.

    Target logit ``s * cos(theta + m)``; once ``theta + m`` would pass pi (``cos < th``)
    it falls back to ``s * (cos - (1 + cos(pi - m)))``, which keeps the target logit
    monotonic in theta and continuous at the switch (wespeaker's ``mmm`` variant). The
    formula is :func:`speaker.models.margin.target_cos`, shared with the Numba teacher kernel.
    Non-target logits are ``s * cos``.
    """

    margin_kind = "aam"

    def __init__(
        self, embed_dim: int, num_classes: int, scale: float = 32.0, margin: float = 0.2
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.margin = margin

    @property
    def margin(self) -> float:
        return self.logit_margin.margin

    @margin.setter
    def margin(self, value: float) -> None:
        # The margin's constants are derived here, so a scheduler only has to set `margin`.
        self.logit_margin = LogitMargin(self.margin_kind, float(value), self.scale)
        self._constants = self.logit_margin.constants()

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine between each embedding and each class centre, ``[B, num_classes]``."""
        return F.linear(F.normalize(emb), F.normalize(self.weight))

    def cosine_logits(self, emb: torch.Tensor) -> torch.Tensor:
        """``scale * cos`` with no margin (the logits a teacher exports)."""
        return self.scale * self.cosine(emb)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Margin logits for cross-entropy: margin on each row's ``labels`` entry only."""
        cosine = self.cosine(emb)
        index = labels.view(-1, 1).long()
        phi = target_cos(cosine.gather(1, index), *self._constants)
        return self.scale * cosine.scatter(1, index, phi)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, "
            f"scale={self.scale}, margin={self.margin}"
        )


def margin_at(
    epoch: float,
    *,
    initial_margin: float,
    final_margin: float,
    increase_start_epoch: float,
    fix_start_epoch: float,
    increase_type: str = "exp",
) -> float:
    """Margin after ``epoch`` epochs of training (fractional, 0.0 = first step).

    ``increase_start_epoch`` and ``fix_start_epoch`` are wespeaker's 1-based epoch numbers:
    the margin stays at ``initial_margin`` through epoch ``increase_start_epoch - 1``, rises
    during epochs ``increase_start_epoch .. fix_start_epoch - 1`` and is ``final_margin``
    from the start of epoch ``fix_start_epoch`` on. ``"exp"`` rises fast first
    (ratio ``1 - 1e-3 ** progress``), ``"linear"`` evenly.

    Example:
        >>> kw = dict(initial_margin=0.0, final_margin=0.2, increase_start_epoch=1,
        ...           fix_start_epoch=3, increase_type="linear")
        >>> margin_at(0.0, **kw), margin_at(1.0, **kw), margin_at(2.0, **kw)
        (0.0, 0.1, 0.2)
    """
    start, stop = increase_start_epoch - 1, fix_start_epoch - 1
    if epoch >= stop:
        return final_margin
    if epoch < start:
        return initial_margin
    progress = (epoch - start) / (stop - start)
    if increase_type == "exp":
        # wespeaker: 1 - exp(progress * log(final_val / (initial_val + 1e-6))), 1.0 -> 1e-3
        ratio = 1.0 - math.exp(progress * math.log(1e-3 / (1.0 + 1e-6)))
    elif increase_type == "linear":
        ratio = progress
    else:
        raise ValueError(f"increase_type must be 'exp' or 'linear', got {increase_type!r}")
    return initial_margin + (final_margin - initial_margin) * ratio


class MarginScheduler:
    """wespeaker's margin ramp as a stateless schedule; :meth:`step` is called every
    iteration with the fractional epoch (``epoch_index + batch_index / batches_per_epoch``)
    and sets ``head.margin`` when a head is attached. Being a pure function of the epoch,
    it needs no state in checkpoints: resuming just calls ``step`` again.

    Defaults are wespeaker's VoxCeleb settings (0 -> 0.2, rising over epochs 20-39, exp).
    """

    def __init__(
        self,
        *,
        initial_margin: float = 0.0,
        final_margin: float = 0.2,
        increase_start_epoch: float = 20,
        fix_start_epoch: float = 40,
        increase_type: str = "exp",
        head: AAMSoftmax | None = None,
    ) -> None:
        if fix_start_epoch < increase_start_epoch:
            raise ValueError("fix_start_epoch must not precede increase_start_epoch")
        if increase_type not in ("exp", "linear"):
            raise ValueError(f"increase_type must be 'exp' or 'linear', got {increase_type!r}")
        self.initial_margin = initial_margin
        self.final_margin = final_margin
        self.increase_start_epoch = increase_start_epoch
        self.fix_start_epoch = fix_start_epoch
        self.increase_type = increase_type
        self.head = head

    def margin(self, epoch: float) -> float:
        """The margin at fractional ``epoch`` (see :func:`margin_at`)."""
        return margin_at(
            epoch,
            initial_margin=self.initial_margin,
            final_margin=self.final_margin,
            increase_start_epoch=self.increase_start_epoch,
            fix_start_epoch=self.fix_start_epoch,
            increase_type=self.increase_type,
        )

    def step(self, epoch: float) -> float:
        """Set the attached head's margin for ``epoch`` and return it."""
        value = self.margin(epoch)
        if self.head is not None:
            self.head.margin = value
        return value
