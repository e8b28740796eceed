"""The LOGO-CAP network (CVPR 2022): the center-offset model plus the KEM embedding head and the
convolutional message passing (CMP) that turns local keypoint expansion maps (KEMs) into local
keypoint attraction maps (KAMs).

Module names follow the released checkpoint (notes 2.2 / 9): ``transition_embedding`` (1x1, BN,
ReLU -> d) and ``joints_mlp`` (a Sequential with the official indices), so it loads strictly.

CMP ("3+1" in the paper's Table 6): three Conv3x3+Norm+ReLU layers with Attentive Normalization
in the second (indices 0-8), then a 1x1 output conv to K maps (index 9).
CMP "1" (Table 6, "only use 1 output Conv layer for dimension reduction"): ``joints_mlp`` is a
single 1x1 conv K*d -> K at index 0 (the same kind of layer as the "3+1" output conv; the paper
names no other kernel size). Its AP in Table 6 is 68.8 vs 69.6 for "3+1".
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..meta import COCO
from .blocks import BN_MOMENTUM, AttentiveNorm2d, conv_bn_relu
from .center_offset import CenterOffsetModel

__all__ = ["LogoCapModel", "build_cmp"]

MESSAGE_PASSING = ("3+1", "1")


def build_cmp(num_keypoints: int, embed_dim: int, widths: Sequence[int] = (512, 256, 128),
              attentive_norm: bool = True, num_affine: int = 20,
              message_passing: str = "3+1") -> nn.Sequential:
    """The CMP module: [N, K*d, m, m] local KEMs -> [N, K, m, m] KAMs (raw, no clamp)."""
    in_ch = num_keypoints * embed_dim
    if message_passing == "1":
        return nn.Sequential(nn.Conv2d(in_ch, num_keypoints, 1))
    if message_passing != "3+1":
        raise ValueError(f"message_passing must be one of {MESSAGE_PASSING}, got {message_passing!r}")
    if len(widths) != 3:
        raise ValueError(f"cmp_widths must give 3 widths, got {tuple(widths)}")
    layers = []
    for i, out_ch in enumerate(widths):
        layers.append(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False))
        # AN only in the second layer (official USE_AN: [False, True, False]); Table 5 (c) = BN
        if i == 1 and attentive_norm:
            layers.append(AttentiveNorm2d(out_ch, num_affine))
        else:
            layers.append(nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM))
        layers.append(nn.ReLU(inplace=True))
        in_ch = out_ch
    layers.append(nn.Conv2d(in_ch, num_keypoints, 1))
    return nn.Sequential(*layers)


class LogoCapModel(CenterOffsetModel):
    """forward(x) -> {"heatmaps", "offsets", "embedding": [B, d, H/4, W/4]}; ``kam(local_kems)``.

    Extra args: ``embed_dim`` (d, 64 official), ``cmp_widths`` (512, 256, 128 official),
    ``attentive_norm`` (Table 5 switch; False = plain BN at index 4), ``num_affine`` (20),
    ``message_passing`` ("3+1" or "1", Table 6).
    """

    def __init__(self, num_keypoints: int = COCO.num_keypoints, *, embed_dim: int = 64,
                 cmp_widths: Sequence[int] = (512, 256, 128), attentive_norm: bool = True,
                 num_affine: int = 20, message_passing: str = "3+1", **backbone_and_heads):
        super().__init__(num_keypoints, **backbone_and_heads)
        self.embed_dim = embed_dim
        self.transition_embedding = conv_bn_relu(self.backbone.out_channels, embed_dim)
        self.joints_mlp = build_cmp(num_keypoints, embed_dim, tuple(cmp_widths), attentive_norm,
                                    num_affine, message_passing)

    def forward(self, x: torch.Tensor) -> dict:
        feat = self.backbone(x)
        out = self.forward_heads(feat)
        out["embedding"] = self.transition_embedding(feat)
        return out

    def kam(self, local_kems: torch.Tensor) -> torch.Tensor:
        """Local KEMs [N, K*d, m, m] (channel = joint * d + feature) -> KAMs [N, K, m, m], raw.

        N is the number of candidate people; AN's gates are computed per candidate.
        """
        expected = self.num_keypoints * self.embed_dim
        if local_kems.dim() != 4 or local_kems.shape[1] != expected:
            raise ValueError(f"kam() expects [N, {expected}, m, m] local KEMs, got {tuple(local_kems.shape)}")
        if local_kems.shape[0] == 0:  # no candidates (BatchNorm would fail on an empty batch)
            return local_kems.new_zeros((0, self.num_keypoints, *local_kems.shape[2:]))
        return self.joints_mlp(local_kems)
