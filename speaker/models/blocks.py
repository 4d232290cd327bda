"""Building blocks more than one architecture shares.

Example:
    >>> import torch
    >>> BasicBlock(8, 16, stride=2)(torch.randn(1, 8, 20, 30)).shape
    torch.Size([1, 16, 10, 15])
    >>> BasicBlock(8, 16, stride=2, freq_only=True)(torch.randn(1, 8, 20, 30)).shape
    torch.Size([1, 16, 10, 30])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """The 2-D residual block of ResNet18/34 (two 3x3 convolutions, projection shortcut when
    the shape changes) over ``[B, C, freq, time]``; ``freq_only`` strides frequency alone, as
    CAM++'s front-end does, so time keeps its resolution."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 freq_only: bool = False) -> None:
        super().__init__()
        conv_stride = (stride, 1) if freq_only else stride
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=conv_stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))
