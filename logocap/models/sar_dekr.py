"""Bottom-up SAR on the DEKR trunk (SAR notes §7, default A): DEKR's network with the center
heatmap channel turned into the SAR selector.

- Trunk and heads exactly as :class:`~logocap.models.dekr.DekrModel` (same parameter names and
  shapes, so a DEKR checkpoint fills the whole network and a center-offset / LOGO-CAP one the
  trunk; ``models.pretrained``).
- ``heatmaps`` [B, K+1, H/4, W/4]: channels 0..K-1 are DEKR's keypoint heatmaps (trained with
  DEKR's MSE, used for the joint scores and the pose-NMS rank); channel K is the **selector logit**
  s_t of the cell's pose hypothesis (DEKR's center heatmap there). Keeping the released layout
  lets the DEKR decoding helpers, the ONNX export and the speed benchmark run unchanged.
- ``offsets`` [B, 2K, H/4, W/4]: DEKR's per-joint adaptive-conv branches; the pose hypothesis of
  cell t is K_t^j = p_t - o_t^j (output px), as DEKR's pose map.
- ``aux_center`` [B, 1, H/4, W/4] (only with ``aux_center=True``, notes §7 item 3): a separate
  1x1 conv on the heatmap branch, supervised with DEKR's center Gaussian through SAR's quality
  focal loss; needed by the per-person normalisation (option B) to suppress the background.

Init: DEKR's (convs normal(std 1e-3), zero biases, adaptive transforms zero), then the selector
bias (and the aux bias) -log((1 - 0.01) / 0.01) ~ -4.595 as in SAR's release.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..meta import COCO
from .dekr import DekrModel
from .sar import SELECTOR_PRIOR

__all__ = ["SarDekrModel"]


class SarDekrModel(DekrModel):
    """forward(x [B,3,H,W]) -> {"heatmaps": [B,K+1,H/4,W/4] (channel K = selector logits),
    "offsets": [B,2K,H/4,W/4]} (+ "aux_center": [B,1,H/4,W/4] logits with ``aux_center``).

    Args: those of :class:`DekrModel`, plus ``aux_center`` (build the auxiliary center head) and
    ``selector_prior`` (the initial sigmoid of the selector and aux logits, 0.01 as released).
    """

    def __init__(self, num_keypoints: int = COCO.num_keypoints, aux_center: bool = False,
                 selector_prior: float = SELECTOR_PRIOR, **dekr_kwargs):
        if not 0.0 < float(selector_prior) < 1.0:
            raise ValueError(f"selector_prior must be in (0, 1), got {selector_prior}")
        super().__init__(num_keypoints, **dekr_kwargs)
        bias = -math.log((1.0 - selector_prior) / selector_prior)
        with torch.no_grad():
            self.head_heatmap[1].bias[self.num_keypoints] = bias
        self.aux_center_head = None
        if aux_center:
            hm = self.head_heatmap[1].in_channels
            self.aux_center_head = nn.Conv2d(hm, 1, 1)
            nn.init.normal_(self.aux_center_head.weight, std=0.001)
            nn.init.constant_(self.aux_center_head.bias, bias)

    def forward_heads(self, feat: torch.Tensor) -> dict:
        hidden = self.head_heatmap[0](self.transition_heatmap(feat))
        out = {"heatmaps": self.head_heatmap[1](hidden), "offsets": self.forward_offsets(feat)}
        if self.aux_center_head is not None:
            out["aux_center"] = self.aux_center_head(hidden)
        return out
