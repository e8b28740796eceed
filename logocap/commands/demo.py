"""``logocap demo``: the main job on the embedded default (the synthetic benchmark).

1. generate the synthetic benchmark (default preset, seed 0) with a preview of its ground truth;
2. check the coordinate path: ground truth -> test resize -> inverse -> json -> COCOeval = AP 1;
3. train a small center-offset baseline for a few minutes (learning works on this machine);
4. evaluate it, and the committed benchmark checkpoints (center-offset baseline and LOGO-CAP,
   both made by ``python benchmarks/synthetic.py``; see checkpoints/README.md) on the val split
   with the official COCOeval, side by side;
5. write LOGO-CAP predictions drawn on validation images into the run folder.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "Main job: synthetic benchmark -> train a baseline -> evaluate it and LOGO-CAP -> pictures."

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints" / "synthetic"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/synthetic", help="synthetic benchmark folder (made if missing)")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--train-images", type=int, default=2000, help="synthetic training images")
    p.add_argument("--val-images", type=int, default=200, help="synthetic validation images")
    p.add_argument("--epochs", type=int, default=4, help="epochs of the quick center-offset baseline")
    p.add_argument("--checkpoints", default=str(CHECKPOINTS),
                   help="folder with the committed benchmark checkpoints (*.pth)")
    p.add_argument("--pictures", type=int, default=8, help="annotated validation images to write")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")


def _ground_truth_check(data_root: Path) -> float:
    """Ground truth through the whole coordinate path scores AP 1 (the harness is sound)."""
    from ..data.coco import CocoPoseDataset
    from ..data.paths import split_files
    from ..evaluation import evaluate_predictions, ground_truth_poses

    ds = CocoPoseDataset(*map(str, split_files(data_root, "val")), mode="val", input_size=256)
    return float(evaluate_predictions(ground_truth_poses(ds), ds.coco, meta=ds.meta, verbose=False)["AP"])


def run(args) -> int:
    import torch

    from ..engine.recipes import ensure_synthetic, evaluate_run, synthetic_config, train_run
    from ..utils import LogocapError, atomic_write_text

    if args.threads:
        torch.set_num_threads(args.threads)
    from .common import check_out

    check_out(args.out)
    if args.epochs < 1:
        raise LogocapError(f"--epochs must be >= 1, got {args.epochs}")
    t_start = time.time()
    out, data = Path(args.out), Path(args.data)
    ensure_synthetic(data, "default", args.train_images, args.val_images, 256, seed=0, preview=True)
    gt_ap = _ground_truth_check(data)
    print(f"ground truth through the coordinate path: AP {gt_ap:.3f} (must be 1.000)")
    if abs(gt_ap - 1.0) > 1e-6:
        raise RuntimeError(f"ground truth scores AP {gt_ap}, not 1: the evaluation harness is broken")

    print(f"\n== training a center-offset baseline for {args.epochs} epochs (HRNet-tiny, 256 px) ==")
    cfg = synthetic_config("center_offset_hrnet_tiny", data, out / "quick_baseline",
                           [f"train.epochs={args.epochs}", "train.eval_every=0"])
    quick = train_run(cfg)

    print("\n== evaluating on the synthetic val split (official COCOeval, flip test) ==")
    rows = {f"quick baseline ({args.epochs} ep, {quick['train_minutes']:.1f} min)":
            evaluate_run(out / "quick_baseline" / "last.pth", data, out_dir=out / "quick_baseline" / "eval")}
    ckdir = Path(args.checkpoints)
    committed = {"benchmark baseline": ckdir / "center_offset_hrnet_small_256.pth",
                 "benchmark LOGO-CAP": ckdir / "logocap_hrnet_small_256.pth"}
    for label, path in committed.items():
        if path.is_file():
            rows[label] = evaluate_run(path, data, out_dir=out / path.stem / "eval")
        else:
            print(f"(no {path}; run benchmarks/synthetic.py to make it)")
    names = ["AP", "AP50", "AP75", "APM", "APL", "AR", "ms_per_image"]
    print("\n" + f"{'model':<34}" + "".join(f"{n:>9}" for n in names[:-1]) + f"{'ms/img':>9}")
    for k, m in rows.items():
        print(f"{k:<34}" + "".join(f"{m[n]:>9.3f}" for n in names[:-1]) + f"{m['ms_per_image']:>9.1f}")

    weights = committed["benchmark LOGO-CAP"]
    if not weights.is_file():
        weights = out / "quick_baseline" / "last.pth"
    pics = _pictures(weights, data, out / "pictures", args.pictures)
    summary = {"ground_truth_AP": gt_ap, "results": rows, "quick_baseline_train_minutes": quick["train_minutes"],
               "pictures_from": str(weights), "pictures": [str(p) for p in pics],
               "minutes": (time.time() - t_start) / 60}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print(f"\npictures ({weights.stem}): {out / 'pictures'}; ground-truth preview: "
          f"{data / 'preview_val.png'}; summary: {out / 'summary.json'} ({summary['minutes']:.1f} min)")
    return 0


def _pictures(weights: Path, data: Path, out: Path, n: int) -> list[Path]:
    """Draw predictions on the first ``n`` validation images, side by side with the ground truth."""
    import numpy as np

    from ..data.coco import CocoPoseDataset
    from ..data.paths import split_files
    from ..data.transforms import load_image
    from ..predict import Predictor
    from ..viz import draw_poses, save_image

    pred = Predictor.from_checkpoint(weights)
    ds = CocoPoseDataset(*map(str, split_files(data, "val")), meta=pred.meta, mode="val",
                         input_size=256)
    written = []
    for image_id in ds.image_ids[:n]:
        img = load_image(ds.image_path(image_id))
        poses = pred.predict(img)
        poses.image_id = image_id
        keep = poses[poses.scores >= 0.1 * max(1e-12, float(poses.scores.max(initial=0)))]
        gt = np.array([a["keypoints"] for a in ds.gt_annotations(image_id) if a.get("num_keypoints", 0)],
                      np.float32).reshape(-1, ds.meta.num_keypoints, 3)
        pic = np.concatenate([draw_poses(img, gt, ds.meta), draw_poses(img, keep, ds.meta, threshold=0.0)], 1)
        p = out / f"{image_id:06d}.png"
        save_image(p, pic)
        poses.save_json(out / f"{image_id:06d}.poses.json")
        written.append(p)
    return written
