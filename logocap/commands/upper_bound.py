"""``logocap upper-bound``: the empirical upper bound of center-offset decoding (CVPR Table 8,
supplementary §2 / Alg. 1); the procedure is described and implemented in
:mod:`logocap.engine.upper_bound`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.upper_bound import upper_bound_eval  # noqa: F401  (the library function; kept importable here)
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
                   "default: the checkpoint's, else the model's (512 / 640 for W32 / W48)")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--out", default=None, help="folder for the results and metrics json files")


def run(args) -> int:
    from ..config import validate_test_cfg
    from ..data.coco import CocoPoseDataset
    from ..data.paths import dataset_paths
    from ..engine.checkpoint import build_model_from_checkpoint, checkpoint_test_config, load_checkpoint
    from ..evaluation import metric_names
    from ..models.registry import model_entry
    from ..utils import atomic_write_text
    from .common import check_device, check_out

    check_device(args.device)
    check_out(args.out)
    if args.batch_size < 1:
        raise LogocapError(f"--batch-size must be >= 1, got {args.batch_size}")
    ann, images = dataset_paths(args.data, "val", args.ann, args.images)
    model, meta, info = build_model_from_checkpoint(load_checkpoint(args.weights), args.model, args.device)
    size = args.size or info.get("input_size") or model_entry(info["model_name"]).input_size
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
