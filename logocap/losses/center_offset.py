"""Losses of the center-offset baseline (shared by LOGO-CAP, notes 4.4).

- heatmap: mean over batch, channel, H, W of (pred - gt)^2 * weight; the weight map is a single
  channel [B, 1, h, w] broadcast to the K+1 channels (1 near people, 0.1 elsewhere, 0 ignored).
- offsets: SmoothL1 with beta = 1/9, times the weight (1/sqrt(area)), summed and divided by the
  number of entries with weight > 0 (x and y counted separately; guarded against 0).
The returned terms are already multiplied by their factors (heatmap 1.0, offset 0.01).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["heatmap_loss", "offset_loss", "CenterOffsetCriterion"]

OFFSET_BETA = 1.0 / 9.0


def _check(name: str, pred: torch.Tensor, gt: torch.Tensor) -> None:
    # a silent broadcast between prediction and target would train on garbage
    if pred.shape != gt.shape:
        raise ValueError(f"{name} loss: prediction {tuple(pred.shape)} vs target {tuple(gt.shape)}")


def heatmap_loss(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted MSE: mean((pred - gt)^2 * weight), weight broadcast over channels."""
    _check("heatmap", pred, gt)
    return ((pred - gt) ** 2 * weight).mean()


def offset_loss(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted SmoothL1 (beta 1/9), normalised by the count of entries with weight > 0."""
    _check("offset", pred, gt)
    _check("offset weight", pred, weight)
    per_entry = F.smooth_l1_loss(pred, gt, reduction="none", beta=OFFSET_BETA) * weight
    count = (weight > 0).sum().clamp(min=1)
    return per_entry.sum() / count


class CenterOffsetCriterion:
    """criterion(model, batch) -> {"loss", "heatmap", "offset"} (terms times their factors).

    ``batch`` is the collated training dict (``image``, ``heatmaps``, ``heatmap_weights``,
    ``offsets``, ``offset_weights``, ...). ``loss_cfg`` keys used: ``heatmap``, ``offset``.
    """

    def __init__(self, loss_cfg: dict | None = None):
        cfg = loss_cfg or {}
        self.heatmap_factor = float(cfg.get("heatmap", 1.0))
        offset = cfg.get("offset")  # None = this method's default, 0.01 (notes 4.4)
        self.offset_factor = 0.01 if offset is None else float(offset)

    def terms(self, out: dict, batch: dict) -> dict:
        """The two weighted terms from an existing forward output (reused by LOGO-CAP's criterion)."""
        hm = self.heatmap_factor * heatmap_loss(out["heatmaps"], batch["heatmaps"],
                                                batch["heatmap_weights"])
        off = self.offset_factor * offset_loss(out["offsets"], batch["offsets"],
                                               batch["offset_weights"])
        return {"heatmap": hm, "offset": off}

    def __call__(self, model, batch: dict) -> dict:
        out = model(batch["image"])
        terms = self.terms(out, batch)
        return {"loss": terms["heatmap"] + terms["offset"], **terms}
