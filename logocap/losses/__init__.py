"""Training losses: ``build_criterion(model, loss_cfg, decode_cfg) -> fn(model, batch) -> dict``.

The returned dict has ``loss`` (the total to back-propagate) and one key per term, each already
multiplied by its factor: ``heatmap``, ``offset`` (+ ``kam``, ``refined`` for LOGO-CAP).
"""
from __future__ import annotations

from .center_offset import CenterOffsetCriterion, heatmap_loss, offset_loss

__all__ = ["build_criterion", "CenterOffsetCriterion", "heatmap_loss", "offset_loss"]


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
    return CenterOffsetCriterion(loss_cfg)
