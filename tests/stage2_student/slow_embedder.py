"""A ``module:factory`` model for tests/stage2_student/test_embed.py's kill-and-resume test:
a fixed random projection of the time-mean fbank, made slow (``SLOW_EMBEDDER_SECONDS`` per forward) so that
a subprocess running it is still embedding when the test kills it."""

from __future__ import annotations

import os
import time

import torch
from torch import nn


class SlowEmbedder(nn.Module):
    scale, margin_kind, margin = 30.0, "aam", 0.2  # the head a teacher spec must declare

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(80, 8)
        self.cls = nn.Linear(8, 3)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(float(os.environ.get("SLOW_EMBEDDER_SECONDS", "0")))
        emb = self.proj(feats.mean(dim=1))
        return self.cls(emb), emb


def build() -> SlowEmbedder:
    return SlowEmbedder()
