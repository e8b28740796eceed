"""``logocap upper-bound``: the empirical upper bound of center-offset decoding (CVPR Table 8,
supplementary §2 / Alg. 1).

The test decoder runs as usual up to the center-offset candidates (0.01 center filter, heat-value
scores: adaptation ``none``). Then every joint of every candidate is replaced by the point of its
inclusive 11x11 local mesh (steps sigma_j / min sigma input px) that has the highest OKS against
the ground truth (oracle assignment as in training, ``codecs.oks``). GT is mapped into input px
with the test transform and areas scaled by the transform's scale^2, so OKS is the same as in
original pixels. Pose NMS, back-projection and COCO AP follow, for the unrefined poses and the
oracle ones side by side.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..utils import LogocapError

HELP = "Empirical upper bound of center-offset poses with an oracle 11x11 local search (Table 8)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (logocap format or plain state_dict)")
    p.add_argument("--model", default=None, help="model name, needed for plain state_dict checkpoints")
    p.add_argument("--data", required=True,
                   help="dataset folder holding annotations/person_keypoints_val.json and images/val")
    p.add_argument("--ann", default=None, help="annotation json (overrides the one under --data)")
    p.add_argument("--images", default=None, help="image folder (overrides the one under --data)")
    p.add_argument("--size", type=int, default=None, help="test input size (short side); "
                   "default: the checkpoint's")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--out", default=None, help="folder for the results and metrics json files")


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


def run(args) -> int:
    from ..config import DEFAULTS, validate_test_cfg
    from ..data.coco import CocoPoseDataset
    from ..engine.checkpoint import build_model_from_checkpoint, checkpoint_test_config, load_checkpoint
    from ..evaluation import metric_names
    from ..utils import atomic_write_text
    from .common import check_device, check_out

    check_device(args.device)
    check_out(args.out)
    data = Path(args.data)
    ann = Path(args.ann) if args.ann else data / DEFAULTS["data"]["val_ann"]
    images = Path(args.images) if args.images else data / DEFAULTS["data"]["val_images"]
    if not ann.is_file():
        raise LogocapError(f"annotation file not found: {ann}")
    if not images.is_dir():
        raise LogocapError(f"image folder not found: {images}")
    if args.batch_size < 1:
        raise LogocapError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, meta, info = build_model_from_checkpoint(load_checkpoint(args.weights), args.model, args.device)
    size = args.size or info.get("input_size") or 512
    test_cfg = validate_test_cfg(checkpoint_test_config(info))
    ds = CocoPoseDataset(ann, images, meta, mode="val", input_size=size, max_images=args.max_images)
    res = upper_bound_eval(model, ds, meta, test_cfg, size, args.batch_size, args.device, args.out)
    names = metric_names(meta)
    print(f"{'metric':8s} {'baseline':>9s} {'upper bound':>12s}")
    for n in names:
        print(f"{n:8s} {res['baseline'][n]:9.3f} {res['upper_bound'][n]:12.3f}")
    if args.out:
        import json
        atomic_write_text(Path(args.out) / "upper_bound.json", json.dumps(res, indent=1))
    return 0
