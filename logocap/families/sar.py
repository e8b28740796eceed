"""Top-down SAR (notes §4): a person-crop model; its models are registered in ``models/sar.py``.

It cannot decode a whole image (``decode`` is None: the Predictor says it needs person boxes);
``logocap.topdown.TopDownPredictor`` runs it on boxes. Training uses per-person crops
(``data.topdown.TopDownPoseDataset``) and ``losses.sar.SarTopDownCriterion``.
"""
from __future__ import annotations

from ..models.sar import SarTopDownModel
from .base import MethodFamily, register_family

__all__ = ["FAMILY"]


def criterion(loss_cfg, test_cfg=None, meta=None):
    from ..losses.sar import SarTopDownCriterion  # mixture-of-Laplace + quality focal aux loss
    return SarTopDownCriterion(loss_cfg)


def train_dataset(ann, images, meta, data_cfg: dict, seed: int = 0):
    """Person crops; ``data.input_size`` is the crop height (width 3/4)."""
    from ..data.topdown import TopDownPoseDataset

    d = data_cfg
    return TopDownPoseDataset(
        str(ann), str(images), meta=meta, input_size=d["input_size"],
        max_rotation=d["max_rotation"], min_scale=d["min_scale"], max_scale=d["max_scale"],
        max_translate=d["max_translate"], flip_prob=d["flip_prob"],
        max_images=d["max_images"], seed=seed)


FAMILY = register_family(MethodFamily(
    name="sar", title="SAR (top-down)", model_class=SarTopDownModel, criterion=criterion,
    decode=None, topdown=True, train_dataset=train_dataset,
    model_input_size=lambda model: model.input_hw[0]))  # the crop height
