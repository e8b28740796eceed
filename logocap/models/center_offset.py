"""The center-offset baseline: HRNet + a heatmap head (K joints + 1 center) + an offset head.

Head attribute names are the official LOGO-CAP ones (notes 2.2), so the released checkpoint's
``transition_cls`` / ``final_layer_cls`` / ``transition_reg`` / ``final_layer_reg`` entries load
as they are. The forward pass returns raw tensors only; decoding lives in ``logocap.codecs``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..meta import COCO
from .blocks import conv_bn_relu
from .hrnet import HRNet

__all__ = ["CenterOffsetModel"]


class CenterOffsetModel(nn.Module):
    """forward(x [B,3,H,W]) -> {"heatmaps": [B,K+1,H/4,W/4] (center last), "offsets": [B,2K,H/4,W/4]}.

    Offsets: channel 2j = x, 2j+1 = y, value = location - joint, in output pixels.
    Heads keep PyTorch's default init (the official code only re-initialises the backbone).
    """

    stride = 4

    def __init__(self, num_keypoints: int = COCO.num_keypoints, width: int = 32,
                 stem_channels: int = 64, layer1_planes: int = 64, layer1_blocks: int = 4,
                 num_blocks: int = 4,
                 num_modules: Sequence[int] = (1, 4, 3), heatmap_channels: int | None = None,
                 offset_channels: int = 256, backbone_init: str = "official",
                 head_init: str = "official", offset_scale: float = 1.0):
        super().__init__()
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        self.num_keypoints = num_keypoints
        # Offsets are tens of output pixels; a fixed output multiplier lets a from-scratch head
        # reach them in far fewer Adam steps (lr-limited). 1.0 = the official parameterisation.
        self.offset_scale = float(offset_scale)
        self.backbone = HRNet(width, stem_channels, layer1_planes, layer1_blocks, num_blocks,
                              tuple(num_modules), init=backbone_init)
        feat = self.backbone.out_channels
        hm_ch = heatmap_channels or width  # official: 32 for W32, 48 for W48
        self.transition_cls = conv_bn_relu(feat, hm_ch)
        self.final_layer_cls = nn.Conv2d(hm_ch, num_keypoints + 1, 1)
        self.transition_reg = conv_bn_relu(feat, offset_channels)
        self.final_layer_reg = nn.Conv2d(offset_channels, 2 * num_keypoints, 1)
        if head_init == "small":
            # DEKR-style: head convs normal(std 0.001), so outputs start near 0 (the heatmap
            # loss starts at its all-zero value instead of far above it). From-scratch CPU
            # training learns several times faster this way; the official LOGO-CAP heads keep
            # PyTorch's default init ("official").
            for head in (self.transition_cls, self.final_layer_cls, self.transition_reg,
                         self.final_layer_reg):
                for m in head.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.normal_(m.weight, std=0.001)
                        if m.bias is not None:
                            nn.init.zeros_(m.bias)
        elif head_init != "official":
            raise ValueError(f"head_init must be 'official' or 'small', got {head_init!r}")

    def forward_heads(self, feat: torch.Tensor) -> dict:
        return {
            "heatmaps": self.final_layer_cls(self.transition_cls(feat)),
            "offsets": self.final_layer_reg(self.transition_reg(feat)) * self.offset_scale,
        }

    def forward(self, x: torch.Tensor) -> dict:
        return self.forward_heads(self.backbone(x))
