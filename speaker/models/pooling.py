"""Temporal pooling: frame-level features ``[B, C, T]`` -> utterance statistics ``[B, 2C]``.

Follows wespeaker's ``pooling_layers`` (TSTP for x-vector/ResNet/CAM++, attentive
statistics pooling for ECAPA) so that parameter counts match the published models.

Example:
    >>> import torch
    >>> TSTP(in_dim=16)(torch.randn(2, 16, 50)).shape
    torch.Size([2, 32])
    >>> ASTP(in_dim=16, global_context_att=True)(torch.randn(2, 16, 50)).shape
    torch.Size([2, 32])
"""

from __future__ import annotations

import torch
from torch import nn


class TSTP(nn.Module):
    """Temporal statistics pooling: concatenated mean and standard deviation over time.

    4-D inputs ``[B, C, F, T]`` (ResNet) are flattened to ``[B, C*F, T]`` first. ``eps``
    floors the variance (wespeaker's pretrained models use 1e-7).
    """

    def __init__(self, in_dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.out_dim = 2 * in_dim
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1, -2)
        mean = x.mean(dim=-1)
        # keeps sqrt differentiable on constant (e.g. dead ReLU) channels
        std = torch.sqrt(torch.var(x, dim=-1) + self.eps)
        return torch.cat((mean, std), dim=1)


class ASTP(nn.Module):
    """Attentive statistics pooling (ECAPA-TDNN): per-channel attention over frames,
    optionally conditioned on the utterance's global mean and std (``global_context_att``).
    ``eps`` floors both variances (wespeaker's pretrained models use 1e-7).
    """

    def __init__(self, in_dim: int, bottleneck_dim: int = 128, global_context_att: bool = False,
                 eps: float = 1e-10):
        super().__init__()
        self.global_context_att = global_context_att
        self.eps = eps
        # 1x1 convolutions instead of Linear so the [B, C, T] input needs no transpose.
        att_in = in_dim * 3 if global_context_att else in_dim
        self.linear1 = nn.Conv1d(att_in, bottleneck_dim, kernel_size=1)
        self.linear2 = nn.Conv1d(bottleneck_dim, in_dim, kernel_size=1)
        self.out_dim = 2 * in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1, -2)
        if self.global_context_att:
            mean = x.mean(dim=-1, keepdim=True).expand_as(x)
            std = torch.sqrt(torch.var(x, dim=-1, keepdim=True) + self.eps).expand_as(x)
            x_in = torch.cat((x, mean, std), dim=1)
        else:
            x_in = x
        # tanh, not ReLU: wespeaker reports ReLU here converges poorly.
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x_in))), dim=2)
        mean = torch.sum(alpha * x, dim=2)
        var = torch.sum(alpha * x**2, dim=2) - mean**2
        std = torch.sqrt(var.clamp(min=self.eps))
        return torch.cat((mean, std), dim=1)
