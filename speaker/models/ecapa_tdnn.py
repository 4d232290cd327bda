"""ECAPA-TDNN (Desplanques et al. 2020), as wespeaker's ``ECAPA_TDNN_GLOB_c512/c1024``.

Conv stem, three SE-Res2Net blocks (dilations 2, 3, 4; Res2 scale 8), multi-layer feature
aggregation (1536 channels), attentive statistics pooling with global context, BN and a
linear embedding. Paper widths: channels=1024 -> 14.65M, channels=512 -> 6.19M (embed 192).

Example:
    >>> import torch
    >>> from speaker.models import build
    >>> build("ecapa", channels=128, embed_dim=64)(torch.randn(2, 100, 80)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speaker.models import register
from speaker.models.pooling import ASTP


class Conv1dReluBn(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 1,
        padding: int = 0,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, padding=padding, dilation=dilation)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv1dReluBn(nn.Module):
    """Res2Net: split channels into ``scale`` groups; group i sees group i-1's output, which
    widens the receptive field without adding parameters."""

    def __init__(self, channels: int, kernel: int, dilation: int, scale: int = 8) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"ECAPA channels ({channels}) must be divisible by {scale}")
        self.width = channels // scale
        padding = (kernel - 1) // 2 * dilation
        self.convs = nn.ModuleList(
            Conv1dReluBn(self.width, self.width, kernel, padding, dilation)
            for _ in range(scale - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = torch.split(x, self.width, dim=1)
        out = []
        sp = splits[0]
        for i, conv in enumerate(self.convs):
            sp = conv(sp if i == 0 else sp + splits[i])
            out.append(sp)
        out.append(splits[-1])  # the last group passes through unchanged
        return torch.cat(out, dim=1)


class SEConnect(nn.Module):
    """Squeeze-excitation: rescale channels by a gate from the utterance mean."""

    def __init__(self, channels: int, bottleneck: int = 128) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * gate.unsqueeze(2)


class SERes2Block(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Conv1dReluBn(channels, channels),
            Res2Conv1dReluBn(channels, 3, dilation),
            Conv1dReluBn(channels, channels),
            SEConnect(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN over ``[B, T, feat_dim]`` features (fbank, or SSL features for WavLM).

    ``mfa_channels`` is the width of the multi-layer aggregation that is pooled: wespeaker
    (and the ECAPA paper) fix it at 1536 for both C=512 and C=1024; narrower demo models
    default to ``3 * channels`` so it does not dominate them.
    """

    def __init__(
        self,
        channels: int = 1024,
        feat_dim: int = 80,
        embed_dim: int = 192,
        global_context_att: bool = True,
        mfa_channels: int | None = None,
        emb_bn: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.layer1 = Conv1dReluBn(feat_dim, channels, kernel=5, padding=2)
        self.layer2 = SERes2Block(channels, dilation=2)
        self.layer3 = SERes2Block(channels, dilation=3)
        self.layer4 = SERes2Block(channels, dilation=4)
        mfa_channels = mfa_channels or 3 * min(channels, 512)
        self.conv = nn.Conv1d(3 * channels, mfa_channels, kernel_size=1)
        self.pool = ASTP(mfa_channels, global_context_att=global_context_att)
        self.bn = nn.BatchNorm1d(self.pool.out_dim)
        self.linear = nn.Linear(self.pool.out_dim, embed_dim)
        # A BN on the embedding trains better on SSL features (wespeaker's emb_bn).
        self.bn2 = nn.BatchNorm1d(embed_dim) if emb_bn else nn.Identity()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        out1 = self.layer1(feats.transpose(1, 2))
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        # Multi-layer feature aggregation: the pooled map sees all three block outputs.
        out = F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))
        return self.bn2(self.linear(self.bn(self.pool(out))))


@register("ecapa")
def ecapa(
    channels: int = 1024,
    embed_dim: int = 192,
    global_context_att: bool = True,
    mfa_channels: int | None = None,
    feat_dim: int = 80,
) -> ECAPATDNN:
    """ECAPA-TDNN; ``channels`` must be a multiple of 8 (Res2Net scale)."""
    return ECAPATDNN(channels, feat_dim, embed_dim, global_context_att, mfa_channels)
