"""DEKR (Geng et al., CVPR 2021, "Bottom-Up Human Pose Estimation via Disentangled Keypoint
Regression") as released (notes 10.1): an HRNet trunk, a heatmap branch and a per-joint offset
branch of adaptive convolutions.

- Trunk: :class:`~logocap.models.hrnet.HRNet`, whose modules sit at the TOP level of this model
  (``conv1``, ``layer1``, ``transition1..3``, ``stage2..4``), as in the released checkpoints.
- Heatmap branch: ``transition_heatmap`` (1x1 15w -> w, BN, ReLU), ``head_heatmap.0`` = one
  BasicBlock(w), ``head_heatmap.1`` = 1x1 conv w -> K+1 (the person center LAST).
- Offset branch: ``transition_offset`` (1x1 15w -> K * 15, BN, ReLU); joint j takes channels
  [15 j, 15 j + 15) through ``offset_feature_layers.j`` (2 AdaptBlocks) and
  ``offset_final_layer.j`` (1x1 conv 15 -> 2 with bias); the K results are concatenated.

The parameter names are the released ones, so ``pose_dekr_hrnetw{32,48}_{coco,crowdpose}.pth``
load with ``strict=True``. ``forward`` returns raw tensors in the library's convention
(``{"heatmaps": [B, K+1, H/4, W/4], "offsets": [B, 2K, H/4, W/4]}``, offset = location - joint in
output px, channel 2j = x); decoding lives in ``logocap.codecs.dekr_decode``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..meta import COCO
from .adaptive import AdaptBlock
from .blocks import BasicBlock, conv_bn_relu, official_init_
from .hrnet import HRNet

__all__ = ["DekrModel", "is_dekr"]


class DekrModel(HRNet):
    """forward(x [B,3,H,W]) -> {"heatmaps": [B,K+1,H/4,W/4], "offsets": [B,2K,H/4,W/4]}.

    Args (backbone ones as :class:`HRNet`):
        heatmap_channels: heatmap branch width (None = ``width``: 32 for W32, 48 for W48).
        joint_channels: channels of each joint's offset branch (15 released).
        adapt_blocks: AdaptBlocks per joint (2 released).
        offset_scale: fixed multiplier on the offsets (1.0 = released; the small CPU variants use
            10 so a from-scratch head reaches offsets of tens of pixels in fewer Adam steps).
    Init (released ``init_weights``): every ``nn.Conv2d`` normal(std 0.001) with zero bias,
    BN 1 / 0, the A and t convs of the AdaptBlocks zero; the deformable kernels keep their default
    init (the release's ``isinstance(m, nn.Conv2d)`` skips torchvision's DeformConv2d).
    ``backbone_init="kaiming"`` keeps PyTorch's default init in the trunk (training from scratch).
    """

    stride = 4

    def __init__(self, num_keypoints: int = COCO.num_keypoints, width: int = 32,
                 stem_channels: int = 64, layer1_planes: int = 64, layer1_blocks: int = 4,
                 num_blocks: int = 4, num_modules: Sequence[int] = (1, 4, 3),
                 heatmap_channels: int | None = None, joint_channels: int = 15,
                 adapt_blocks: int = 2, backbone_init: str = "official",
                 offset_scale: float = 1.0):
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        if joint_channels < 1 or adapt_blocks < 0:
            raise ValueError(f"need joint_channels >= 1 and adapt_blocks >= 0, got "
                             f"{joint_channels}, {adapt_blocks}")
        super().__init__(width, stem_channels, layer1_planes, layer1_blocks, num_blocks,
                         tuple(num_modules), init=backbone_init)
        self.num_keypoints = int(num_keypoints)
        self.joint_channels = int(joint_channels)
        self.offset_scale = float(offset_scale)
        feat, hm = self.out_channels, heatmap_channels or width
        k, jc = self.num_keypoints, self.joint_channels
        self.transition_heatmap = conv_bn_relu(feat, hm)
        self.transition_offset = conv_bn_relu(feat, k * jc)
        self.head_heatmap = nn.ModuleList([nn.Sequential(BasicBlock(hm, hm)),
                                           nn.Conv2d(hm, k + 1, 1)])
        self.offset_feature_layers = nn.ModuleList(
            [nn.Sequential(*[AdaptBlock(jc) for _ in range(adapt_blocks)]) for _ in range(k)])
        self.offset_final_layer = nn.ModuleList([nn.Conv2d(jc, 2, 1) for _ in range(k)])
        self._init_heads()

    def _init_heads(self) -> None:
        official_init_(self.transition_heatmap, self.transition_offset, self.head_heatmap,
                       self.offset_feature_layers, self.offset_final_layer)
        for m in self.offset_feature_layers.modules():  # then A = 0, t = 0
            if isinstance(m, AdaptBlock):
                m.zero_transform_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The concatenated 1/4-resolution trunk feature [B, 15 w, H/4, W/4]."""
        return HRNet.forward(self, x)

    def forward_heatmaps(self, feat: torch.Tensor) -> torch.Tensor:
        return self.head_heatmap[1](self.head_heatmap[0](self.transition_heatmap(feat)))

    def forward_offsets(self, feat: torch.Tensor) -> torch.Tensor:
        """Per-joint adaptive branches (a loop over the K joints, as released; not over people)."""
        chunks = self.transition_offset(feat).split(self.joint_channels, dim=1)
        out = [final(layers(c)) for c, layers, final in
               zip(chunks, self.offset_feature_layers, self.offset_final_layer)]
        return torch.cat(out, dim=1) * self.offset_scale

    def forward_heads(self, feat: torch.Tensor) -> dict:
        return {"heatmaps": self.forward_heatmaps(feat), "offsets": self.forward_offsets(feat)}

    def forward(self, x: torch.Tensor) -> dict:
        return self.forward_heads(self.forward_features(x))

    def stage_marks(self) -> list[tuple[str, str, str]]:
        """Timed stages of ``forward`` (``models.stages``): "backbone" (the HRNet trunk) until the
        heatmap transition starts, "heads" (heatmap branch + offset transition) until the offset
        transition is done, "adaptive_convs" (the K per-joint adaptive offset branches) to the
        end."""
        return [("transition_heatmap", "pre", "backbone"), ("transition_offset", "post", "heads"),
                ("", "post", "adaptive_convs")]


def is_dekr(model) -> bool:
    """True for a DEKR network (also when wrapped by DDP / a TrainStep-like ``.module``)."""
    net = getattr(model, "module", model)
    # an exported graph on ONNX Runtime (logocap.onnx_backend) names its family
    return isinstance(net, DekrModel) or getattr(net, "family", None) == "dekr"
