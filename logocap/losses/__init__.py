"""Training losses: ``build_criterion(model, loss_cfg, decode_cfg) -> fn(model, batch) -> dict``.

The returned dict has ``loss`` (the total to back-propagate) and one key per term, each already
multiplied by its factor: ``heatmap``, ``offset`` (+ ``kam``, ``refined`` for LOGO-CAP).
"""
from __future__ import annotations

from .center_offset import CenterOffsetCriterion, heatmap_loss, offset_loss

__all__ = ["build_criterion", "target_settings", "CenterOffsetCriterion", "heatmap_loss",
           "offset_loss"]


def build_criterion(model, loss_cfg: dict | None = None, decode_cfg: dict | None = None,
                    meta=None):
    """Pick the criterion from ``model.model_name``: LOGO-CAP models get the refinement losses.

    ``decode_cfg`` (the ``test`` config section) is only used by LOGO-CAP, whose training forward
    decodes candidate poses. ``meta`` (a KeypointMeta) supplies the OKS sigmas for LOGO-CAP.
    """
    name = getattr(getattr(model, "module", model), "model_name", "")  # unwrap DDP
    if name.startswith("logocap"):
        from .logocap import LogoCapCriterion  # imported lazily: only LOGO-CAP needs it
        sigmas = None if meta is None else meta.sigmas
        return LogoCapCriterion(dict(loss_cfg or {}), dict(decode_cfg or {}), sigmas=sigmas)
    if name.startswith("dekr"):  # method dispatch point (DEKR): offset factor 0.03
        from .dekr import DekrCriterion
        return DekrCriterion(loss_cfg)
    if name.startswith("hgr"):  # method dispatch point (HGR): tradeoff loss, lambda 0.01
        from .hgr import HgrCriterion
        return HgrCriterion(loss_cfg)
    if name.startswith("sar_") and name.endswith("_topdown"):  # method dispatch point (SAR)
        from .sar import SarTopDownCriterion  # mixture-of-Laplace + quality focal aux loss
        return SarTopDownCriterion(loss_cfg)
    return CenterOffsetCriterion(loss_cfg)


def target_settings(model_name: str, data_cfg: dict | None = None) -> dict:
    """Dataset target options for a model: ``heatmap_weights`` and ``offset_area``.

    A value set in ``data_cfg`` wins; None (the config default) means the method's own:
    per-channel weights and the keypoint-box area for DEKR (notes 10.2), per-channel weights and
    the instance-box diagonal for HGR (Eqns. 4-5), one shared weight map and the segmentation
    area otherwise (LOGO-CAP, center-offset).
    """
    out = {"heatmap_weights": "shared", "offset_area": "segmentation"}
    if str(model_name).startswith("dekr"):  # method dispatch point (DEKR)
        from .dekr import TARGET_DEFAULTS
        out.update(TARGET_DEFAULTS)
    if str(model_name).startswith("hgr"):  # method dispatch point (HGR)
        from .hgr import TARGET_DEFAULTS as HGR_TARGETS
        out.update(HGR_TARGETS)
    for k in out:
        if (data_cfg or {}).get(k) is not None:
            out[k] = data_cfg[k]
    return out
