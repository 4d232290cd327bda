"""The margin a speaker head puts on the target logit: the one definition of the formula.

``"aam"`` is wespeaker's ``ArcMarginProduct`` with ``easy_margin=False``: the target cosine
``c = cos(theta)`` becomes ``cos(theta + m)`` while ``c > cos(pi - m)`` (i.e. theta + m < pi)
and ``c - (1 + cos(pi - m))`` beyond, a fallback that keeps the target logit monotonic in
theta and continuous at the switch (both sides are -1 there). ``"am"`` is ``AddMarginProduct``
(AM-softmax, the authors' teacher head): ``c - m``. ``"none"`` leaves ``c`` as it is.
Logits are ``scale * cos``; only the target entry of a row carries the margin.

:func:`target_cos` is written once and runs in three places: on torch tensors (the AAM head's
forward, with autograd; the live teacher's logits for online KD), on numpy arrays, and
compiled inside the Numba teacher kernel (``stage2_student.kernels.buckets``), where
``register_jitable`` inlines it and the two primitives below resolve to scalar code.
The kernel's compiled code is cached on disk keyed on ``buckets.py``: after editing the
formula here, touch ``stage2_student/kernels/buckets.py`` (tests compare the kernel with
the head).

Example:
    >>> import torch
    >>> m = LogitMargin("aam", 0.2, 32.0)
    >>> round(float(m.target_cos(torch.tensor(0.5))), 4)  # cos(acos(0.5) + 0.2)
    0.318
    >>> m.apply(torch.tensor([[16.0, 8.0]]), torch.tensor([0])).round(decimals=3)
    tensor([[10.1750,  8.0000]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numba import types
from numba.extending import overload, register_jitable

__all__ = ["MARGIN_KINDS", "MarginKind", "LogitMargin", "target_cos"]

MarginKind = Literal["aam", "am", "none"]
MARGIN_KINDS: tuple[str, ...] = ("aam", "am", "none")
_CODES = {"aam": 0, "am": 1, "none": 2}
_AAM, _AM = 0, 1

# sqrt(1 - c^2) is taken of at least this much: |c| can round a hair past 1, and at |c| = 1
# the derivative of sqrt would be infinite (the head's gradient then NaN). It changes the
# result only where 1 - c^2 < 1e-12, i.e. at |c| = 1 in float32, and there by at most
# sin(m) * 1e-6 (a target logit moves by < 1.6e-5 at s = 32, m < pi/2).
_SINE_FLOOR = 1e-12


def _select(cond, a, b):
    """Elementwise ``a if cond else b`` (torch.where / numpy.where; a branch in Numba)."""
    if isinstance(cond, torch.Tensor):
        return torch.where(cond, a, b)
    return np.where(cond, a, b)


def _sqrt_floored(x):
    """``sqrt(max(x, _SINE_FLOOR))`` elementwise."""
    if isinstance(x, torch.Tensor):
        return x.clamp(min=_SINE_FLOOR).sqrt()
    return np.sqrt(np.maximum(x, _SINE_FLOOR))


@overload(_select)
def _select_scalar(cond, a, b):
    if isinstance(cond, types.Boolean):
        return lambda cond, a, b: a if cond else b
    return None


@overload(_sqrt_floored)
def _sqrt_floored_scalar(x):
    if isinstance(x, types.Float):
        return lambda x: math.sqrt(max(x, _SINE_FLOOR))
    return None


@register_jitable
def target_cos(c, code, m, cos_m, sin_m, th, mmm):
    """The target's cosine with the margin: ``c`` a tensor, array or (in Numba) a float.

    ``code, m, cos_m, sin_m, th, mmm`` are :meth:`LogitMargin.constants`.
    """
    if code == _AAM:
        sine = _sqrt_floored(1.0 - c * c)
        return _select(c > th, c * cos_m - sine * sin_m, c - mmm)
    if code == _AM:
        return c - m
    return c


@dataclass(frozen=True)
class LogitMargin:
    """A head's margin: ``kind`` (aam/am/none), ``margin`` m and logit ``scale`` s.

    m is in radians for ``"aam"`` (``0 <= m < pi/2``) and in cosine units for ``"am"``.
    """

    kind: str
    margin: float
    scale: float

    def __post_init__(self) -> None:
        if self.kind not in MARGIN_KINDS:
            raise ValueError(f"margin kind {self.kind!r} is not one of {', '.join(MARGIN_KINDS)}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"the logit scale must be > 0, got {self.scale}")
        upper = math.pi / 2 if self.kind == "aam" else math.inf
        if not (math.isfinite(self.margin) and 0.0 <= self.margin < upper):
            raise ValueError(f"a {self.kind} margin must be in [0, {upper:.4g}), got {self.margin}")

    def constants(self) -> tuple[int, float, float, float, float, float]:
        """``(code, m, cos m, sin m, th = cos(pi - m), mmm = 1 + cos(pi - m))``."""
        m = float(self.margin)
        return (_CODES[self.kind], m, math.cos(m), math.sin(m), math.cos(math.pi - m),
                1.0 + math.cos(math.pi - m))

    def target_cos(self, c):
        """:func:`target_cos` with this margin (tensor or array ``c``)."""
        return target_cos(c, *self.constants())

    def apply(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``scale * cos`` logits [B, C] with the margin on each row's ``labels`` entry."""
        index = labels.view(-1, 1).long()
        target = logits.gather(1, index)
        return logits.scatter(1, index, self.scale * self.target_cos(target / self.scale))
