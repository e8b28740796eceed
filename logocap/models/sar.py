"""Top-down SAR (notes §4): an HRNet trunk and three parallel 1x1 convs on its stride-4 feature.

- ``selector``  (K channels): logits s_t, one per cell and keypoint type;
- ``regressor`` (2K): offsets o_t, K_t = p_t - o_t (channel 2j = x, 2j+1 = y);
- ``aux_heatmap`` (K, optional, ``with_heatmap`` as in all released configs): trained with the
  quality focal loss, not used at test time.

The head reads the highest-resolution HRNet branch after the last fusion (width channels), as the
released HRNet-W48 config does (no deconvolutions); the trunk's last module fuses into that branch
only (HRNet ``multiscale_output=False``, as the top-down HRNet). Released initialisation: every
head conv normal(std 1e-3); selector and heatmap biases -log((1 - 0.01) / 0.01) ~ -4.595 (prior
0.01), regressor bias 0, so K_t ~ p_t at the start.

The regressor works in the released normalised units (x / W_map, y / H_map); ``forward``
multiplies by the map size so that ``offsets`` come out in output px, the library convention
(value = location - joint). That is a fixed rescaling of the output, so the losses, gradients and
initial values are those of the release.

Input: a person crop of ``input_hw`` (256x192 for W32, 384x288 for W48, 128x96 for the tiny CPU
variant), aspect 3:4; see ``logocap.codecs.topdown``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..meta import COCO
from .hrnet import HRNet
from .registry import register_model

__all__ = ["SarTopDownModel", "is_topdown", "SELECTOR_PRIOR"]

SELECTOR_PRIOR = 0.01  # bias init -log((1 - p) / p) of the selector and heatmap logits


class SarTopDownModel(nn.Module):
    """forward(x [B, 3, H, W]) -> {"selector": [B, K, H/4, W/4] logits, "offsets": [B, 2K, H/4,
    W/4] output px, "aux_heatmaps": [B, K, H/4, W/4] logits or None}.

    Args (backbone ones as :class:`~logocap.models.hrnet.HRNet`):
        with_heatmap: build the auxiliary heatmap conv (True in every released config).
        input_hw: the crop size (height, width) this network is meant for (metadata for the
            predictor and the dataset; the convolutions take any multiple of 32).
    """

    stride = 4
    topdown = True

    def __init__(self, num_keypoints: int = COCO.num_keypoints, width: int = 32,
                 stem_channels: int = 64, layer1_planes: int = 64, layer1_blocks: int = 4,
                 num_blocks: int = 4, num_modules: Sequence[int] = (1, 4, 3),
                 with_heatmap: bool = True, backbone_init: str = "official",
                 input_hw: Sequence[int] = (256, 192)):
        super().__init__()
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        h, w = (int(v) for v in input_hw)
        if h < 32 or w < 32 or h % 32 or w % 32:
            raise ValueError(f"input_hw must be multiples of 32, got {h}x{w}")
        self.num_keypoints = int(num_keypoints)
        self.input_hw = (h, w)
        # the top-down HRNet: the last module fuses into the stride-4 branch only (as mmpose's
        # multiscale_output=False), so every parameter takes part in the loss (DDP-safe)
        self.backbone = HRNet(width, stem_channels, layer1_planes, layer1_blocks, num_blocks,
                              tuple(num_modules), init=backbone_init, multiscale_output=False)
        k = self.num_keypoints
        self.selector = nn.Conv2d(width, k, 1)
        self.regressor = nn.Conv2d(width, 2 * k, 1)
        self.aux_heatmap = nn.Conv2d(width, k, 1) if with_heatmap else None
        prior_bias = -math.log((1 - SELECTOR_PRIOR) / SELECTOR_PRIOR)
        for conv in (self.selector, self.regressor, self.aux_heatmap):
            if conv is None:
                continue
            nn.init.normal_(conv.weight, std=1e-3)
            nn.init.constant_(conv.bias, 0.0 if conv is self.regressor else prior_bias)

    def forward(self, x: torch.Tensor) -> dict:
        feat = self.backbone.forward_branches(x)[0]  # stride 4, all branches fused into it
        sel = self.selector(feat)
        h, w = sel.shape[-2:]
        scale = torch.tensor([w, h], dtype=feat.dtype, device=feat.device).repeat(self.num_keypoints)
        offsets = self.regressor(feat) * scale.view(1, -1, 1, 1)  # normalised -> output px
        heat = self.aux_heatmap(feat) if self.aux_heatmap is not None else None
        return {"selector": sel, "offsets": offsets, "aux_heatmaps": heat}


def is_topdown(model_or_name) -> bool:
    """True for a top-down network (or its registered name): its method family says so
    (``logocap.families``; DDP / TrainStep wrappers unwrapped)."""
    from ..families import family_of
    from ..utils import LogocapError

    try:
        return family_of(model_or_name).topdown
    except LogocapError:  # not a registered name / a network of no family
        return False


# ------------------------------------------------------------------ registered variants
_W32 = dict(width=32, input_hw=(256, 192))
_W48 = dict(width=48, input_hw=(384, 288))
_SMALL = dict(width=16, stem_channels=32, layer1_planes=32, layer1_blocks=1, num_blocks=2,
              num_modules=(1, 1, 1), backbone_init="kaiming", input_hw=(128, 96))
_TINY = dict(width=8, stem_channels=16, layer1_planes=16, layer1_blocks=1, num_blocks=2,
             num_modules=(1, 1, 1), backbone_init="kaiming", input_hw=(128, 96))


def _build(defaults: dict, num_keypoints: int, overrides: dict) -> nn.Module:
    return SarTopDownModel(num_keypoints=num_keypoints, **{**defaults, **overrides})


@register_model(family="sar", input_size=256)  # crop height
def sar_hrnet_w32_topdown(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(_W32, num_keypoints, kw)


@register_model(family="sar", input_size=384)  # crop height
def sar_hrnet_w48_topdown(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    return _build(_W48, num_keypoints, kw)


@register_model(family="sar", input_size=128)  # crop height
def sar_hrnet_small_topdown(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    """The HRNet-small trunk (width 16, as ``*_hrnet_small``), 128x96 crops: CPU experiments."""
    return _build(_SMALL, num_keypoints, kw)


@register_model(family="sar", input_size=128)  # crop height
def sar_hrnet_tiny_topdown(num_keypoints: int = COCO.num_keypoints, **kw) -> nn.Module:
    """Width 8, 2 blocks per branch, 1 module per stage, 128x96 crops: tests and CPU runs."""
    return _build(_TINY, num_keypoints, kw)
