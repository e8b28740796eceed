"""HRNet backbone (Sun et al., CVPR 2019) as used by DEKR and LOGO-CAP.

The module tree and attribute names reproduce the official backbone (``conv1``, ``bn1``,
``conv2``, ``bn2``, ``layer1``, ``transition1..3``, ``stage2..4`` with ``branches`` and
``fuse_layers``), so ImageNet, DEKR and LOGO-CAP weights load key for key. The output is the
four stage-4 branches, branches 2..4 bilinearly upsampled (align_corners=False, as released) to
the 1/4 resolution and concatenated: 15 x width channels (480 for W32, 720 for W48).

Small variants for CPU tests come from the same class: narrower stem, fewer blocks and modules.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BN_MOMENTUM, BasicBlock, Bottleneck, official_init_

__all__ = ["HRNet", "HighResolutionModule"]


def _downsample(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM),
    )


def _make_blocks(block, in_ch: int, planes: int, num_blocks: int) -> nn.Sequential:
    layers = [block(in_ch, planes, 1, _downsample(in_ch, planes * block.expansion, 1))]
    layers += [block(planes * block.expansion, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BASIC blocks followed by an all-to-all multi-resolution fusion
    (``multiscale_output=False``: fused into the highest resolution only, as the last module of
    the top-down HRNet; its other fusions would be parameters without gradient)."""

    def __init__(self, channels: Sequence[int], num_blocks: int, multiscale_output: bool = True):
        super().__init__()
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(
            [_make_blocks(BasicBlock, c, c, num_blocks) for c in channels])
        self.fuse_layers = self._make_fuse_layers(list(channels), multiscale_output)
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _make_fuse_layers(ch: list[int], multiscale_output: bool = True) -> nn.ModuleList | None:
        if len(ch) == 1:
            return None
        fuse = nn.ModuleList()
        for i in range(len(ch) if multiscale_output else 1):
            row = nn.ModuleList()
            for j in range(len(ch)):
                if j > i:  # lower resolution -> 1x1 conv + nearest upsampling
                    row.append(nn.Sequential(
                        nn.Conv2d(ch[j], ch[i], 1, bias=False),
                        nn.BatchNorm2d(ch[i], momentum=BN_MOMENTUM),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(None)
                else:  # higher resolution -> (i - j) stride-2 3x3 convs, ReLU except the last
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out = ch[i] if last else ch[j]
                        layers = [nn.Conv2d(ch[j], out, 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(out, momentum=BN_MOMENTUM)]
                        if not last:
                            layers.append(nn.ReLU(inplace=True))
                        steps.append(nn.Sequential(*layers))
                    row.append(nn.Sequential(*steps))
            fuse.append(row)
        return fuse

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = None
            for j, x in enumerate(xs):
                term = x if j == i else row[j](x)
                y = term if y is None else y + term
            out.append(self.relu(y))
        return out


class HRNet(nn.Module):
    """HRNet-W{width}: returns the concatenated 1/4-resolution feature [B, 15 * width, H/4, W/4].

    Args:
        width: channels of the highest-resolution branch (32, 48; tiny variants use 8-16);
            branch i has width * 2**i channels.
        stem_channels: channels of the two stride-2 stem convs (64 in the official net).
        layer1_planes, layer1_blocks: Bottleneck width (output x4) and count of ``layer1``.
        num_blocks: BASIC blocks per branch in every module (official: 4).
        num_modules: modules in stages 2, 3, 4 (official: 1, 4, 3).
        multiscale_output: False = the last module of stage 4 outputs the stride-4 branch only
            (the top-down HRNet; ``forward`` then returns that branch, ``width`` channels).
    """

    def __init__(self, width: int = 32, stem_channels: int = 64, layer1_planes: int = 64,
                 layer1_blocks: int = 4, num_blocks: int = 4,
                 num_modules: Sequence[int] = (1, 4, 3), init: str = "official",
                 multiscale_output: bool = True):
        super().__init__()
        if init not in ("official", "kaiming"):
            raise ValueError(f"HRNet init must be 'official' or 'kaiming', got {init!r}")
        if len(num_modules) != 3:
            raise ValueError(f"num_modules must give 3 stage sizes, got {num_modules}")
        self.width = width
        self.conv1 = nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_blocks(Bottleneck, stem_channels, layer1_planes, layer1_blocks)

        prev = [layer1_planes * Bottleneck.expansion]
        for s, n_mod in enumerate(num_modules, start=2):
            ch = [width * 2 ** i for i in range(s)]
            setattr(self, f"transition{s - 1}", self._make_transition(prev, ch))
            setattr(self, f"stage{s}", nn.Sequential(*[
                HighResolutionModule(ch, num_blocks, multiscale_output or s < 4 or m < n_mod - 1)
                for m in range(n_mod)]))
            prev = ch
        self.out_channels = sum(prev) if multiscale_output else width
        if init == "official":
            self.init_weights()
        # "kaiming" keeps PyTorch's default init: for training from scratch (no ImageNet file),
        # where std-0.001 convs under Adam make every early step a ~100% relative weight change.

    @staticmethod
    def _make_transition(prev: list[int], cur: list[int]) -> nn.ModuleList:
        layers = nn.ModuleList()
        for i, c in enumerate(cur):
            if i < len(prev):  # existing branch: adapt channels only if they differ
                layers.append(None if prev[i] == c else nn.Sequential(
                    nn.Conv2d(prev[i], c, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(c, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)))
            else:  # new branch: stride-2 3x3 convs from the lowest existing resolution
                steps = []
                for k in range(i + 1 - len(prev)):
                    out = c if k == i - len(prev) else prev[-1]
                    steps.append(nn.Sequential(
                        nn.Conv2d(prev[-1], out, 3, 2, 1, bias=False),
                        nn.BatchNorm2d(out, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)))
                layers.append(nn.Sequential(*steps))
        return layers

    def init_weights(self) -> None:
        """Official backbone init: convs normal(std 0.001), BN weight 1 / bias 0 (meant to be
        overwritten by ImageNet weights)."""
        official_init_(self)

    def forward_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage-4 branches at strides 4, 8, 16, 32."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for s in (2, 3, 4):
            transition = getattr(self, f"transition{s - 1}")
            inputs = []
            for i, t in enumerate(transition):
                src = xs[i] if i < len(xs) else xs[-1]
                inputs.append(src if t is None else t(src))
            xs = getattr(self, f"stage{s}")(inputs)
        return xs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.forward_branches(x)
        h, w = xs[0].shape[-2:]
        ups = [F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False) for t in xs[1:]]
        return torch.cat([xs[0], *ups], dim=1)
