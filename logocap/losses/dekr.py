"""DEKR training targets and losses (notes 10.2; the released ``MultiLossFactory``).

- heatmap: weighted MSE, mean over batch, channel, H, W, with a weight map PER CHANNEL
  (``heatmap_weights`` [B, K+1, h, w]: 1 inside that channel's own Gaussian windows, 0.1
  elsewhere, 0 where ignored); factor 1.0.
- offsets: SmoothL1 (beta 1/9) times the weight 1/sqrt(area), summed and divided by the number of
  weighted entries; factor 0.03 (``OFFSETS_LOSS_FACTOR``). The released area is the keypoint-box
  quirk (``codecs.targets.keypoint_box_area``); ``data.offset_area=segmentation`` switches to
  the annotation's segmentation area (what LOGO-CAP uses).
The two terms are the center-offset losses, so the criterion reuses them; only the defaults
(targets and factor) are DEKR's.
"""
from __future__ import annotations

from .center_offset import CenterOffsetCriterion

__all__ = ["DekrCriterion", "TARGET_DEFAULTS", "OFFSET_FACTOR"]

# dataset target options of the released DEKR (keys of CocoPoseDataset / config ``data``)
TARGET_DEFAULTS = {"heatmap_weights": "per_channel", "offset_area": "keypoint_box"}
OFFSET_FACTOR = 0.03


class DekrCriterion(CenterOffsetCriterion):
    """criterion(model, batch) -> {"loss", "heatmap", "offset"} (terms times their factors).

    ``loss_cfg`` keys: ``heatmap`` (1.0), ``offset`` (None or absent = 0.03, DEKR's factor).
    """

    def __init__(self, loss_cfg: dict | None = None):
        cfg = dict(loss_cfg or {})
        if cfg.get("offset") is None:
            cfg["offset"] = OFFSET_FACTOR
        super().__init__(cfg)
