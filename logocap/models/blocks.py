"""Building blocks shared by the networks: HRNet residual blocks and Attentive Normalization.

Attribute names follow the official HRNet / LOGO-CAP code so that released checkpoints load
without a rename table (e.g. ``conv1``/``bn1``/``downsample``, AN's ``weight_``/``bias_``).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "AttentiveNorm2d", "conv_bn_relu"]

BN_MOMENTUM = 0.1


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int = 1) -> nn.Sequential:
    """Conv (no bias) + BN + ReLU as a Sequential: the official heads' indices 0, 1, 2."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (the HRNet BASIC block)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels) residual block, used in HRNet's ``layer1``."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class _AttentionGates(nn.Module):
    """Per-sample gates lambda in [0, 1]^K of Attentive Normalization.

    The statistic is the per-channel "signal-to-noise" mean / sqrt(var + 1e-3) over H, W (unbiased
    variance), not plain average pooling; then a bias-free 1x1 conv C -> K and a hard sigmoid
    relu6(x + 3) / 6. The gates are independent (no softmax). Held in ``attention`` so the conv's
    key is ``attention.0.weight`` as in the released checkpoints.
    """

    def __init__(self, channels: int, num_affine: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.attention = nn.Sequential(
            nn.Conv2d(channels, num_affine, kernel_size=1, bias=False),
            nn.Hardsigmoid(),  # = relu6(x + 3) / 6
        )
        nn.init.kaiming_normal_(self.attention[0].weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2] * x.shape[3]
        # unbiased variance as torch.var_mean's default; a 1x1 map has no spread, use 0 then
        var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=1 if n > 1 else 0)
        stat = mean / torch.sqrt(var + self.eps)
        return self.attention(stat).flatten(1)  # [B, K]


class AttentiveNorm2d(nn.BatchNorm2d):
    """Attentive Normalization (Li et al., used in LOGO-CAP's message passing, notes 2.3).

    out = (lambda @ weight_) * BN_noaffine(x) + (lambda @ bias_), with lambda [B, K] per-sample
    gates computed from the input ``x``. Subclassing ``BatchNorm2d(affine=False)`` keeps the
    running statistics at the module's top level (``running_mean``, ``running_var``,
    ``num_batches_tracked``), exactly the official state_dict layout.
    """

    def __init__(self, channels: int, num_affine: int = 20, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(channels, eps=eps, momentum=momentum, affine=False)
        self.num_affine = num_affine
        self.weight_ = nn.Parameter(torch.empty(num_affine, channels))
        self.bias_ = nn.Parameter(torch.empty(num_affine, channels))
        nn.init.normal_(self.weight_, 1.0, 0.1)
        nn.init.normal_(self.bias_, 0.0, 0.1)
        self.attn_weights = _AttentionGates(channels, num_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = super().forward(x)
        gates = self.attn_weights(x)  # [B, K]
        gamma = (gates @ self.weight_)[:, :, None, None]  # [B, C, 1, 1]
        beta = (gates @ self.bias_)[:, :, None, None]
        return gamma * normed + beta


def official_init_(*modules: nn.Module) -> None:
    """The released init of HRNet and its heads: every conv normal(std 0.001) with zero bias,
    BatchNorm weight 1 / bias 0 (backbones are then overwritten by ImageNet weights)."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
