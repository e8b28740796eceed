"""HGR training loss (the seed paper, Eqns. 4-6): l = l_h + lambda l_p.

Targets are the dataset's (``codecs.targets.encode_targets``) with HGR's options
(:data:`TARGET_DEFAULTS`): per-channel heatmap weights and the instance-box offset normaliser.

- l_h, the tradeoff heatmap loss (Eqn. 4), over the K keypoint heatmaps: weighted MSE, mean over
  batch, channel and pixels, with mask M_k = 1 inside the k-th keypoint region (the windows of
  channel k's own Gaussians) and ``data.bg_weight`` (0.1) elsewhere, 0 where ignored (crowds,
  outside the image). The mask multiplies the squared error, as in the released code of this
  line of work; Eqn. 4 read literally squares the mask too, which is ``data.bg_weight=0.01``.
  ``loss.tradeoff=false`` (Table 4's switch) is the plain MSE: weight 1 wherever not ignored.
- l_p (Eqn. 5): SmoothL1 (beta 1/9) of the offsets over the center regions, each weighted by
  1 / Z_i with Z_i = sqrt(H_i^2 + W_i^2) of the person's instance box (input px; the offsets are in
  output px), divided by the number of weighted entries; plus the center-heatmap MSE (weight 1
  wherever not ignored).
- lambda = 0.01 (Eqn. 6) multiplies the offset term (``loss.offset``, None = 0.01). The center
  term has its own factor ``loss.center`` (1.0, the released lineage trains the center map with
  the heatmaps); Eqn. 6 read literally puts it under lambda too: ``loss.center=0.01``.
The returned terms are already multiplied by their factors: ``heatmap``, ``center``, ``offset``.
"""
from __future__ import annotations

import torch

from ..utils import LogocapError
from .center_offset import heatmap_loss, offset_loss

__all__ = ["HgrCriterion", "TARGET_DEFAULTS", "OFFSET_FACTOR", "hgr_heatmap_weights"]

# dataset target options (keys of CocoPoseDataset / config ``data``)
TARGET_DEFAULTS = {"heatmap_weights": "per_channel", "offset_area": "instance_box"}
OFFSET_FACTOR = 0.01  # lambda, Eqn. 6


def hgr_heatmap_weights(weights: torch.Tensor, num_keypoints: int, tradeoff: bool = True):
    """Per-channel dataset weights [B, K+1, h, w] -> (keypoint weights [B, K, h, w], center
    weights [B, 1, h, w]).

    Keypoints: the tradeoff mask M (the weights as given: 1 in the channel's own regions,
    bg_weight outside, 0 ignored) or, with ``tradeoff=False``, 1 wherever not ignored. Center: 1
    wherever not ignored (Eqn. 5 has no mask on the center term).
    """
    k = int(num_keypoints)
    if weights.dim() != 4 or weights.shape[1] != k + 1:
        raise LogocapError(f"HGR needs per-channel heatmap weights [B, {k + 1}, h, w] "
                         f"(data.heatmap_weights=per_channel), got {tuple(weights.shape)}")
    used = (weights > 0).to(weights.dtype)
    kp = weights[:, :k] if tradeoff else used[:, :k]
    return kp, used[:, k:]


class HgrCriterion:
    """criterion(model, batch) -> {"loss", "heatmap", "center", "offset"} (terms times factors).

    ``loss_cfg`` keys: ``heatmap`` (1.0), ``offset`` (None = lambda = 0.01), ``center`` (1.0),
    ``tradeoff`` (True). ``batch`` is the collated training dict with per-channel
    ``heatmap_weights``.
    """

    def __init__(self, loss_cfg: dict | None = None):
        cfg = dict(loss_cfg or {})
        self.heatmap_factor = float(cfg.get("heatmap", 1.0))
        offset = cfg.get("offset")
        self.offset_factor = OFFSET_FACTOR if offset is None else float(offset)
        center = cfg.get("center")
        self.center_factor = 1.0 if center is None else float(center)
        tradeoff = cfg.get("tradeoff", True)
        if not isinstance(tradeoff, bool):
            raise LogocapError(f"loss.tradeoff must be true or false, got {tradeoff!r}")
        self.tradeoff = tradeoff

    def terms(self, out: dict, batch: dict) -> dict:
        k = out["offsets"].shape[1] // 2
        kp_w, ct_w = hgr_heatmap_weights(batch["heatmap_weights"], k, self.tradeoff)
        pred, gt = out["heatmaps"], batch["heatmaps"]
        return {
            "heatmap": self.heatmap_factor * heatmap_loss(pred[:, :k], gt[:, :k], kp_w),  # Eqn. 4
            "center": self.center_factor * heatmap_loss(pred[:, k:], gt[:, k:], ct_w),
            "offset": self.offset_factor * offset_loss(out["offsets"], batch["offsets"],
                                                       batch["offset_weights"]),  # Eqn. 5
        }

    def __call__(self, model, batch: dict) -> dict:
        terms = self.terms(model(batch["image"]), batch)
        return {"loss": terms["heatmap"] + terms["center"] + terms["offset"], **terms}
