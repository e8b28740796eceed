"""The empirical upper bound of center-offset decoding (CVPR Table 8, supplementary §2 / Alg. 1),
run by ``logocap upper-bound`` and ``benchmarks/synthetic.py``.

The test decoder runs as usual up to the center-offset candidates (0.01 center filter, heat-value
scores: adaptation ``none``). Then every joint of every candidate is replaced by the point of its
inclusive 11x11 local mesh (steps sigma_j / min sigma input px) that has the highest OKS against
the ground truth (oracle assignment as in training, ``codecs.oks``). GT is mapped into input px
with the test transform and areas scaled by the transform's scale^2, so OKS is the same as in
original pixels. Pose NMS, back-projection and COCO AP follow, for the unrefined poses and the
oracle ones side by side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["upper_bound_eval"]


def _gt_in_input(coco, image_ids, affines, meta):
    """GT people of each image in input px: gt [B, G, K, 3], areas [B, G], mask [B, G]."""
    K = meta.num_keypoints
    per_image = []
    for img_id in image_ids:  # data preparation: annotations are ragged per image
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=False))
                if a.get("num_keypoints", 0) > 0]
        per_image.append(anns)
    G = max([1] + [len(a) for a in per_image])
    gt = np.zeros((len(image_ids), G, K, 3), np.float64)
    areas = np.zeros((len(image_ids), G), np.float64)
    mask = np.zeros((len(image_ids), G), bool)
    for b, anns in enumerate(per_image):
        M = affines[b]
        scale2 = abs(np.linalg.det(M[:, :2]))  # similarity transform: area scales by s^2
        for g, a in enumerate(anns):
            kp = np.asarray(a["keypoints"], np.float64).reshape(K, 3)
            gt[b, g, :, :2] = kp[:, :2] @ M[:, :2].T + M[:, 2]
            gt[b, g, :, 2] = kp[:, 2]
            areas[b, g] = float(a.get("area", 0.0)) * scale2
            mask[b, g] = True
    return torch.from_numpy(gt).float(), torch.from_numpy(areas).float(), torch.from_numpy(mask)


def upper_bound_eval(model, dataset, meta, test_cfg: dict, input_size: int, batch_size: int = 4,
                     device="cpu", out_dir=None, verbose: bool = True) -> dict:
    """-> dict(baseline=metrics, upper_bound=metrics) on the images of ``dataset`` (mode "val")."""
    from ..codecs.decode import pose_nms, to_original
    from ..codecs.mesh import local_mesh
    from ..codecs.oks import oracle_refine_batched
    from ..data.coco import collate_val
    from ..evaluation import evaluate_predictions
    from ..predict import Predictor
    from ..structures import Poses

    cfg = dict(test_cfg or {})
    cfg["adaptation"] = "none"  # the unrefined center-offset poses
    pred = Predictor(model, meta, input_size, cfg, device)
    meta, cfg = pred.meta, pred.cfg
    found = {"baseline": {}, "upper_bound": {}}
    for start in range(0, len(dataset), batch_size):
        batch = collate_val([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        res = pred.decode(batch["image"])
        affines = batch["affine"].numpy()
        gt, areas, mask = (t.to(res["poses"].device) for t in
                           _gt_in_input(dataset.coco, batch["image_id"], affines, meta))
        mesh = local_mesh(res["poses"][..., :2], meta.sigmas, 11, float(cfg.get("window_scale", 1.0)))
        best = oracle_refine_batched(mesh, gt, areas, meta.sigmas, mask)
        oracle = torch.cat((best, res["poses"][..., 2:]), dim=-1)
        keep_o = pose_nms(oracle, res["scores"], res["valid"], cfg["nms_threshold"],
                          cfg["nms_num_joints"], cfg["max_people"], cfg["pose_nms"])
        for name, poses, keep in (("baseline", res["poses"], res["keep"]), ("upper_bound", oracle, keep_o)):
            orig = to_original(poses, batch["affine"].to(poses.device)).float().cpu().numpy()
            k, s = keep.cpu().numpy(), res["scores"].float().cpu().numpy()
            for b, img_id in enumerate(batch["image_id"]):
                found[name][img_id] = Poses(orig[b][k[b]], s[b][k[b]], meta, image_id=img_id,
                                            image_size=batch["orig_size"][b]).sorted()
    out = {}
    for name, by_image in found.items():
        sub = Path(out_dir) / name if out_dir else None
        if verbose:
            print(f"== {name}")
        out[name] = evaluate_predictions(by_image, dataset.coco, meta, out_dir=sub, verbose=verbose)
    return out
