"""``module:factory`` teachers for the dump/verify tests, named
``tests.stage1_teacher.dump_teachers:...`` (importable from the repository root, where the
tests and their subprocesses run).

Every teacher is a fixed, seeded function of its input, so two loads give the same logits.
``NUM_CLASSES`` must match the training speakers of the toy corpus in ``tests/conftest.py``.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 8

#: Inputs the last :func:`wave` teacher was called with (the dump's batches, in order).
SEEN_WAVES: list[torch.Tensor] = []


class _Declared(nn.Module):
    """A teacher module declares its logit head (speaker.teachers.load refuses one that does not)."""

    scale = 32.0
    margin_kind = "aam"
    margin = 0.2


class _MeanLinear(_Declared):
    """fbank [B, T, 80] -> mean over time -> linear -> logits (and the mean as embedding)."""

    def __init__(self, num_classes: int = NUM_CLASSES, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(80, num_classes)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(num_classes, 80, generator=generator))
            self.proj.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=1))


def fbank_teacher() -> nn.Module:
    """A well-behaved fbank teacher over the toy corpus's classes."""
    return _MeanLinear()


def wrong_classes() -> nn.Module:
    """Gives one class fewer than the label map has."""
    return _MeanLinear(num_classes=NUM_CLASSES - 1)


class _NaNFrom(_Declared):
    """Logits of :class:`_MeanLinear`, but NaN in the first row from the ``call``-th call on
    (call 1 is the dump's probe of one crop)."""

    def __init__(self, call: int):
        super().__init__()
        self.inner = _MeanLinear()
        self.call = call
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = self.inner(x)
        if self.calls >= self.call:
            logits[0, 0] = torch.nan
        return logits


def nan_in_second_shard() -> nn.Module:
    """With 32-row shards and batches of 12 (12, 12, 8 per shard): the probe, three good
    batches (shard 0), then NaN in the first batch of shard 1."""
    return _NaNFrom(call=5)


class _Wave(_Declared):
    """Waveform teacher: frame energies of the raw crop -> linear -> (logits, embedding)."""

    input_kind = "wave"
    scale = 30.0
    margin = 0.3

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.proj = nn.Linear(16, NUM_CLASSES)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(NUM_CLASSES, 16, generator=generator) * 8)
            self.proj.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        SEEN_WAVES.append(x.detach().clone())
        if x.ndim != 2:
            raise ValueError(f"wave teacher expects [B, samples], got {list(x.shape)}")
        frames = x[:, : x.shape[1] - x.shape[1] % 16].reshape(x.shape[0], 16, -1)
        emb = torch.log(frames.pow(2).mean(dim=2) + 1e-6)
        return self.proj(emb), emb


def wave() -> nn.Module:
    SEEN_WAVES.clear()
    return _Wave()
