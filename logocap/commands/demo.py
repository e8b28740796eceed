"""``logocap demo``: the main job on the embedded default (the synthetic benchmark).

1. generate the synthetic benchmark (default preset) with a preview sheet of its ground truth;
2. check the coordinate path: ground truth -> test resize -> inverse -> json -> COCOeval = AP 1;
3. train the small center-offset baseline, then fine-tune LOGO-CAP from it (same backbone);
4. evaluate both with the official COCOeval and print them side by side;
5. write annotated predictions for a few validation images into the run folder.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "Main job: synthetic benchmark -> train baseline and LOGO-CAP -> evaluate -> pictures."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/synthetic", help="synthetic benchmark folder (made if missing)")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--train-images", type=int, default=800, help="synthetic training images")
    p.add_argument("--val-images", type=int, default=100, help="synthetic validation images")
    p.add_argument("--baseline-epochs", type=int, default=6, help="epochs of the center-offset baseline")
    p.add_argument("--logocap-epochs", type=int, default=2,
                   help="epochs of LOGO-CAP fine-tuning from the baseline (the baseline row gets "
                        "the same number of extra epochs, so both have seen the same data)")
    p.add_argument("--pictures", type=int, default=6, help="annotated validation images to write")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")


def _ground_truth_check(data_root: Path) -> float:
    """Ground truth through the whole coordinate path scores AP 1 (the harness is sound)."""
    from ..data.coco import CocoPoseDataset
    from ..evaluation import evaluate_predictions, ground_truth_poses

    ds = CocoPoseDataset(str(data_root / "annotations/person_keypoints_val.json"),
                         str(data_root / "images/val"), mode="val", input_size=256)
    return float(evaluate_predictions(ground_truth_poses(ds), ds.coco, meta=ds.meta, verbose=False)["AP"])


def run(args) -> int:
    import torch

    from ..engine.recipes import ensure_synthetic, evaluate_run, synthetic_config, train_run

    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.time()
    out, data = Path(args.out), Path(args.data)
    ensure_synthetic(data, "default", args.train_images, args.val_images, 256, seed=0, preview=True)
    gt_ap = _ground_truth_check(data)
    print(f"ground truth through the coordinate path: AP {gt_ap:.3f} (must be 1.000)")

    total_baseline = args.baseline_epochs + args.logocap_epochs
    base = synthetic_config("center_offset_hrnet_tiny", data, out / "baseline",
                            [f"train.epochs={total_baseline}", f"data.max_images={args.train_images}"])
    base["train"]["eval_every"] = 0
    # the stage LOGO-CAP starts from: the baseline after `baseline_epochs`
    stage1 = synthetic_config("center_offset_hrnet_tiny", data, out / "baseline_stage1",
                              [f"train.epochs={args.baseline_epochs}"])
    stage1["train"]["eval_every"] = 0
    print(f"\n== training the center-offset baseline ({args.baseline_epochs} epochs) ==")
    s1 = train_run(stage1)
    print(f"\n== fine-tuning LOGO-CAP from it ({args.logocap_epochs} epochs) ==")
    lc = synthetic_config("logocap_hrnet_tiny", data, out / "logocap",
                          [f"train.epochs={args.logocap_epochs}",
                           f"model.pretrained={out / 'baseline_stage1' / 'last.pth'}"])
    lc["train"]["eval_every"] = 0
    s_lc = train_run(lc)
    print(f"\n== baseline, the same {args.logocap_epochs} extra epochs ==")
    base["model"]["pretrained"] = str(out / "baseline_stage1" / "last.pth")
    base["train"]["epochs"] = args.logocap_epochs
    s_b = train_run(base)

    print("\n== evaluating on the synthetic val split (official COCOeval) ==")
    rows = {
        "center-offset baseline": evaluate_run(out / "baseline" / "last.pth", data,
                                               out_dir=out / "baseline" / "eval"),
        "LOGO-CAP": evaluate_run(out / "logocap" / "last.pth", data, out_dir=out / "logocap" / "eval"),
    }
    names = ["AP", "AP50", "AP75", "APM", "APL", "AR", "ms_per_image"]
    print("\n" + f"{'model':<24}" + "".join(f"{n:>9}" for n in names))
    for k, m in rows.items():
        print(f"{k:<24}" + "".join(f"{m[n]:>9.3f}" if n != "ms_per_image" else f"{m[n]:>9.1f}"
                                   for n in names))

    pics = _pictures(out / "logocap" / "last.pth", data, out / "pictures", args.pictures)
    summary = {"ground_truth_AP": gt_ap, "results": rows,
               "train_minutes": {"baseline_stage1": s1["train_minutes"], "logocap": s_lc["train_minutes"],
                                 "baseline_extra": s_b["train_minutes"]},
               "pictures": [str(p) for p in pics], "minutes": (time.time() - t_start) / 60}
    from ..utils import atomic_write_text
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print(f"\npictures: {out / 'pictures'}; data preview: {data / 'preview_val.png'}; "
          f"summary: {out / 'summary.json'} ({summary['minutes']:.1f} min)")
    return 0


def _pictures(weights: Path, data: Path, out: Path, n: int) -> list[Path]:
    """Draw LOGO-CAP predictions on the first ``n`` validation images."""
    from ..data.transforms import load_image
    from ..predict import Predictor
    from ..viz import draw_poses, save_image

    pred = Predictor.from_checkpoint(weights)
    files = sorted((data / "images" / "val").iterdir())[:n]
    written = []
    for f in files:
        img = load_image(f)
        poses = pred.predict(img)
        p = out / f"{f.stem}.logocap.jpg"
        save_image(p, draw_poses(img, poses, pred.meta, threshold=0.05))
        poses.save_json(out / f"{f.stem}.poses.json")
        written.append(p)
    return written
