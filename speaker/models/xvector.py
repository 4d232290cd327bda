"""Kaldi-style x-vector TDNN (Snyder et al. 2018), as wespeaker's ``XVEC``.

Five frame-level TDNN layers (contexts 5, 3@2, 3@3, 1, 1; no padding, so 14 frames are
lost), TSTP pooling, then two segment layers; the embedding is the second one
(``embed_b`` in wespeaker). Paper width: channels=512, stats 1500, embed 512 -> 4.61M.

Example:
    >>> import torch
    >>> from speaker.models import build
    >>> build("xvector", channels=128, embed_dim=128)(torch.randn(4, 100, 80)).shape
    torch.Size([4, 128])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speaker.models import register
from speaker.models.pooling import TSTP


class TdnnLayer(nn.Module):
    """Dilated 1-D convolution -> ReLU -> BatchNorm (affine-free, as Kaldi)."""

    def __init__(self, in_dim: int, out_dim: int, context: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, context, dilation=dilation)
        self.bn = nn.BatchNorm1d(out_dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class XVector(nn.Module):
    def __init__(
        self, feat_dim: int = 80, channels: int = 512, stats_dim: int = 1500, embed_dim: int = 512
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.frames = nn.Sequential(
            TdnnLayer(feat_dim, channels, 5),
            TdnnLayer(channels, channels, 3, dilation=2),
            TdnnLayer(channels, channels, 3, dilation=3),
            TdnnLayer(channels, channels, 1),
            TdnnLayer(channels, stats_dim, 1),
        )
        self.pool = TSTP(stats_dim)
        self.seg_1 = nn.Linear(self.pool.out_dim, embed_dim)
        self.seg_bn_1 = nn.BatchNorm1d(embed_dim, affine=False)
        self.seg_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.frames(feats.transpose(1, 2)))
        return self.seg_2(self.seg_bn_1(F.relu(self.seg_1(out))))


@register("xvector")
def xvector(
    channels: int = 512, embed_dim: int = 512, stats_dim: int | None = None, feat_dim: int = 80
) -> XVector:
    """x-vector; ``stats_dim`` defaults to Kaldi's 1500 scaled by ``channels / 512`` so that
    narrow demo widths keep the paper's proportions."""
    if stats_dim is None:
        stats_dim = channels * 1500 // 512
    return XVector(feat_dim=feat_dim, channels=channels, stats_dim=stats_dim, embed_dim=embed_dim)
