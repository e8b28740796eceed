"""Training losses: ``build_criterion(model, loss_cfg, decode_cfg) -> fn(model, batch) -> dict``.

The returned dict has ``loss`` (the total to back-propagate) and one key per term, each already
multiplied by its factor: ``heatmap``, ``offset`` (+ ``kam``, ``refined`` for LOGO-CAP). Which
criterion and which dataset targets a model gets is its method family's choice
(``logocap.families``); the two functions below ask it.
"""
from __future__ import annotations

from .center_offset import CenterOffsetCriterion, heatmap_loss, offset_loss

__all__ = ["build_criterion", "target_settings", "CenterOffsetCriterion", "heatmap_loss",
           "offset_loss"]


def build_criterion(model, loss_cfg: dict | None = None, decode_cfg: dict | None = None,
                    meta=None):
    """The criterion of the model's family (``families.family_of(model)``).

    ``decode_cfg`` (the ``test`` config section) is only used by LOGO-CAP, whose training forward
    decodes candidate poses. ``meta`` (a KeypointMeta) supplies the OKS sigmas for LOGO-CAP.
    """
    from ..families import family_of
    return family_of(model).build_criterion(loss_cfg, decode_cfg, meta)


def target_settings(model_name: str, data_cfg: dict | None = None) -> dict:
    """Dataset target options for a model: ``heatmap_weights`` and ``offset_area``.

    A value set in ``data_cfg`` wins; None (the config default) means the family's own:
    per-channel weights and the keypoint-box area for DEKR (notes 10.2), per-channel weights and
    the instance-box diagonal for HGR (Eqns. 4-5), one shared weight map and the segmentation
    area otherwise (LOGO-CAP, center-offset).
    """
    from ..families import family_of
    return family_of(model_name).target_settings(data_cfg)
