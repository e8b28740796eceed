"""The three qualities of the seed paper's Table 4 for an HGR model (§4.3).

- regression quality: the regressed poses alone = a Predictor with ``test.group_radius=0``;
- heatmap quality: the keypoint candidates of the heatmaps grouped with the GROUND-TRUTH poses as
  the cues instead of the regressed ones (:func:`cue_grouped_poses`, :func:`heatmap_quality_poses`);
- final quality: the Predictor as configured (grouping, naive score, ``test.rescore``).
Each gives ``{image_id: Poses}`` for ``evaluation.evaluate_predictions``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..structures import Poses
from ..utils import LogocapError

__all__ = ["cue_grouped_poses", "heatmap_quality_poses"]


def cue_grouped_poses(predictor, image, gt_keypoints, image_id=None,
                      fallback: str = "nearest") -> Poses:
    """One RGB image and its ground-truth poses ``gt_keypoints`` [M, K, 3] (original px, v > 0
    labelled) -> the heatmap candidates grouped with those poses as the cues (original px).

    The Predictor's test transform, flip and ``group_radius`` apply; one test scale only (the
    heatmap quality is measured at scale 1). Scores: the mean heat value of the grouped joints.
    People without a labelled joint are dropped. ``fallback``: what a joint with no candidate
    within the radius becomes (``codecs.hgr_decode.group_with_cues``; by default the nearest
    candidate of its type, or a miss).
    """
    from ..codecs.decode import to_original
    from ..codecs.hgr_decode import decode_hgr, hgr_test_cfg
    from ..data.transforms import apply_affine
    from ..models.hgr import is_hgr

    if not is_hgr(predictor.model):
        raise LogocapError(f"the heatmap quality needs an HGR model, got "
                           f"'{getattr(predictor.model, 'model_name', type(predictor.model).__name__)}'")
    cfg = hgr_test_cfg(predictor.cfg)
    if cfg["scales"] != [1.0]:
        raise LogocapError(f"the heatmap quality is measured at test scale 1 only, test.scales is "
                           f"{cfg['scales']}")
    meta, k = predictor.meta, predictor.meta.num_keypoints
    gt = np.asarray(gt_keypoints, np.float64).reshape(-1, k, 3)
    tensor, affine, size = predictor.prepare(image)
    cues = np.concatenate([apply_affine(gt[..., :2], affine), gt[..., 2:]], axis=-1)
    dtype = next(predictor.model.parameters()).dtype
    batch = tensor[None].to(predictor.device, dtype=dtype)
    net = getattr(predictor, "net", predictor.model)
    with torch.inference_mode():
        res = decode_hgr(net, {1.0: batch}, meta, cfg,
                         cues=torch.as_tensor(cues, dtype=dtype, device=predictor.device)[None],
                         cue_fallback=fallback)
    aff = torch.as_tensor(np.asarray(affine, np.float64))[None]
    orig = to_original(res["poses"], aff.to(res["poses"].device)).float().cpu().numpy()[0]
    keep = res["keep"].cpu().numpy()[0]
    return Poses(orig[keep], res["scores"].float().cpu().numpy()[0][keep], meta,
                 image_id=image_id, image_size=tuple(size))


def heatmap_quality_poses(predictor, dataset, fallback: str = "nearest") -> dict:
    """``{image_id: Poses}`` of :func:`cue_grouped_poses` over a val ``CocoPoseDataset`` (its
    annotations with at least one labelled joint are the cues)."""
    from ..data.transforms import load_image

    k = dataset.meta.num_keypoints
    out = {}
    for image_id in dataset.image_ids:
        anns = [a for a in dataset.gt_annotations(image_id) if a.get("num_keypoints", 0) > 0]
        gt = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), k, 3)
        out[image_id] = cue_grouped_poses(predictor, load_image(dataset.image_path(image_id)), gt,
                                          image_id=image_id, fallback=fallback)
    return out
