"""``logocap train``: train a model from a YAML recipe plus dotted overrides.

One process:            logocap train --config configs/X.yaml --data data/synthetic --out runs/x
Several (DDP, torchrun): torchrun --nproc_per_node 2 -m logocap.cli train --config ...
"""
from __future__ import annotations

import argparse

HELP = "Train a model (one process, or several under torchrun)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML recipe (configs/*.yaml); default: built-in defaults")
    p.add_argument("--data", default=None,
                   help="dataset folder with annotations/ and images/ (sets data.root)")
    p.add_argument("--out", default=None, help="run folder for checkpoints and logs (sets train.out)")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (sets train.epochs)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>/last.pth (same weights as an uninterrupted run)")
    p.add_argument("--init-weights", metavar="FILE", default=None,
                   help="warm start: begin a new run from the weights of FILE only (a best.pth, a "
                        "released file, a plain state_dict); optimizer, schedule and epochs start "
                        "fresh (sets model.pretrained)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to train; auto = CUDA when available")
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="synchronise BatchNorm statistics across processes (only with several); "
                        "default: train.sync_bn of the config (true)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, e.g. train.batch_size=4 model.name=logocap_hrnet_tiny")


def run(args) -> int:
    from pathlib import Path

    from ..config import load_config, validate_test_cfg
    from ..engine.train import train
    from ..utils import LogocapError
    from .common import check_device, check_out

    check_device(args.device)
    cfg = load_config(args.config, args.overrides)
    # explicit flags win over the file and the overrides; set directly (paths are not YAML)
    if args.data is not None:
        cfg["data"]["root"] = args.data
    if args.out is not None:
        cfg["train"]["out"] = args.out
    if args.epochs is not None:
        if args.epochs < 1:
            raise LogocapError(f"--epochs must be >= 1, got {args.epochs}")
        cfg["train"]["epochs"] = args.epochs
    if args.resume:
        cfg["train"]["resume"] = True
    if args.init_weights is not None:
        if args.resume:
            raise LogocapError("give --resume (continue a run) or --init-weights (start a new one "
                               "from some weights), not both")
        if not Path(args.init_weights).is_file():
            raise LogocapError(f"--init-weights: file not found: {args.init_weights}")
        cfg["model"]["pretrained"] = args.init_weights
    check_out(cfg["train"]["out"], flag="--out (train.out)")
    validate_test_cfg(cfg["test"])
    summary = train(cfg, device=None if args.device == "auto" else args.device, sync_bn=args.sync_bn)
    if summary.get("is_main", True):
        best = summary["best_ap"]
        print(f"done: {summary['global_step']} iterations, last checkpoint {summary['last_checkpoint']}"
              + (f", best val AP {best:.4f}" if best is not None else ""))
    return 0
