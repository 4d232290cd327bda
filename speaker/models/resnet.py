"""ResNet speaker embedding (wespeaker's ``ResNet34``): 2-D residual network over the
(frequency, time) plane, TSTP pooling, one linear embedding layer.

Differences from image ResNet follow wespeaker: 3x3 stem with stride 1, no max-pooling,
widths ``base_width * (1, 2, 4, 8)``. Frequency and time are both downsampled by 8.
Paper width: base_width=32, embed 256 -> 6.63M.

Example:
    >>> import torch
    >>> from speaker.models import build
    >>> build("resnet34", base_width=8, embed_dim=64)(torch.randn(2, 100, 80)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speaker.models import register
from speaker.models.blocks import BasicBlock
from speaker.models.pooling import TSTP


class ResNet(nn.Module):
    def __init__(
        self,
        num_blocks: tuple[int, int, int, int],
        base_width: int = 32,
        feat_dim: int = 80,
        embed_dim: int = 256,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.conv1 = nn.Conv2d(1, base_width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        layers = []
        in_planes = base_width
        for i, blocks in enumerate(num_blocks):
            planes = base_width * 2**i
            strides = [1 if i == 0 else 2] + [1] * (blocks - 1)
            for stride in strides:
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        # Three stride-2 stages: frequency bins shrink 8x (ceil, since padding=1).
        freq_out = -(-feat_dim // 8)
        self.pool = TSTP(in_planes * freq_out)
        self.seg_1 = nn.Linear(self.pool.out_dim, embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.seg_1(self.pool(out))


@register("resnet34")
def resnet34(base_width: int = 32, embed_dim: int = 256, feat_dim: int = 80) -> ResNet:
    return ResNet((3, 4, 6, 3), base_width=base_width, feat_dim=feat_dim, embed_dim=embed_dim)


@register("resnet18")
def resnet18(base_width: int = 32, embed_dim: int = 256, feat_dim: int = 80) -> ResNet:
    return ResNet((2, 2, 2, 2), base_width=base_width, feat_dim=feat_dim, embed_dim=embed_dim)
