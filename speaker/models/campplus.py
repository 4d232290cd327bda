"""CAM++ (Wang et al. 2023, arXiv 2303.00332), as wespeaker's ``CAMPPlus``.

A small 2-D residual front end (FCM) compresses frequency 8x, then a densely connected
TDNN (three blocks of 12/24/16 layers) whose layers are gated by context-aware masks
computed from utterance- and segment-level means. TSTP pooling and a dense embedding.
Paper width: growth_rate=32, init_channels=128, embed 192 -> 7.18M.

Example:
    >>> import torch
    >>> from speaker.models import build
    >>> m = build("campp", embed_dim=64, growth_rate=8, init_channels=32, fcm_channels=8)
    >>> m(torch.randn(2, 100, 80)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speaker.models import register
from speaker.models.blocks import BasicBlock
from speaker.models.pooling import TSTP


def bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm1d(channels), nn.ReLU(inplace=True))


class FCM(nn.Module):
    """Front-end convolution module: [B, F, T] -> [B, channels * F/8, T]."""

    def __init__(self, channels: int = 32, feat_dim: int = 80) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(
            BasicBlock(channels, channels, 2, freq_only=True),
            BasicBlock(channels, channels, freq_only=True),
        )
        self.layer2 = nn.Sequential(
            BasicBlock(channels, channels, 2, freq_only=True),
            BasicBlock(channels, channels, freq_only=True),
        )
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.flatten(1, 2)


class CAMLayer(nn.Module):
    """Dilated conv whose output is gated by a mask from utterance + 100-frame segment means."""

    def __init__(self, bn_channels: int, out_channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        padding = (kernel - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(
            bn_channels, out_channels, kernel, padding=padding, dilation=dilation, bias=False
        )
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // 2, 1)
        self.linear2 = nn.Conv1d(bn_channels // 2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_local(x)
        context = x.mean(-1, keepdim=True) + self.seg_pooling(x)
        mask = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return y * mask

    @staticmethod
    def seg_pooling(x: torch.Tensor, seg_len: int = 100) -> torch.Tensor:
        seg = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)
        # Broadcast each segment mean back over its frames.
        return seg.repeat_interleave(seg_len, dim=-1)[..., : x.shape[-1]]


class CAMDenseLayer(nn.Module):
    def __init__(
        self, in_channels: int, growth: int, bn_channels: int, kernel: int, dilation: int
    ) -> None:
        super().__init__()
        self.nonlinear1 = bn_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = bn_relu(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, growth, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseBlock(nn.ModuleList):
    """Dense connectivity: every layer sees the concatenation of all earlier outputs."""

    def __init__(
        self, num_layers: int, in_channels: int, growth: int, bn_channels: int, dilation: int
    ) -> None:
        super().__init__(
            CAMDenseLayer(in_channels + i * growth, growth, bn_channels, 3, dilation)
            for i in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class CAMPPlus(nn.Module):
    def __init__(
        self,
        feat_dim: int = 80,
        embed_dim: int = 192,
        growth_rate: int = 32,
        bn_size: int = 4,
        init_channels: int = 128,
        fcm_channels: int = 32,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.head = FCM(fcm_channels, feat_dim)
        # Stride-2 TDNN halves the frame rate before the dense blocks (the "fast" in CAM++).
        layers: list[nn.Module] = [
            nn.Conv1d(self.head.out_channels, init_channels, 5, stride=2, padding=2, bias=False),
            bn_relu(init_channels),
        ]
        channels = init_channels
        for num_layers, dilation in ((12, 1), (24, 2), (16, 2)):
            layers.append(
                CAMDenseBlock(num_layers, channels, growth_rate, bn_size * growth_rate, dilation)
            )
            channels += num_layers * growth_rate
            # Transition: halve the channels that dense connectivity accumulated.
            layers += [bn_relu(channels), nn.Conv1d(channels, channels // 2, 1, bias=False)]
            channels //= 2
        layers.append(bn_relu(channels))
        self.xvector = nn.Sequential(*layers)
        self.pool = TSTP(channels)
        self.dense = nn.Conv1d(self.pool.out_dim, embed_dim, 1, bias=False)
        self.dense_bn = nn.BatchNorm1d(embed_dim, affine=False)
        for m in self.modules():
            if isinstance(m, nn.Conv1d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.xvector(self.head(feats.transpose(1, 2))))
        return self.dense_bn(self.dense(out.unsqueeze(-1)).squeeze(-1))


@register("campp")
def campp(
    embed_dim: int = 192,
    growth_rate: int = 32,
    bn_size: int = 4,
    init_channels: int = 128,
    fcm_channels: int = 32,
    feat_dim: int = 80,
) -> CAMPPlus:
    """CAM++; ``growth_rate``, ``init_channels`` and ``fcm_channels`` scale its width."""
    return CAMPPlus(feat_dim, embed_dim, growth_rate, bn_size, init_channels, fcm_channels)
