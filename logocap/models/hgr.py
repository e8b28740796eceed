"""HGR: the HRNet bottom-up method of the seed paper (Sun et al., "Bottom-Up Human Pose Estimation
by Ranking Heatmap-Guided Adaptive Keypoint Estimates"), §3.1 and Fig. 2.

- Trunk: :class:`~logocap.models.hrnet.HRNet` at the TOP level of the model (as DEKR), giving the
  representation F = the concatenated 1/4-resolution feature (15 w channels).
- Keypoint heatmap estimator (Eqn. 1, H = H(F)): ``transition_heatmap`` (1x1 15w -> c_h, BN,
  ReLU), ``heatmap_units`` = 2 ART units, ``heatmap_final`` = linear (1x1) c_h -> K.
- Pixel-wise keypoint regressor (Eqn. 2, (C, O) = P(F, H)): ``transition_regression`` (1x1
  15w + K -> c_r, BN, ReLU) on concat(F, H), ``regression_units`` = 2 ART units,
  ``regression_final`` = linear (1x1) c_r -> 2K + 1 (the 2K offsets, then the center heatmap).
- ART unit (adaptive representation transformation): :class:`~logocap.models.adaptive.AdaptBlock`,
  a pixel-wise spatial transformer: a 3x3 conv estimates the local 2x2 transform T (and a
  translation) of every position, the 3x3 kernel taps are read at T G_t (Eqn. 3), then BN, the
  residual and ReLU (the residual, as in the released DEKR unit, keeps in = out channels).

Switches for the Table 4 ablation (constructor kwargs, so ``model.kwargs`` in a config):
- ``heatmap_guidance`` (True): the regressor reads concat(F, H); False = F only (the baseline of
  [45]). H is not detached, so the regression loss also trains the heatmap head (§3.1).
- ``adaptive`` (True): ART units; False = plain units (3x3 conv, BN, residual, ReLU) of the same
  size. The ART transform starts at T = I, t = 0, i.e. exactly the plain unit, so the two
  settings differ only in the learnt deformation (DEKR's release starts at T = 0 instead).
The tradeoff loss is a switch of the criterion (``loss.tradeoff``) and the scoring net one of
the test settings (``test.rescore``).

``forward`` returns raw tensors in the library convention: ``{"heatmaps": [B, K+1, H/4, W/4]``
(the K keypoint heatmaps, then the center heatmap C), ``"offsets": [B, 2K, H/4, W/4]}`` (location
- joint, output px, channel 2j = x). Decoding lives in ``logocap.codecs.hgr_decode``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..meta import COCO
from .adaptive import AdaptBlock
from .blocks import BN_MOMENTUM, conv_bn_relu, official_init_
from .hrnet import HRNet

__all__ = ["HgrModel", "PlainUnit", "is_hgr"]


class PlainUnit(nn.Module):
    """The non-adaptive unit of the ablation: 3x3 conv (no bias) -> BN -> + x -> ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)) + x)


class HgrModel(HRNet):
    """forward(x [B,3,H,W]) -> {"heatmaps": [B,K+1,H/4,W/4], "offsets": [B,2K,H/4,W/4]}.

    Args (backbone ones as :class:`HRNet`):
        heatmap_channels: width c_h of the heatmap head (None = ``width``).
        regression_channels: width c_r of the regressor (256: with the W32 trunk the model has
            30.7 M parameters, Table 1).
        units: ART (or plain) units per head (2 in the paper).
        heatmap_guidance, adaptive: the Table 4 switches (see the module docstring).
        offset_scale: fixed multiplier on the offsets (1.0; the CPU variants use 10 so that a
            from-scratch head reaches offsets of tens of pixels in fewer steps, as DEKR's).
    Init: head convs normal(std 0.001) with zero bias, BN 1 / 0, ART transforms at T = I, t = 0.
    """

    stride = 4

    def __init__(self, num_keypoints: int = COCO.num_keypoints, width: int = 32,
                 stem_channels: int = 64, layer1_planes: int = 64, layer1_blocks: int = 4,
                 num_blocks: int = 4, num_modules: Sequence[int] = (1, 4, 3),
                 heatmap_channels: int | None = None, regression_channels: int = 256,
                 units: int = 2, heatmap_guidance: bool = True, adaptive: bool = True,
                 backbone_init: str = "official", offset_scale: float = 1.0):
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        if regression_channels < 1 or units < 0 or (heatmap_channels is not None
                                                     and heatmap_channels < 1):
            raise ValueError(f"need channels >= 1 and units >= 0, got heatmap_channels="
                             f"{heatmap_channels}, regression_channels={regression_channels}, "
                             f"units={units}")
        for name, flag in (("heatmap_guidance", heatmap_guidance), ("adaptive", adaptive)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag!r}")
        super().__init__(width, stem_channels, layer1_planes, layer1_blocks, num_blocks,
                         tuple(num_modules), init=backbone_init)
        self.num_keypoints = k = int(num_keypoints)
        self.heatmap_guidance = heatmap_guidance
        self.adaptive = adaptive
        self.offset_scale = float(offset_scale)
        feat, ch, cr = self.out_channels, heatmap_channels or width, int(regression_channels)
        unit = AdaptBlock if adaptive else PlainUnit
        self.transition_heatmap = conv_bn_relu(feat, ch)
        self.heatmap_units = nn.Sequential(*[unit(ch) for _ in range(units)])
        self.heatmap_final = nn.Conv2d(ch, k, 1)
        self.transition_regression = conv_bn_relu(feat + (k if heatmap_guidance else 0), cr)
        self.regression_units = nn.Sequential(*[unit(cr) for _ in range(units)])
        self.regression_final = nn.Conv2d(cr, 2 * k + 1, 1)
        self._init_heads()

    def _init_heads(self) -> None:
        official_init_(self.transition_heatmap, self.heatmap_units, self.heatmap_final,
                       self.transition_regression, self.regression_units, self.regression_final)
        for m in list(self.heatmap_units) + list(self.regression_units):
            if isinstance(m, AdaptBlock):  # T = I, t = 0: the unit starts as the plain unit
                m.zero_transform_()
                with torch.no_grad():
                    m.transform_matrix_conv.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation F: the concatenated 1/4-resolution trunk feature [B, 15 w, h, w]."""
        return HRNet.forward(self, x)

    def forward_heatmaps(self, feat: torch.Tensor) -> torch.Tensor:
        """Eqn. 1: H = H(F), [B, K, h, w]."""
        return self.heatmap_final(self.heatmap_units(self.transition_heatmap(feat)))

    def forward_regression(self, feat: torch.Tensor, heatmaps: torch.Tensor):
        """Eqn. 2: (C, O) = P(F, H) -> (center [B, 1, h, w], offsets [B, 2K, h, w])."""
        x = torch.cat([feat, heatmaps], dim=1) if self.heatmap_guidance else feat
        out = self.regression_final(self.regression_units(self.transition_regression(x)))
        k2 = 2 * self.num_keypoints
        return out[:, k2:], out[:, :k2] * self.offset_scale

    def forward_heads(self, feat: torch.Tensor) -> dict:
        heat = self.forward_heatmaps(feat)
        center, offsets = self.forward_regression(feat, heat)
        return {"heatmaps": torch.cat([heat, center], dim=1), "offsets": offsets}

    def forward(self, x: torch.Tensor) -> dict:
        return self.forward_heads(self.forward_features(x))

    def stage_marks(self) -> list[tuple[str, str, str]]:
        """Timed stages of ``forward`` (``models.stages``): "backbone" (the HRNet trunk) until the
        heatmap transition starts, "heads" (the heatmap head with its units + the regression
        transition) until the regression transition is done, "regression" (the regressor's units,
        ART or plain, and its output layer) to the end."""
        return [("transition_heatmap", "pre", "backbone"),
                ("transition_regression", "post", "heads"), ("", "post", "regression")]


def is_hgr(model) -> bool:
    """True for an HGR network (also when wrapped by DDP / a TrainStep-like ``.module``)."""
    net = getattr(model, "module", model)
    # an exported graph on ONNX Runtime (logocap.onnx_backend) names its family
    return isinstance(net, HgrModel) or getattr(net, "family", None) == "hgr"
